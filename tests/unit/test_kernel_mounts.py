"""The kernel's mount table as a set of mount points (zfs/kernel_mounts.py)."""

from __future__ import annotations

from cygnet.zfs.kernel_mounts import mount_points

TABLE = """\
/dev/vda1 / ext4 rw,relatime 0 0
kstat /zfs-kstat fuse rw,nosuid,nodev 0 0
tank/cygnet/db/dbx/bry /var/lib/cygnet/mnt/my\\040branch fuse rw 0 0
tank/t /var/lib/tab\\011and\\134slash fuse rw 0 0
"""


def test_mount_points_are_read_with_their_escapes_undone() -> None:
    assert mount_points(TABLE) == {"/", "/zfs-kstat", "/var/lib/cygnet/mnt/my branch",
                                   "/var/lib/tab\tand\\slash"}


def test_this_process_sees_its_root_mounted() -> None:
    assert "/" in mount_points()

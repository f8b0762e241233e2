"""The kernel's mount table: which mount points have a filesystem on them now.

A recursive `zfs get` of the `mounted` property costs zfs-fuse a pass over the
mount table per dataset (2,000 datasets with 151 mounted: 5.9 s against 2.5 s
without it), and zfs-fuse's answer can disagree with the kernel's (past its
1,000 filesystems it calls a dropped mount mounted). One read of the kernel's
table answers for every dataset.
"""

from __future__ import annotations

import re
from pathlib import Path

MOUNTS = Path("/proc/self/mounts")
_ESCAPE = re.compile(r"\\([0-7]{3})")  # space, tab, newline and backslash in paths


def mount_points(table: str | None = None) -> set[str]:
    """Every mount point in `table` (default: this process's /proc/self/mounts)."""
    text = MOUNTS.read_text() if table is None else table
    points = set()
    for line in text.splitlines():
        fields = line.split(" ")
        if len(fields) >= 2:
            points.add(_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), fields[1]))
    return points

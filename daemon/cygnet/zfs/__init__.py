"""The only code in Cygnet that runs `zfs` or `zpool`.

One coroutine per verb (see `verbs`), one command runner (`runner`) that bounds,
times and logs every call, and one place (`errors`) that turns stderr into
typed exceptions. The ZFS dialect (OpenZFS or zfs-fuse) is probed once
(`dialect`) and hidden from the rest of the code.
"""

from cygnet.zfs.errors import (
    DatasetBusy,
    DatasetExists,
    DatasetNotFound,
    HasDependents,
    OutOfSpace,
    ZfsError,
    ZfsTimeout,
)
from cygnet.zfs.runner import CommandResult, CommandRunner
from cygnet.zfs.verbs import Dataset, Zfs

__all__ = [
    "CommandResult",
    "CommandRunner",
    "Dataset",
    "DatasetBusy",
    "DatasetExists",
    "DatasetNotFound",
    "HasDependents",
    "OutOfSpace",
    "Zfs",
    "ZfsError",
    "ZfsTimeout",
]

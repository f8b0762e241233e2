"""One coroutine per zfs/zpool verb. Parsing uses `-H -p` output only."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

from cygnet.zfs.dialect import Dialect, probe
from cygnet.zfs.errors import DatasetBusy, OutOfSpace, ZfsTimeout, error_from
from cygnet.zfs.parsing import get_rows
from cygnet.zfs.runner import CommandRunner
from cygnet.zfs.settle import run_settled, settled

log = logging.getLogger("cygnet.zfs")

# Called with a dataset's name when a property write on it failed for want of
# space; returns True once it made room (the write is then tried once more).
# On a full pool `zfs set` fails while `zfs destroy` works, so the agent
# answers by destroying a small reserve dataset it keeps for this.
RoomMaker = Callable[[str], Awaitable[bool]]

BUSY_RETRY_DELAYS = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)

# Native properties every listing reads; user properties are added per call.
LISTED_NATIVE = ("type", "origin", "used", "referenced", "creation", "mountpoint", "available",
                 "quota")


@dataclass
class Dataset:
    """A filesystem or snapshot with the properties a listing asked for."""

    name: str
    native: dict[str, str] = field(default_factory=dict)
    user: dict[str, str] = field(default_factory=dict)  # only locally set values
    # What readers derive from this listing, kept with it: a listing is not changed
    # once parsed (a change is read again as a new Dataset), so neither is this.
    derived: dict[str, object] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_snapshot(self) -> bool:
        return "@" in self.name

    @property
    def origin(self) -> str | None:
        value = self.native.get("origin", "-")
        return None if value in ("", "-") else value

    def number(self, prop: str) -> int:
        value = self.native.get(prop, "-")
        return int(value) if value.isdigit() else 0


def _props_args(props: Mapping[str, str]) -> list[str]:
    args: list[str] = []
    for key, value in props.items():
        args += ["-o", f"{key}={value}"]
    return args


class Zfs:
    """The verbs. Create one per process; the dialect is probed on first use."""

    def __init__(self, runner: CommandRunner | None = None,
                 make_room: RoomMaker | None = None) -> None:
        self.runner = runner or CommandRunner()
        self.make_room = make_room
        self._dialect: Dialect | None = None
        self._probe_lock = asyncio.Lock()

    async def dialect(self) -> Dialect:
        async with self._probe_lock:
            if self._dialect is None:
                self._dialect = await probe(self.runner)
            return self._dialect

    async def create(self, name: str, props: Mapping[str, str] | None = None) -> None:
        await run_settled(self.runner, ["zfs", "create", *_props_args(props or {}), name], name,
                          exists_after=True)

    async def snapshot(self, name: str, props: Mapping[str, str] | None = None) -> None:
        await run_settled(self.runner, ["zfs", "snapshot", *_props_args(props or {}), name],
                          name, exists_after=True)

    async def clone(self, snapshot: str, name: str, props: Mapping[str, str] | None = None) -> None:
        await run_settled(self.runner, ["zfs", "clone", *_props_args(props or {}), snapshot,
                                        name], name, exists_after=True)

    async def destroy(self, name: str, *, recursive: bool = False) -> None:
        """`recursive` also destroys the dataset's snapshots, never dependent clones.

        Unmounting right after the last process left can report "busy" for a
        moment (zfs-fuse especially), so busy is retried briefly.
        """
        argv = ["zfs", "destroy", *(["-r"] if recursive else []), name]
        try:
            await self._run_retrying_busy(argv)
        except ZfsTimeout as exc:  # a killed zfs may have destroyed it all the same
            await settled(self.runner, exc, name, exists_after=False)

    async def _run_retrying_busy(self, argv: list[str]) -> None:
        for delay in BUSY_RETRY_DELAYS:
            try:
                await self.runner.run(argv)
                return
            except DatasetBusy:
                await asyncio.sleep(delay)
        await self.runner.run(argv)

    async def promote(self, name: str) -> None:
        await self.runner.run(["zfs", "promote", name])

    async def rollback(self, snapshot: str, *, destroy_newer: bool = False) -> None:
        """`destroy_newer` drops snapshots taken after `snapshot` (never clones of them)."""
        await self.runner.run(["zfs", "rollback", *(["-r"] if destroy_newer else []), snapshot])

    async def rename(self, old: str, new: str) -> None:
        """Renames a filesystem; it ends up mounted at the new name's mountpoint.

        zfs-fuse reports any mounted filesystem as busy on rename, so on that
        dialect the filesystem is unmounted first and mounted again after.
        """
        if (await self.dialect()).name == "zfs-fuse" and await self._mounted(old):
            await self._run_retrying_busy(["zfs", "umount", old])
            await self.runner.run(["zfs", "rename", old, new])
            await self.runner.run(["zfs", "mount", new])
            return
        await self._run_retrying_busy(["zfs", "rename", old, new])

    async def _mounted(self, name: str) -> bool:
        result = await self.runner.run(["zfs", "get", "-H", "-o", "value", "mounted", name])
        return result.stdout.strip() == "yes"

    async def set_props(self, name: str, props: Mapping[str, str]) -> None:
        # One call per property keeps us compatible with zfs-fuse, whose
        # `zfs set` takes a single property.
        for key, value in props.items():
            await self._write(["zfs", "set", f"{key}={value}", name], name)

    async def inherit(self, name: str, prop: str) -> None:
        await self._write(["zfs", "inherit", prop, name], name)

    async def _write(self, argv: list[str], name: str) -> None:
        """A property write; on a full pool, tried once more after `make_room`."""
        try:
            await self.runner.run(argv)
        except OutOfSpace:
            if self.make_room is None or not await self.make_room(name):
                raise
            log.warning("pool full: made room for %s", " ".join(argv))
            await self.runner.run(argv)

    async def mount(self, name: str) -> None:
        await self._run_retrying_busy(["zfs", "mount", name])

    async def unmount(self, name: str) -> None:
        await self._run_retrying_busy(["zfs", "umount", name])

    async def unmounted(self, root: str) -> list[str]:
        """Filesystems at and below `root` that should be mounted but are not,
        parents first (a child's mountpoint lies inside its parent's)."""
        listing = await self.get_props(root, ["mounted", "canmount", "mountpoint"],
                                       recursive=True)
        wanted = [ds.name for ds in listing.values()
                  if not ds.is_snapshot and ds.native.get("mounted") == "no"
                  and ds.native.get("canmount") == "on"
                  and ds.native.get("mountpoint", "none") not in ("none", "legacy", "-")]
        return sorted(wanted, key=lambda n: (n.count("/"), n))

    async def available(self, name: str) -> int:
        """Bytes `name` may still write: the pool's free space, within any quota."""
        props = await self.get_props(name, ["available"])
        ds = props.get(name)
        return ds.number("available") if ds is not None else 0

    async def get_props(
        self, name: str, props: Iterable[str], *, recursive: bool = False,
        depth: int | None = None,
    ) -> dict[str, Dataset]:
        """Properties of `name` and, if `recursive`, of everything below it (snapshots
        too), down to `depth` levels if given (a snapshot is one level below its dataset)."""
        wanted = list(props)
        scope = ["-r"] if recursive else []
        if recursive and depth is not None:
            scope = ["-d", str(depth)]
        argv = ["zfs", "get", "-H", "-p", *scope,
                "-o", "name,property,value,source", ",".join(wanted), name]
        result = await self.runner.run(argv)
        return parse_get(result.stdout)

    async def get_many(self, names: Iterable[str], props: Iterable[str]) -> dict[str, Dataset]:
        """Properties of several datasets (not below them) in one `zfs get`."""
        wanted, targets = list(props), list(names)
        if not targets:
            return {}
        result = await self.runner.run(["zfs", "get", "-H", "-p", "-o",
                                         "name,property,value,source", ",".join(wanted),
                                         *targets])
        return parse_get(result.stdout)

    async def get_existing(self, names: Iterable[str], props: Iterable[str]
                           ) -> dict[str, Dataset]:
        """get_many, leaving out the names that do not exist (in one `zfs get`: a
        listing with a depth walks every dataset below, on zfs-fuse)."""
        wanted, targets = list(props), list(names)
        if not targets:
            return {}
        argv = ["zfs", "get", "-H", "-p", "-o", "name,property,value,source", ",".join(wanted),
                *targets]
        result = await self.runner.run(argv, check=False)
        if result.returncode != 0 and any(
                line.strip() and "does not exist" not in line
                for line in result.stderr.splitlines()):
            raise error_from(argv, result.returncode, result.stderr)
        return parse_get(result.stdout)

    async def list(self, root: str, user_props: Iterable[str] = (), depth: int | None = None
                   ) -> dict[str, Dataset]:
        """Every dataset and snapshot below `root` (inclusive, down to `depth` levels),
        with native and user properties."""
        return await self.get_props(root, [*LISTED_NATIVE, *user_props], recursive=True,
                                    depth=depth)

    async def exists(self, name: str) -> bool:
        result = await self.runner.run(["zfs", "get", "-H", "-o", "value", "type", name],
                                       check=False)
        return result.returncode == 0


def parse_get(stdout: str) -> dict[str, Dataset]:
    """Parses `zfs get -H -p -o name,property,value,source` into datasets.

    A user property counts only where it is set locally: ZFS shows a dataset's
    user properties on its snapshots and children as inherited, and those are
    not theirs.
    """
    datasets: dict[str, Dataset] = {}
    for name, prop, value, source in get_rows(stdout):  # raises on a malformed line
        ds = datasets.setdefault(name, Dataset(name))
        if ":" in prop:
            if source == "local" or source.startswith("received"):
                ds.user[prop] = value
        else:
            ds.native[prop] = value
    return datasets

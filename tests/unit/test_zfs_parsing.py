"""Parsing of `zfs get -H -p` output and the stderr -> exception mapping."""

from __future__ import annotations

import pytest

from cygnet.zfs import errors
from cygnet.zfs.parsing import ZfsOutputError
from cygnet.zfs.verbs import parse_get

SAMPLE = "\n".join([
    "p/a\ttype\tfilesystem\t-",
    "p/a\torigin\tp/t@golden\t-",
    "p/a\tused\t114688\t-",
    "p/a\tcygnet:id\tbr1\tlocal",
    "p/a@s\ttype\tsnapshot\t-",
    "p/a@s\tcygnet:id\tbr1\tinherited from p/a",
    "p/a@s\tcygnet:name\tsnap one\tlocal",
    "p/a@s\tcygnet:note\ttab\tinside\tlocal",
])


def test_parse_get_keeps_only_local_user_properties() -> None:
    ds = parse_get(SAMPLE)
    assert ds["p/a"].origin == "p/t@golden" and ds["p/a"].number("used") == 114688
    assert ds["p/a"].user == {"cygnet:id": "br1"}
    assert ds["p/a@s"].is_snapshot and ds["p/a@s"].origin is None
    assert ds["p/a@s"].user == {"cygnet:name": "snap one", "cygnet:note": "tab\tinside"}


@pytest.mark.parametrize("line", [
    "garbage line", "", "p/a\ttype\tfilesystem", "\ttype\tfilesystem\t-",
    "p/a\t\tfilesystem\t-", "p/a\ttype\tfilesystem\t",
])
def test_parse_get_rejects_a_malformed_line(line: str) -> None:
    with pytest.raises(ZfsOutputError, match="malformed line 2") as err:
        parse_get(SAMPLE.split("\n")[0] + "\n" + line + "\n" + SAMPLE)
    assert isinstance(err.value, errors.ZfsError)


@pytest.mark.parametrize(("stderr", "cls"), [
    ("cannot open 'p/x': dataset does not exist", errors.DatasetNotFound),
    ("cannot create 'p/a': dataset already exists", errors.DatasetExists),
    ("cannot destroy 'p/a@s': snapshot has dependent clones", errors.HasDependents),
    ("cannot destroy 'p/a': filesystem has children", errors.HasDependents),
    ("cannot rollback to 'p/a@s': more recent snapshots exist", errors.HasDependents),
    ("cannot unmount '/m': umount failed: dataset is busy", errors.DatasetBusy),
    ("cannot create 'p/b': out of space", errors.OutOfSpace),
    ("something new", errors.ZfsError),
])
def test_stderr_maps_to_typed_errors(stderr: str, cls: type[errors.ZfsError]) -> None:
    err = errors.error_from(["zfs", "x"], 1, stderr + "\n")
    assert type(err) is cls
    assert str(err) == stderr and err.argv == ["zfs", "x"]

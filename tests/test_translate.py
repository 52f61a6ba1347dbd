"""capctl.errors.translate: one OSError -> CapctlError translation for each layer."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from capctl.cgroup.v1 import V1Devices
from capctl.devfs import safefs
from capctl.errors import (
    AccessDenied,
    CapctlError,
    CgroupAccessDenied,
    CgroupError,
    DriverAccessDenied,
    DriverError,
    HookError,
    NodeAccessDenied,
    NodeError,
    TopologyAccessDenied,
    TopologyError,
    translate,
)

LAYERS = [
    (NodeError, NodeAccessDenied),
    (DriverError, DriverAccessDenied),
    (CgroupError, CgroupAccessDenied),
    (TopologyError, TopologyAccessDenied),
]
IDS = [kind.__name__ for kind, _ in LAYERS]


def _raise(err: BaseException) -> None:
    raise err


@pytest.mark.parametrize(("kind", "denied"), LAYERS, ids=IDS)
@pytest.mark.parametrize("code", [errno.EACCES, errno.EPERM], ids=["EACCES", "EPERM"])
def test_access_denied_is_a_distinct_named_failure(
    kind: type[CapctlError], denied: type[CapctlError], code: int
) -> None:
    cause = PermissionError(code, os.strerror(code), "/x/y")
    with pytest.raises(kind) as info, translate(kind, "/x/y", "cannot open"):
        _raise(cause)
    assert type(info.value) is denied and isinstance(info.value, AccessDenied)
    assert str(info.value) == f"/x/y: cannot open: {os.strerror(code)}"
    assert info.value.errno == code and info.value.path == "/x/y"
    assert info.value.__cause__ is cause  # raise ... from err


@pytest.mark.parametrize(("kind", "denied"), LAYERS, ids=IDS)
@pytest.mark.parametrize(
    "code", [errno.ENOENT, errno.EIO, errno.ENOSPC, errno.EROFS], ids=["ENOENT", "EIO", "ENOSPC", "EROFS"]
)
def test_other_errors_are_the_layers_error(
    kind: type[CapctlError], denied: type[CapctlError], code: int
) -> None:
    cause = OSError(code, os.strerror(code))
    with pytest.raises(kind) as info, translate(kind, Path("/a/b"), "reading"):
        _raise(cause)
    assert type(info.value) is kind and not isinstance(info.value, AccessDenied)
    assert str(info.value) == f"/a/b: reading: {os.strerror(code)}"
    assert info.value.errno == code and info.value.path == "/a/b"
    assert info.value.__cause__ is cause and info.value.__suppress_context__


def test_without_doing_names_path_and_reason() -> None:
    enoent = FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))
    with pytest.raises(CgroupError, match=r"^/cg: No such file or directory$"), translate(
        CgroupError, "/cg"
    ):
        _raise(enoent)


@pytest.mark.parametrize(
    "err", [CgroupError("/cg: not a cgroup"), ValueError("x"), KeyboardInterrupt()],
    ids=["capctl-error", "value-error", "keyboard-interrupt"],
)
def test_other_exceptions_pass_through_unchanged(err: BaseException) -> None:
    with pytest.raises(type(err)) as info, translate(NodeError, "/n"):
        _raise(err)
    assert info.value is err


def test_expected_outcomes_are_handled_inside_the_block() -> None:
    """ENOENT meaning "absent" is logic, caught where it happens: translate never sees it,
    and the block goes on to its end."""
    reached = []
    with translate(NodeError, "/n", "cannot stat"):
        try:
            _raise(FileNotFoundError(errno.ENOENT, "gone"))
        except FileNotFoundError:
            reached.append("handled")
        reached.append("after")
    assert reached == ["handled", "after"]
    # The same error escaping the block is translated: the handling above is what spared it.
    with pytest.raises(NodeError, match="/n: cannot stat: gone"), translate(
            NodeError, "/n", "cannot stat"):
        _raise(FileNotFoundError(errno.ENOENT, "gone"))


def test_a_kind_without_an_access_denied_subclass_is_a_bug() -> None:
    with pytest.raises(TypeError, match="HookError"), translate(HookError, "/h"):
        _raise(OSError(errno.EIO, "I/O error"))


def test_an_instance_guards_many_blocks() -> None:
    guard = translate(DriverError, "/d", "cannot read")
    for code in (errno.EACCES, errno.EIO):
        with pytest.raises(DriverError) as info, guard:
            _raise(OSError(code, os.strerror(code)))
        assert info.value.errno == code


# --- at a layer's edge --------------------------------------------------------------------------


def test_safefs_open_dir_missing_is_a_node_error(tmp_path: Path) -> None:
    # Was a raw FileNotFoundError (re-raised from its own handler, past the translation).
    root = safefs.open_root(str(tmp_path))
    try:
        with pytest.raises(NodeError, match="/missing: cannot open directory: No such file"):
            safefs.open_dir(root, "missing", display=str(tmp_path))
    finally:
        os.close(root)


@pytest.mark.skipif(os.geteuid() == 0, reason="root is not refused by a directory's mode")
def test_safefs_open_root_denied_names_the_root(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    (locked / "inner").mkdir(parents=True)
    locked.chmod(0)
    try:
        with pytest.raises(NodeAccessDenied, match="inner: cannot open root directory"):
            safefs.open_root(str(locked / "inner"))
    finally:
        locked.chmod(0o755)


def test_v1_cgroup_file_error_names_file_and_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cg = tmp_path / "cg"
    cg.mkdir()
    (cg / "devices.list").write_text("a *:* rwm\n")
    monkeypatch.setattr("capctl.cgroup.v1.check_not_root", lambda path: None)
    dev = V1Devices(str(cg))
    with pytest.raises(CgroupError) as info:
        dev._file("devices.allow", "writing 'c 1:3 r'", b"c 1:3 r")  # no such file
    assert str(info.value) == (
        f"{cg}/devices.allow: writing 'c 1:3 r': No such file or directory"
    )
    assert isinstance(info.value.__cause__, FileNotFoundError)

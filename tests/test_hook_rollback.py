"""The hook's rollback: every step is tried, errors are gathered, nothing pre-existing goes."""

from __future__ import annotations

import os
from pathlib import Path

from capctl.deliver.hook import Made, rollback
from capctl.errors import CgroupError


class FailingUndo:
    def __init__(self) -> None:
        self.called = False

    def rollback(self) -> None:
        self.called = True
        raise CgroupError("devices.deny: cannot write")


def test_rollback_keeps_going_and_reports_every_error(tmp_path: Path) -> None:
    for name in ("a", "b", "kept"):
        (tmp_path / name).write_text("")
    (tmp_path / "stuck").mkdir()
    (tmp_path / "stuck/x").write_text("")  # unlink() of a directory fails: EISDIR
    (tmp_path / "full").mkdir()
    (tmp_path / "full/y").write_text("")  # rmdir() of a non-empty directory fails
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        made = Made()
        made.nodes = [(fd, "a"), (fd, "stuck"), (fd, "gone"), (fd, "b")]
        made.dirs = [(fd, "full")]
        undo = FailingUndo()
        errors = rollback(made, undo)  # type: ignore[arg-type]
    finally:
        os.close(fd)
    assert sorted(os.listdir(tmp_path)) == ["full", "kept", "stuck"]
    assert undo.called
    assert len(errors) == 3, errors
    assert any("stuck" in e for e in errors) and any("full" in e for e in errors)
    assert any(e.startswith("cgroup:") for e in errors)

"""The hook's rollback: every step is tried, errors are gathered, nothing pre-existing goes."""

from __future__ import annotations

import errno
import io
import json
import os
import signal
from pathlib import Path

import pytest

from capctl import cgroup
from capctl.deliver.hook import Log, Made, rollback, run
from capctl.errors import CgroupError
from capctl.host import Host
from capctl.request import container
from capctl.request.resolve import Plan


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


class FakeUndo:
    def __init__(self) -> None:
        self.rolled_back = self.released = False

    def rollback(self) -> None:
        self.rolled_back = True

    def release(self) -> None:
        self.released = True


class FakeBackend:
    path = "/sys/fs/cgroup/devices/fake"

    def __init__(self) -> None:
        self.undo = FakeUndo()

    def allows_all(self) -> bool:
        return False

    def grant(self, rules: object, *, spec_rules: object = None) -> FakeUndo:
        return self.undo


class LogFailingAfterGrant(Log):
    def __call__(self, message: str) -> None:
        if message.startswith("cgroup "):
            raise OSError(errno.ENOSPC, "No space left on device", "/var/log/capctl-hook.log")


def test_a_log_failure_after_the_grant_rolls_the_grant_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = tmp_path / "bundle"
    (bundle / "rootfs").mkdir(parents=True)
    (bundle / "config.json").write_text(json.dumps(
        {"ociVersion": "1.0.2", "root": {"path": "rootfs"}, "process": {"env": []}}))
    state = json.dumps({"ociVersion": "1.0.2", "id": "c1", "status": "creating",
                        "pid": os.getpid(), "bundle": str(bundle)}).encode()
    backend = FakeBackend()
    monkeypatch.setattr(container, "plan_for", lambda *a, **k: Plan())
    monkeypatch.setattr(cgroup, "devices", lambda *a, **k: backend)
    host = Host(root=str(tmp_path), config=str(tmp_path / "none.toml"))
    with pytest.raises(OSError, match="No space"):
        run(host, io.BytesIO(state), LogFailingAfterGrant())
    assert backend.undo.rolled_back and not backend.undo.released


def test_the_log_file_must_be_a_regular_file(tmp_path: Path) -> None:
    fifo = tmp_path / "hook.log"
    os.mkfifo(fifo)
    log = Log(str(fifo))

    def hung(*_: object) -> None:
        raise AssertionError("the hook blocked on a FIFO log file")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(5)
    try:
        with pytest.raises(OSError):  # at once: a FIFO without a reader must not block
            log("a line")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)

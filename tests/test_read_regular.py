"""``safefs.read_regular``: the one way capctl reads a file someone else may have replaced
(the heartbeat, a management spec, what ``uninstall`` looks at): never through a symlink,
never opening anything but a regular file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from capctl.devfs import safefs


def test_a_regular_file_and_its_stat(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"abc")
    found = safefs.read_regular(str(f), 3)
    assert found is not None
    data, st = found
    assert data == b"abc" and (st.st_dev, st.st_ino) == (f.stat().st_dev, f.stat().st_ino)
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        again = safefs.read_regular("f", 3, dir_fd=fd)
        assert again is not None and again[0] == b"abc"
    finally:
        os.close(fd)


def test_nothing_there_is_none(tmp_path: Path) -> None:
    assert safefs.read_regular(str(tmp_path / "absent"), 10) is None


def test_larger_than_the_limit_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"x" * 11)
    with pytest.raises(safefs.UnreadableFile, match="larger than 10 bytes"):
        safefs.read_regular(str(f), 10)


@pytest.mark.parametrize("kind", ["symlink", "fifo", "directory"])
def test_anything_else_is_never_opened(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       kind: str) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"secret")
    path = tmp_path / "there"
    if kind == "symlink":
        path.symlink_to(target)
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
    opened: list[Any] = []
    real_open = os.open

    def spy(p: Any, *args: Any, **kwargs: Any) -> int:
        opened.append(p)
        return real_open(p, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    with pytest.raises(safefs.UnreadableFile, match="not a regular file"):
        safefs.read_regular(str(path), 100)
    assert opened == []


def test_a_file_swapped_in_after_the_look_is_refused(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Replaced between the lstat and the open (here: by a FIFO, which O_NONBLOCK opens
    without blocking): the identity check refuses what was opened."""
    path = tmp_path / "there"
    path.write_bytes(b"old")
    real_open = os.open

    def swap(p: Any, *args: Any, **kwargs: Any) -> int:
        os.unlink(path)
        os.mkfifo(path)
        return real_open(p, *args, **kwargs)

    monkeypatch.setattr(os, "open", swap)
    with pytest.raises(safefs.UnreadableFile, match="replaced while being looked at"):
        safefs.read_regular(str(path), 100)

"""Paths as ``str`` with pathlib's meaning: normalize, join, exists, is_dir, containment.

The cgroup code on the hook's path does without ``pathlib`` (about 9 ms of every container
start; docs/hook-startup.md) but must agree with it exactly where it compares cgroup paths
from ``/proc/<pid>/cgroup`` with mount points from ``mountinfo``: ``os.path.normpath``
would resolve ``..`` and drop a leading ``//``, which ``PurePosixPath`` keeps.  The tests
hold every function here to its pathlib counterpart.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat

TYPE_CHECKING = False
if TYPE_CHECKING:
    from _typeshed import StrPath


def _split(path: str) -> list[str]:
    """``PurePosixPath(path).parts`` as a list: the root first if any, then the components.

    As pathlib parses: empty and ``.`` components go, ``..`` stays, and a leading ``//``
    (exactly two slashes) is a root of its own, which POSIX leaves implementation-defined.
    """
    parts = [c for c in path.split("/") if c and c != "."]
    if path[:1] == "/":
        parts.insert(0, "//" if path[:2] == "//" and path[2:3] != "/" else "/")
    return parts


def _unsplit(parts: list[str]) -> str:
    if parts and parts[0][:1] == "/":
        return parts[0] + "/".join(parts[1:])
    return "/".join(parts) or "."


def _within(parts: list[str], base: list[str]) -> bool:
    """``PurePosixPath.is_relative_to`` on :func:`_split` lists."""
    if not base:  # "." : only relative paths are relative to it
        return not (parts and parts[0][:1] == "/")
    return parts[: len(base)] == base


def normalized(path: StrPath) -> str:
    """*path* as ``str(pathlib.PurePosixPath(path))`` gives it (``/a//b/./`` -> ``/a/b``)."""
    return _unsplit(_split(os.fspath(path)))


def join(path: StrPath, *names: str) -> str:
    """``str(pathlib.PurePosixPath(path, *names))``: a later absolute name starts afresh."""
    return normalized(posixpath.join(path, *names))


# pathlib's exists() and is_dir() answer False for these errors and raise the
# others, EACCES included (Lib/pathlib.py, _IGNORED_ERRNOS); os.path's swallow them all.
_ABSENT = (errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP)


def _mode(path: StrPath, follow: bool = True) -> int | None:
    try:
        return os.stat(path, follow_symlinks=follow).st_mode
    except OSError as err:
        if err.errno in _ABSENT:
            return None
        raise
    except ValueError:  # a NUL byte in the path
        return None


def exists(path: StrPath) -> bool:
    """``Path(path).exists()``: False where nothing is, OSError where it cannot tell."""
    return _mode(path) is not None


def is_dir(path: StrPath) -> bool:
    """``Path(path).is_dir()`` (follows symlinks), with the error policy of :func:`exists`."""
    mode = _mode(path)
    return mode is not None and stat.S_ISDIR(mode)

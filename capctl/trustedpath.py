"""Whether a program may be run as root for others: the one rule for the real OCI runtime.

``capctl-runtime`` runs ``[runtime] runtime`` as root on every call of every container.  If
anyone but root could change what that path runs, they would run as root.  So, like sudo's
and OpenSSH's path checks, the path must be absolute, and every directory met while resolving
it, each symlink's target chain included, must be root-owned and not writable by group or
others; the file itself a root-owned executable regular file, writable by nobody else.  Then
only root can swap any component, and the resolved path can be run without a race.  (Run by
another user, for itself, components that user owns pass too.)

``capctl install`` (before baking the resolved path into the launcher), ``capctl-runtime``
(before every ``exec``, baked or not) and ``capctl doctor`` all call :func:`resolve`.  It
imports nothing beyond ``os`` and ``stat`` (the wrapper's start-up: docs/hook-startup.md) and
costs one ``lstat`` per component.
"""

from __future__ import annotations

import os
import stat

#: As the kernel's MAXSYMLINKS: more links than this in one resolution is a loop.
MAX_LINKS = 40


class UnsafePath(Exception):
    """The path may not be run as root for others; the message says why."""


def _lstat(path: str) -> os.stat_result:
    try:
        return os.lstat(path)
    except OSError as err:
        raise UnsafePath(f"{path}: {err.strerror or err}") from err


def _owner(path: str, st: os.stat_result) -> None:
    if st.st_uid not in (0, os.geteuid()):  # run by a user for itself: theirs is fine too
        raise UnsafePath(f"{path} is owned by uid {st.st_uid}, not root")


def _writable(path: str, st: os.stat_result) -> UnsafePath:
    who = " and ".join(w for w, bit in (("group", 0o020), ("others", 0o002)) if st.st_mode & bit)
    return UnsafePath(f"{path} is writable by {who} (mode {stat.S_IMODE(st.st_mode):04o})")


def _check(path: str, st: os.stat_result, sticky_ok: bool = False) -> bool:
    """Raise unless only root controls ``path``; True if it passed only as a root-owned
    sticky directory (``sticky_ok``), whose next entry must then be root's too."""
    _owner(path, st)
    if not st.st_mode & 0o022:
        return False
    if sticky_ok and stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX and st.st_uid == 0:
        return True
    raise _writable(path, st)


def resolve(path: str, *, sticky_ok: bool = False) -> str:
    """The resolved absolute path of the executable ``path``, if root alone controls it.

    Raises :class:`UnsafePath` naming the first component at fault; ``sticky_ok`` as for
    :func:`resolve_dir` (not for ``[runtime] runtime``, whose rule is the contract's)."""
    current, st = _walk(path, sticky_ok=sticky_ok)
    if not stat.S_ISREG(st.st_mode) or not st.st_mode & 0o111:
        raise UnsafePath(f"{current} is not an executable file")
    return current


def resolve_dir(path: str, *, sticky_ok: bool = False) -> str:
    """The resolved absolute path of the directory ``path``, if root alone controls it (what
    a root process imports from, or runs files of, on every container start): the same rule
    as :func:`resolve`.  Raises :class:`UnsafePath` naming the first component at fault.

    ``sticky_ok``: a root-owned sticky directory on the way (``/tmp``) passes too, if its
    entry on the way is root's: there only root (or the entry's owner) may remove or rename
    an entry (the kernel's rule for sticky directories), so no one else can swap it.  The
    directory itself never passes as writable by others."""
    current, st = _walk(path, sticky_ok=sticky_ok)
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePath(f"{current} is not a directory")
    return current


def _walk(path: str, *, sticky_ok: bool = False) -> tuple[str, os.stat_result]:
    """Resolve ``path`` component by component, checking each; the result and its stat."""
    if not path.startswith("/"):
        raise UnsafePath(f"{path!r} is not an absolute path")
    todo = [p for p in path.split("/") if p]
    current = "/"
    st = _lstat(current)
    sticky = _check(current, st, sticky_ok)  # in a sticky directory: the entry must be root's
    links = 0
    while todo:
        name = todo.pop(0)
        if name == ".":
            continue
        if name == "..":
            current = os.path.dirname(current)
            sticky = _check(current, _lstat(current), sticky_ok)  # checked before: its flag
            continue
        nxt = os.path.join(current, name)
        st = _lstat(nxt)
        if sticky:
            _owner(nxt, st)  # a link too: its owner could replace it there
        if stat.S_ISLNK(st.st_mode):
            # The link lives in ``current``, checked already: only root can swap it.
            links += 1
            if links > MAX_LINKS:
                raise UnsafePath(f"{path}: too many levels of symbolic links")
            try:
                target = os.readlink(nxt)
            except OSError as err:
                raise UnsafePath(f"{nxt}: {err.strerror or err}") from err
            if target.startswith("/"):
                current = "/"
                sticky = _check(current, _lstat(current), sticky_ok)
            todo[:0] = [p for p in target.split("/") if p]
            continue
        sticky = _check(nxt, st, sticky_ok)
        if todo and not stat.S_ISDIR(st.st_mode):
            raise UnsafePath(f"{nxt} is not a directory")
        current = nxt
    if sticky:  # the end itself writable by others: anyone could add to it
        raise _writable(current, st)
    return current, st

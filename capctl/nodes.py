"""Create, verify and repair device nodes in one directory.

The logic is split in two: :func:`diagnose` is pure (what is wrong with what ``lstat`` saw),
:func:`ensure_nodes` / :func:`ensure_links` act under a directory fd via :mod:`capctl.safefs`.
A correct node is never touched (same inode after a re-run); a wrong one is replaced
atomically; a missing one is created.  The same code builds the host's ``/dev/nvidia-caps``
and the nodes inside a container's rootfs.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from enum import Enum

from capctl import safefs
from capctl.errors import NodeError, os_error
from capctl.record import init_fields, record

ACL_XATTR = "system.posix_acl_access"
_CHR = stat.S_IFCHR


@record
class NodeSpec:
    """What a char device node must be (thousands are built per ``sync``: a positional init)."""

    name: str  # basename inside its directory
    major: int
    minor: int
    mode: int  # permission bits only
    uid: int = 0
    gid: int = 0
    #: Encoded POSIX access ACL (``system.posix_acl_access``) or None for "no ACL".
    acl: bytes | None = None

    def __init__(
        self,
        name: str,
        major: int,
        minor: int,
        mode: int,
        uid: int = 0,
        gid: int = 0,
        acl: bytes | None = None,
    ) -> None:
        init_fields(self, name, major, minor, mode, uid, gid, acl)

    @property
    def rdev(self) -> int:
        return os.makedev(self.major, self.minor)


class Action(Enum):
    CREATED = "created"
    REPAIRED = "repaired"
    UNCHANGED = "unchanged"


@record
class Change:
    """What ensure did (or, in a dry run, would do) to one path."""

    path: str
    action: Action
    reason: str = ""

    def __init__(self, path: str, action: Action, reason: str = "") -> None:
        init_fields(self, path, action, reason)


def file_kind(mode: int) -> str:
    """What ``st_mode`` is, for messages (\"a symlink\", \"a char device\", ...)."""
    if stat.S_ISLNK(mode):
        return "a symlink"
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISCHR(mode):
        return "a char device"
    return "not a device node"


def diagnose(st: os.stat_result, spec: NodeSpec, acl: bytes | None = None) -> str | None:
    """Why the node ``lstat`` saw is not ``spec`` (None if it is).  Pure."""
    if not stat.S_ISCHR(st.st_mode):
        return f"is {file_kind(st.st_mode)}"
    major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
    if (major, minor) != (spec.major, spec.minor):
        return f"is {major}:{minor}, want {spec.major}:{spec.minor}"
    if stat.S_IMODE(st.st_mode) != spec.mode:
        return f"mode {stat.S_IMODE(st.st_mode):04o}, want {spec.mode:04o}"
    if (st.st_uid, st.st_gid) != (spec.uid, spec.gid):
        return f"owner {st.st_uid}:{st.st_gid}, want {spec.uid}:{spec.gid}"
    if acl != spec.acl:
        return (
            "ACL differs"
            if spec.acl is not None and acl is not None
            else ("has an ACL, want none" if acl is not None else "ACL missing")
        )
    return None


def _fd_path(dir_fd: int, name: str) -> str:
    # xattr calls take no dir_fd; the fd's magic link pins the directory we hold, and the last
    # component is looked up without following (l*xattr).
    return f"/proc/self/fd/{dir_fd}/{name}"


def read_acl(dir_fd: int, name: str) -> bytes | None:
    """The node's access ACL xattr, None if it has none."""
    try:
        return os.getxattr(_fd_path(dir_fd, name), ACL_XATTR, follow_symlinks=False)
    except OSError as err:
        if err.errno in (errno.ENODATA, errno.EOPNOTSUPP):
            return None
        raise


def _set_acl(dir_fd: int, name: str, acl: bytes, display: str) -> None:
    try:
        os.setxattr(_fd_path(dir_fd, name), ACL_XATTR, acl, follow_symlinks=False)
    except OSError as err:
        raise os_error(display, err, "cannot set ACL") from err


def _write(dir_fd: int, spec: NodeSpec, display: str, *, replace: bool) -> None:
    if spec.acl is None:
        if replace:
            safefs.replace_with_node(
                dir_fd, spec.name, spec.mode, spec.rdev, spec.uid, spec.gid, display=display
            )
        else:
            safefs.make_node(
                dir_fd, spec.name, spec.mode, spec.rdev, spec.uid, spec.gid, display=display
            )
        return
    # With an ACL the node must never be visible without it: build it fully under the
    # temporary name, then rename.
    tmp = safefs.tmp_name(spec.name)
    safefs.replace_with_node(dir_fd, tmp, spec.mode, spec.rdev, spec.uid, spec.gid, display=display)
    try:
        _set_acl(dir_fd, tmp, spec.acl, display)
        os.rename(tmp, spec.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise


def _acl_matters(st: os.stat_result, spec: NodeSpec) -> bool:
    """Whether reading the node's ACL xattr can change the verdict (saves a syscall a node).

    An ACL widens access only through its mask, which ``st_mode`` shows as the group bits.  If
    those bits grant nothing that "other" lacks (0444, 0400: every driver default), named
    entries grant nothing beyond what everyone has, and a stale ACL of capctl's own (mask r--
    on a 0400 node) shows as a mode mismatch anyway.  Nodes capctl gives an ACL are always
    checked.
    """
    if spec.acl is not None:
        return True
    if not stat.S_ISCHR(st.st_mode):
        return False
    group, other = (st.st_mode >> 3) & 0o7, st.st_mode & 0o7
    return bool(group & ~other)


def ensure_nodes(
    dir_fd: int, specs: Iterable[NodeSpec], *, display_dir: str, dry_run: bool = False
) -> list[Change]:
    """Make every node in ``dir_fd`` match its spec.  Returns one :class:`Change` per spec.

    This is the hot loop of ``sync --all`` (4324 nodes): a correct node costs one ``lstat``
    and a few integer compares; :func:`diagnose` only runs on a mismatch.
    """
    present = set(os.listdir(dir_fd))  # one getdents instead of an lstat per missing node
    changes: list[Change] = []
    append = changes.append
    lstat = os.stat
    unchanged, created, repaired = Action.UNCHANGED, Action.CREATED, Action.REPAIRED
    with safefs.exact_umask():
        for spec in specs:
            name = spec.name
            st = None
            if name in present:
                try:
                    st = lstat(name, dir_fd=dir_fd, follow_symlinks=False)
                except FileNotFoundError:
                    st = None
            if st is None:
                if not dry_run:
                    _write(dir_fd, spec, f"{display_dir}/{name}", replace=False)
                append(Change(f"{display_dir}/{name}", created, "missing"))
                continue
            if (
                st.st_mode == _CHR | spec.mode
                and st.st_rdev == os.makedev(spec.major, spec.minor)
                and st.st_uid == spec.uid
                and st.st_gid == spec.gid
                and not _acl_matters(st, spec)
            ):
                append(Change(f"{display_dir}/{name}", unchanged))
                continue
            acl = read_acl(dir_fd, name) if _acl_matters(st, spec) else spec.acl
            reason = diagnose(st, spec, acl)
            if reason is None:
                append(Change(f"{display_dir}/{name}", unchanged))
                continue
            if stat.S_ISDIR(st.st_mode):
                raise NodeError(f"{display_dir}/{name}", "is a directory; refusing to replace it")
            if not dry_run:
                _write(dir_fd, spec, f"{display_dir}/{name}", replace=True)
            append(Change(f"{display_dir}/{name}", repaired, reason))
    return changes


def ensure_links(
    dir_fd: int, links: Sequence[tuple[str, str]], *, display_dir: str, dry_run: bool = False
) -> list[Change]:
    """Make each ``name`` in ``dir_fd`` a symlink to ``target`` (``/dev/char/M:m`` links)."""
    present = set(os.listdir(dir_fd))
    changes: list[Change] = []
    for name, target in links:
        display = f"{display_dir}/{name}"
        if name in present:
            current = safefs.readlink_at(dir_fd, name)  # one syscall when all is well
            if current == target:
                changes.append(Change(display, Action.UNCHANGED))
                continue
            st = safefs.lstat_at(dir_fd, name)
            if st is not None and stat.S_ISDIR(st.st_mode):
                raise NodeError(display, "is a directory; refusing to replace it")
            reason = (
                "points elsewhere"
                if current is not None
                else ("not a symlink" if st else "missing")
            )
            action = Action.REPAIRED if st is not None else Action.CREATED
        else:
            if not dry_run:
                safefs.make_symlink(dir_fd, name, target, display=display)
            changes.append(Change(display, Action.CREATED, "missing"))
            continue
        if not dry_run:
            safefs.replace_with_symlink(dir_fd, name, target, display=display)
        changes.append(Change(display, action, reason))
    return changes


@contextmanager
def locked(dir_fd: int, display: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on a directory for the duration (serialises ``sync``)."""
    try:
        fcntl.flock(dir_fd, fcntl.LOCK_EX)
    except OSError as err:
        raise os_error(display, err, "cannot lock") from err
    try:
        yield
    finally:
        fcntl.flock(dir_fd, fcntl.LOCK_UN)

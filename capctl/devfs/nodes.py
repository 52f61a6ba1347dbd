"""Create, verify and repair device nodes in one directory.

The logic is split in two: :func:`diagnose` is pure (what is wrong with what ``lstat`` saw),
:func:`ensure_nodes` / :func:`ensure_links` act under a directory fd via :mod:`capctl.devfs.safefs`.
A correct node is never touched (same inode after a re-run); a wrong one is replaced
atomically; a missing one is created.  The same code builds the host's ``/dev/nvidia-caps``
and the nodes inside a container's rootfs.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat

try:  # the C module (``operator`` is a Python module over it): see record.py
    from _operator import itemgetter
except ImportError:  # not CPython
    from operator import itemgetter

from capctl._lite.litenum import Enum
from capctl._lite.record import Record, set_field
from capctl.devfs import safefs
from capctl.devfs.safefs import file_kind as file_kind  # its home is safefs (the hook's path)
from capctl.errors import NodeError, translate

ACL_XATTR = "system.posix_acl_access"
_CHR = stat.S_IFCHR


TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence
    from typing import NamedTuple

    class _NodeFields(NamedTuple):
        name: str
        major: int
        minor: int
        mode: int
        uid: int = 0
        gid: int = 0
        acl: bytes | None = None

else:
    # Written out, not collections.namedtuple: the hook imports neither typing nor collections.
    class _NodeFields(tuple):
        __slots__ = ()
        _names = ("name", "major", "minor", "mode", "uid", "gid", "acl")

        def __new__(cls, name, major, minor, mode, uid=0, gid=0, acl=None):
            return tuple.__new__(cls, (name, major, minor, mode, uid, gid, acl))

        def __getnewargs__(self):
            return tuple(self)

        def __repr__(self):
            fields = ", ".join(f"{n}={v!r}" for n, v in zip(self._names, self, strict=True))
            return f"{type(self).__name__}({fields})"

        name = property(itemgetter(0))
        major = property(itemgetter(1))
        minor = property(itemgetter(2))
        mode = property(itemgetter(3))
        uid = property(itemgetter(4))
        gid = property(itemgetter(5))
        acl = property(itemgetter(6))


class NodeSpec(_NodeFields):
    """What a char device node must be.

    ``name`` is the basename inside its directory, ``mode`` permission bits only, ``acl`` an
    encoded POSIX access ACL (``system.posix_acl_access``) or None for "no ACL".  A named
    tuple, not a record: ``sync --all`` builds 4324 per run, and a tuple is built in half the
    time and unpacked in the hot loops in one step.
    """

    __slots__ = ()

    @property
    def rdev(self) -> int:
        return os.makedev(self.major, self.minor)


class Action(Enum):
    CREATED = "created"
    REPAIRED = "repaired"
    UNCHANGED = "unchanged"
    REMOVED = "removed"


class Change(Record):
    """What ensure did (or, in a dry run, would do) to one path."""

    path: str
    action: Action
    reason: str = ""

    def __init__(self, path: str, action: Action, reason: str = "") -> None:
        set_field(self, "path", path)
        set_field(self, "action", action)
        set_field(self, "reason", reason)


#: What ensure did to one name: an action and its reason, shared between names where equal.
Outcome = tuple[Action, str]
_UNCHANGED: Outcome = (Action.UNCHANGED, "")
_MISSING: Outcome = (Action.CREATED, "missing")


class Changes:
    """One :class:`Change` per name an ensure call handled, in order, each built when read.

    ``sync --all`` handles 8648 names (nodes and links), nearly all with one outcome
    ("unchanged", or the first time "created: missing"): the outcomes are kept as shared
    pairs, and a :class:`Change` record is made only for a caller that looks at it.  Iterate
    it, take its ``len``, ``tally`` an action, or add another sequence of changes (a list).
    """

    __slots__ = ("_dir", "_names", "_outcomes")

    def __init__(
        self,
        display_dir: str,
        names: Sequence[str | bytes],
        outcomes: Sequence[Outcome],
    ):
        if len(names) != len(outcomes):
            raise ValueError("one outcome per name")
        self._dir, self._names, self._outcomes = display_dir, names, outcomes

    @classmethod
    def missing(cls, display_dir: str, names: Sequence[str | bytes]) -> Changes:
        """Every name to be created (a dry run where even the directory is missing)."""
        return cls(display_dir, names, [_MISSING] * len(names))

    def __len__(self) -> int:
        return len(self._names)

    def __iter__(self) -> Iterator[Change]:
        where = self._dir
        for name, (action, reason) in zip(self._names, self._outcomes, strict=True):
            text = name if isinstance(name, str) else os.fsdecode(name)
            yield Change(f"{where}/{text}", action, reason)

    def __add__(self, other: Iterable[Change]) -> list[Change]:
        return [*self, *other]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Changes | list | tuple):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # equal to lists: unhashable like them

    def __repr__(self) -> str:
        return f"Changes({list(self)!r})"

    def tally(self, action: Action) -> int:
        """How many names got ``action``, without building any record."""
        return sum(1 for a, _reason in self._outcomes if a is action)


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
    with translate(NodeError, display, "cannot set ACL"):
        os.setxattr(_fd_path(dir_fd, name), ACL_XATTR, acl, follow_symlinks=False)


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
        safefs.unlink_quietly(dir_fd, tmp)
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
) -> Changes:
    """Make every node in ``dir_fd`` match its spec.  Returns one :class:`Change` per spec.

    This is the hot loop of ``sync --all`` (4324 nodes): a correct node costs one ``lstat``
    and a few integer compares, a missing one a ``mknod`` (:func:`_create`); :func:`diagnose`
    only runs on a mismatch.  How absent names are found: see :func:`_names_in`.
    """
    specs = list(specs)
    outcomes: list[Outcome] = []
    append = outcomes.append
    create: list[NodeSpec] = []
    lstat, makedev = os.lstat, os.makedev
    listing: set[str] | None = None
    last = len(specs) - 1
    for i, spec in enumerate(specs):
        name, major, minor, mode, uid, gid, acl = spec
        if listing is None or name in listing:
            try:
                st = lstat(name, dir_fd=dir_fd)
            except FileNotFoundError:
                if listing is None and i < last:  # the hook ensures one node per call
                    listing = _names_in(dir_fd)
                st = None
        else:
            st = None
        if st is None:
            create.append(spec)
            append(_MISSING)
            continue
        if (
            st.st_mode == _CHR | mode
            and st.st_rdev == makedev(major, minor)
            and st.st_uid == uid
            and st.st_gid == gid
            and acl is None
            and not (mode >> 3) & ~mode & 0o7  # what _acl_matters says of a node of this mode
        ):
            append(_UNCHANGED)
            continue
        acl = read_acl(dir_fd, name) if _acl_matters(st, spec) else spec.acl
        reason = diagnose(st, spec, acl)
        if reason is None:
            append(_UNCHANGED)
            continue
        if stat.S_ISDIR(st.st_mode):
            raise NodeError(f"{display_dir}/{name}", "is a directory; refusing to replace it")
        if not dry_run:
            with safefs.exact_umask():
                _write(dir_fd, spec, f"{display_dir}/{name}", replace=True)
        append((Action.REPAIRED, reason))
    if create and not dry_run:
        _create(dir_fd, create, display_dir)
    return Changes(display_dir, [spec.name for spec in specs], outcomes)


def _names_in(dir_fd: int) -> set[str]:
    """The directory's names, read when the first name the ensure loops look up is missing.

    A directory that holds every name already (a re-run) is best asked one ``lstat`` (or
    ``readlink``) per name; an empty one (a first run) is best listed once, so that no
    lookup fails.  The ensure loops look names up until one is missing, and from then on
    take a name absent from this listing as missing.  Either way "missing" may be stale by
    the time they act (a writer that does not take our lock): creation copes with ``EEXIST``.
    """
    return set(os.listdir(dir_fd))


def _create(dir_fd: int, specs: Sequence[NodeSpec], display_dir: str) -> None:
    """Make the nodes of ``specs``, found missing: one ``mknod`` each in the common case.

    Under an exact umask the kernel gives a node the mode asked for, and the owner
    :func:`safefs.new_node_owner` says: only a node to be owned otherwise is chowned.
    Anything unusual (an ACL, a name that appeared since, an error) takes the general path.
    """
    owner = safefs.new_node_owner(dir_fd)
    mknod, makedev = os.mknod, os.makedev
    with safefs.exact_umask():
        for spec in specs:
            name, major, minor, mode, uid, gid, acl = spec
            if acl is None and (uid, gid) == owner:
                try:
                    mknod(name, _CHR | mode, makedev(major, minor), dir_fd=dir_fd)
                    continue
                except OSError:
                    pass  # EEXIST (then replaced atomically) or an error, reported: both below
            _write(dir_fd, spec, f"{display_dir}/{name}", replace=False)


def ensure_links(
    dir_fd: int,
    names: Sequence[bytes],
    targets: Sequence[bytes],
    *,
    display_dir: str,
    dry_run: bool = False,
) -> Changes:
    """Make each of ``names`` in ``dir_fd`` a symlink to the same place in ``targets``
    (``/dev/char/M:m`` links).

    Names and targets are bytes, as ``readlink(2)`` gives them (nothing to decode per link).
    A correct link costs one ``readlink``, a missing one a ``symlink`` (see :func:`_names_in`);
    anything else at the name (a wrong link, a node, a file) is replaced atomically, and a
    directory refused.
    """
    outcomes: list[Outcome] = []
    append = outcomes.append
    readlink, symlink = os.readlink, os.symlink
    listing: set[bytes] | None = None
    for name, target in zip(names, targets, strict=True):
        current: bytes | None = None  # None: nothing at the name; b"": not a symlink
        if listing is None or name in listing:
            try:
                current = readlink(name, dir_fd=dir_fd)
            except FileNotFoundError:
                if listing is None:
                    listing = {os.fsencode(n) for n in _names_in(dir_fd)}
            except OSError as err:
                if err.errno != errno.EINVAL:  # EINVAL: not a symlink
                    raise
                current = b""
        if current == target:
            append(_UNCHANGED)
            continue
        if current is not None:
            # Something else is there: lstat refuses a directory (and tells a name gone since).
            st = safefs.lstat_at(dir_fd, os.fsdecode(name))
            if st is not None:
                display = f"{display_dir}/{os.fsdecode(name)}"
                if stat.S_ISDIR(st.st_mode):
                    raise NodeError(display, "is a directory; refusing to replace it")
                if not dry_run:
                    safefs.replace_with_symlink(
                        dir_fd, os.fsdecode(name), os.fsdecode(target), display=display
                    )
                append((Action.REPAIRED, "points elsewhere" if current else "not a symlink"))
                continue
        if not dry_run:
            try:
                symlink(target, name, dir_fd=dir_fd)
            except OSError:  # EEXIST (then replaced atomically) or an error, reported
                safefs.make_symlink(
                    dir_fd,
                    os.fsdecode(name),
                    os.fsdecode(target),
                    display=f"{display_dir}/{os.fsdecode(name)}",
                )
        append(_MISSING)
    return Changes(display_dir, names, outcomes)


def char_nodes(dir_fd: int, skip: set[str]) -> list[tuple[str, int, int]]:
    """``(name, major, minor)`` of every char node in ``dir_fd`` whose name is not in ``skip``.

    One ``getdents`` listing and an ``lstat`` for each entry whose type the listing does not
    already rule out (directories, regular files and symlinks are never device nodes).
    """
    out: list[tuple[str, int, int]] = []
    major, minor = os.major, os.minor
    with os.scandir(dir_fd) as it:
        for entry in it:
            name = entry.name
            if name in skip or entry.is_dir(follow_symlinks=False):
                continue
            if entry.is_file(follow_symlinks=False) or entry.is_symlink():
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # gone since the listing
            if stat.S_ISCHR(st.st_mode):
                out.append((name, major(st.st_rdev), minor(st.st_rdev)))
    return out


def remove_nodes(
    dir_fd: int, names_reasons: Sequence[tuple[str, str]], *, display_dir: str,
    dry_run: bool = False,
) -> Changes:
    """Unlink the named nodes from ``dir_fd`` (already judged strays); one Change each."""
    names: list[str] = []
    outcomes: list[Outcome] = []
    for name, reason in names_reasons:
        if not dry_run:
            with translate(NodeError, f"{display_dir}/{name}", "cannot remove stray node"):
                try:
                    os.unlink(name, dir_fd=dir_fd)
                except FileNotFoundError:
                    pass  # gone already: the goal
        names.append(name)
        outcomes.append((Action.REMOVED, reason))
    return Changes(display_dir, names, outcomes)


class locked:
    """Hold an exclusive ``flock`` on a directory for the duration (serialises ``sync``)."""

    def __init__(self, dir_fd: int, display: str) -> None:
        self.dir_fd = dir_fd
        self.display = display

    def __enter__(self) -> None:
        with translate(NodeError, self.display, "cannot lock"):
            fcntl.flock(self.dir_fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.dir_fd, fcntl.LOCK_UN)

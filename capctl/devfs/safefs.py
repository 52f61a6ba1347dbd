"""Filesystem operations that cannot be tricked by symlinks.

Every path below a root is walked one component at a time with ``openat(O_NOFOLLOW |
O_DIRECTORY)``, so a symlink anywhere (``/dev -> /``, ``/dev/nvidia-caps -> /etc``) is refused
instead of followed: the CVE-2024-0132 family, where a container image plants links that a
privileged hook then writes through.  Nodes are created under a directory file descriptor and
replaced by create-then-rename, so a reader never sees a node missing and nothing is ever
``chmod``-ed or ``chown``-ed through a path that might be a symlink.
"""

from __future__ import annotations

import errno
import os
import stat

from capctl.errors import NodeError, UnsafePathError, translate

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import TracebackType

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: Longest relative path capctl ever resolves; container requests never become paths, but
#: bound it anyway.
_MAX_RELPATH = 4096


def split_relpath(relpath: str) -> list[str]:
    """Split a root-relative path into components, refusing ``..``, ``.`` and empty parts."""
    if len(relpath) > _MAX_RELPATH or "\0" in relpath:
        raise UnsafePathError(relpath[:80], "path too long or contains NUL")
    parts = [p for p in relpath.strip("/").split("/") if p]
    for part in parts:
        if part in (".", ".."):
            raise UnsafePathError(relpath, f"path component {part!r} not allowed")
    return parts


def open_root(path: str) -> int:
    """Open a trusted root directory (given by an admin or the runtime) as a directory fd."""
    with translate(NodeError, path, "cannot open root directory"):
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def open_dir(
    root_fd: int,
    relpath: str,
    *,
    create: bool = False,
    mode: int = 0o755,
    display: str = "",
) -> int:
    """Open ``relpath`` below ``root_fd`` as a directory fd, never following a symlink.

    With ``create``, missing components are made with ``mode`` (exactly, umask ignored) and
    owned by the caller.  A component that is a symlink or not a directory raises
    :class:`UnsafePathError` naming it (``display`` prefixes the path in messages).
    """
    fd = os.dup(root_fd)
    walked = display.rstrip("/")
    try:
        for part in split_relpath(relpath):
            walked = f"{walked}/{part}"
            with translate(NodeError, walked, "cannot open directory"):
                try:
                    new = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    try:
                        os.mkdir(part, mode, dir_fd=fd)
                    except FileExistsError:  # made concurrently: opened below
                        pass
                    new = os.open(part, _DIR_FLAGS, dir_fd=fd)
                    st = os.fstat(new)
                    if st.st_mode & 0o7777 != mode:
                        os.fchmod(new, mode)  # undo the umask on the directory we just made
                except OSError as err:
                    if err.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise UnsafePathError(
                            walked, "is a symlink or not a directory; refusing"
                        ) from err
                    raise
            os.close(fd)
            fd = new
        return fd
    except BaseException:
        os.close(fd)
        raise


class _ClosingFd:
    # A class, not contextlib (whose import costs the hook about 2 ms).
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __enter__(self) -> int:
        return self.fd

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def opened_dir(root_fd: int, relpath: str, **kwargs: object) -> _ClosingFd:
    """Context-managed :func:`open_dir`: ``with opened_dir(...) as fd``."""
    return _ClosingFd(open_dir(root_fd, relpath, **kwargs))  # type: ignore[arg-type]


class _ExactUmask:
    def __enter__(self) -> None:
        self.old = os.umask(0)

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        os.umask(self.old)


def exact_umask() -> _ExactUmask:
    """Let ``mknod``/``symlink`` modes through unmasked for the duration of a ``with``.

    capctl is single-threaded; the umask is restored even on error.
    """
    return _ExactUmask()


def unlink_if_present(dir_fd: int, name: str) -> None:
    """Remove ``name`` in ``dir_fd``; absent is fine, other errors raise."""
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


def unlink_quietly(dir_fd: int, name: str) -> None:
    """Remove ``name`` in ``dir_fd`` if it can be; never raises (cleanup paths)."""
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass


def new_node_owner(dir_fd: int) -> tuple[int, int]:
    """The owner a node made in ``dir_fd`` gets: the effective uid, and the effective gid or,
    in a set-group-ID directory, the directory's group (``inode_init_owner``, fs/inode.c)."""
    st = os.fstat(dir_fd)
    return os.geteuid(), st.st_gid if st.st_mode & stat.S_ISGID else os.getegid()


def lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    """``lstat`` of ``name`` in ``dir_fd``; None if absent."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


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


class UnreadableFile(Exception):
    """What :func:`read_regular` found instead of a regular file it may read (its message:
    "not a regular file", "larger than N bytes", "replaced while being looked at")."""


def read_regular(path: str, limit: int, *, dir_fd: int | None = None,
                 ) -> tuple[bytes, os.stat_result] | None:
    """The bytes and ``fstat`` of the regular file ``path`` (in ``dir_fd`` if given), at most
    ``limit`` bytes; None if nothing is there.

    A symlink there is not followed, and nothing but a regular file is ever opened: opening a
    device node can act on the device, and a FIFO's open blocks (``O_NONBLOCK`` too, for one
    swapped in between the look and the open, which the identity check then refuses).
    Raises :class:`UnreadableFile`, and :class:`OSError` as the system calls raise it.
    """
    try:
        st = os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        raise UnreadableFile("not a regular file")
    if st.st_size > limit:
        raise UnreadableFile(f"larger than {limit} bytes")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as f:
        now = os.fstat(fd)
        if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            raise UnreadableFile("replaced while being looked at")
        data = f.read(limit + 1)
    if len(data) > limit:  # grew since the look
        raise UnreadableFile(f"larger than {limit} bytes")
    return data, now


def readlink_at(dir_fd: int, name: str) -> str | None:
    """Target of the symlink ``name`` in ``dir_fd``; None if absent or not a symlink."""
    try:
        return os.readlink(name, dir_fd=dir_fd)
    except (FileNotFoundError, OSError) as err:
        if isinstance(err, FileNotFoundError) or err.errno == errno.EINVAL:
            return None
        raise


def tmp_name(name: str) -> str:
    """A per-process temporary name next to ``name`` (hidden, never a valid node name)."""
    return f".{name}.capctl-{os.getpid()}"


def replace_with_node(
    dir_fd: int, name: str, mode: int, rdev: int, uid: int, gid: int, *, display: str
) -> None:
    """Atomically put a char node at ``name``: make it under a temporary name, then rename.

    Whatever was at ``name`` (a wrong node, a regular file, a symlink: the link itself, never
    its target) is replaced in one step, so a concurrent reader sees the old or the new node,
    never none.  A directory at ``name`` is refused.
    """
    tmp = tmp_name(name)
    with translate(NodeError, display, "cannot create device node"):
        try:
            unlink_if_present(dir_fd, tmp)
            os.mknod(tmp, 0o020000 | mode, rdev, dir_fd=dir_fd)
            if (uid, gid) != new_node_owner(dir_fd):
                os.chown(tmp, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except OSError as err:
            unlink_quietly(dir_fd, tmp)
            if err.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
                raise NodeError(display, "is a directory; refusing to replace it") from err
            raise


def make_node(
    dir_fd: int, name: str, mode: int, rdev: int, uid: int, gid: int, *, display: str
) -> None:
    """Create a char node where nothing is (the fast path of a first ``sync``)."""
    with translate(NodeError, display, "cannot create device node"):
        try:
            os.mknod(name, 0o020000 | mode, rdev, dir_fd=dir_fd)
            if (uid, gid) != new_node_owner(dir_fd):
                os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
        except FileExistsError:
            # Appeared since we looked (another writer without our lock): replace atomically.
            replace_with_node(dir_fd, name, mode, rdev, uid, gid, display=display)


def replace_with_symlink(dir_fd: int, name: str, target: str, *, display: str) -> None:
    """Atomically point the symlink ``name`` at ``target`` (create-then-rename)."""
    tmp = tmp_name(name)
    with translate(NodeError, display, "cannot create symlink"):
        try:
            unlink_if_present(dir_fd, tmp)
            os.symlink(target, tmp, dir_fd=dir_fd)
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except OSError:
            unlink_quietly(dir_fd, tmp)
            raise


def make_symlink(dir_fd: int, name: str, target: str, *, display: str) -> None:
    """Create a symlink where nothing is; replace atomically if something appeared."""
    with translate(NodeError, display, "cannot create symlink"):
        try:
            os.symlink(target, name, dir_fd=dir_fd)
        except FileExistsError:
            replace_with_symlink(dir_fd, name, target, display=display)

"""Replace a file atomically: a reader sees the old bytes or the new ones, never a part.

The new bytes go to a temporary file in the same directory, created with ``O_EXCL`` and
``O_NOFOLLOW`` under the directory's descriptor (nothing planted at the temporary name is
followed or reused), given its mode with ``fchmod`` (whatever the umask) and its owner with
``fchown``, flushed with ``fsync``, then renamed over the target (``rename(2)`` is atomic
within a file system and replaces a symlink at the name rather than following it) and the
directory is synced so the rename survives a crash.  On any failure the temporary file is
removed and the ``OSError`` propagates: callers name the file in their own error.

The temporary name starts with ``.`` and does not end in the target's suffix, so directory
scanners that read ``*.json`` (CDI, hooks.d) never see it.

On the OCI hook's path (the settings cache): imports nothing but ``os``.
"""

from __future__ import annotations

import os

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def replace_file(path: str, data: bytes, *, mode: int, owner: tuple[int, int] | None = None,
                 dir_fd: int | None = None, durable: bool = True, sync_dir: bool = True) -> None:
    """Put ``data`` at ``path`` atomically, mode ``mode`` and (if given) ``owner`` (uid, gid).

    With ``dir_fd``, ``path`` is a name in that directory; otherwise the parent directory of
    ``path`` is opened (it must exist).  ``durable=False`` skips both ``fsync`` calls, for a
    cache whose content is checked when read.
    """
    if dir_fd is None:
        parent, name = os.path.split(path)
        fd = os.open(parent or ".", _DIR)
        try:
            _replace(fd, name, data, mode, owner, durable, sync_dir)
        finally:
            os.close(fd)
    else:
        _replace(dir_fd, path, data, mode, owner, durable, sync_dir)


def _replace(dir_fd: int, name: str, data: bytes, mode: int, owner: tuple[int, int] | None,
             durable: bool, sync_dir: bool) -> None:
    tmp = f".{name}.tmp-{os.getpid()}"
    try:
        fd = os.open(tmp, _CREATE, mode, dir_fd=dir_fd)
    except FileExistsError:  # left by a crashed run with this pid: ours to remove
        os.unlink(tmp, dir_fd=dir_fd)
        fd = os.open(tmp, _CREATE, mode, dir_fd=dir_fd)
    try:
        try:
            os.fchmod(fd, mode)
            if owner is not None:
                os.fchown(fd, owner[0], owner[1])
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
        raise
    if durable and sync_dir:
        os.fsync(dir_fd)

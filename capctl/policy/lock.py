"""The config's lock: ``flock`` on ``<config>.lock``, which ``grant``, ``revoke`` and ``sync``
hold while they read the grants and apply them, so that concurrent runs serialise.

The config itself is replaced by rename, so the lock lives on a file that stays.  Without
``contextlib`` (about 5 ms of imports on ``sync``'s path, which the udev rules run).
"""

from __future__ import annotations

import fcntl
import os

from capctl.errors import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from capctl.host import StrPath


class ConfigLock:
    """``with ConfigLock(config, shared=...)``: hold the lock of ``config`` (exclusive by
    default), creating the config's directory (0755) and the lock file (0600) if need be."""

    def __init__(self, config: StrPath, *, shared: bool = False):
        self.config = os.fspath(config)
        self.shared = shared
        self._fd: int | None = None

    def __enter__(self) -> None:
        lock = self.config + ".lock"
        try:
            os.makedirs(os.path.dirname(self.config) or ".", mode=0o755, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as err:
            raise ConfigError(f"{lock}: cannot open lock file: {err.strerror or err}") from err
        try:
            fcntl.flock(fd, fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def __exit__(self, *exc: object) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # releases the lock


class no_lock:  # lower case, as contextlib.nullcontext
    """A ``with`` that holds nothing (a dry run)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None

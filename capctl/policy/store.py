"""The config file as the grants' store: read, validate, rewrite atomically, lock.

The config file (``--config``, TOML) is read with ``tomllib``, refused when it is not root-owned
or is group/world-writable (configuration comes from root only), and rewritten atomically (temp
file, fsync, rename, fsync directory) under an ``flock`` on ``<config>.lock``, which is also
held while the change is applied so concurrent ``grant``/``revoke``/``sync`` runs serialise.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from capctl.errors import ConfigError
from capctl.policy import settings, tomlwrite
from capctl.policy.grants import Document, Policy, parse_document

#: The config is a few KiB at most; refuse to parse anything absurd.
MAX_CONFIG = 1 << 20
_HEADER = (
    "# capctl settings and delegation policy.\n"
    "# [grants.\"<capability>\"] tables are written by 'capctl grant' and 'capctl revoke';\n"
    "# the numeric uid/gid is what applies, the name is for people (see 'capctl grants').\n\n"
)


def format_document(d: Document) -> str:
    """TOML text of a document (the policy last, other tables as they were)."""
    grants: dict[str, Any] = {}
    for name, g in d.policy.grants.items():
        entry: dict[str, Any] = {}
        if g.users:
            entry["users"] = [{"name": u.name, "uid": u.id} for u in g.users]
        if g.groups:
            entry["groups"] = [{"name": x.name, "gid": x.id} for x in g.groups]
        grants[name] = entry
    body: dict[str, Any] = dict(d.other)
    if grants:
        body["grants"] = grants
    try:
        return tomlwrite.dumps(body, _HEADER)
    except TypeError as err:
        raise ConfigError(f"cannot rewrite the config: {err}") from err


# --- the config file ---------------------------------------------------------------------------


def load_document(path: Path) -> Document:
    """Read and validate the config (:func:`capctl.policy.settings.read_table`); absent: empty."""
    doc = settings.read_table(path)
    if doc is None:
        return Document(Policy())
    return parse_document(doc, str(path))


def load_policy(path: Path) -> Policy:
    return load_document(path).policy


def save_document(path: Path, d: Document) -> None:
    """Atomically replace the config: temp file in its directory, fsync, rename, fsync dir."""
    text = format_document(d).encode("utf-8")
    parent = path.parent
    try:
        parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        dir_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as err:
        raise ConfigError(f"{parent}: cannot open config directory: {err.strerror or err}") from err
    tmp = f".{path.name}.tmp-{os.getpid()}"
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644, dir_fd=dir_fd)
        try:
            os.fchmod(fd, 0o644)  # whatever the umask
            if os.geteuid() == 0:
                os.fchown(fd, 0, 0)
            view = memoryview(text)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        os.fsync(dir_fd)
    except OSError as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise ConfigError(f"{path}: cannot write: {err.strerror or err}") from err
    finally:
        os.close(dir_fd)


@contextlib.contextmanager
def locked(path: Path, *, shared: bool = False) -> Iterator[None]:
    """Hold ``flock`` on ``<config>.lock`` (the config itself is replaced by rename, so the
    lock must live on a file that stays)."""
    lock = path.with_name(path.name + ".lock")
    try:
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as err:
        raise ConfigError(f"{lock}: cannot open lock file: {err.strerror or err}") from err
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock

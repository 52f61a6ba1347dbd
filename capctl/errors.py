"""One exception hierarchy for capctl.

Every expected failure is a :class:`CapctlError` (or a subclass) carrying the file, line,
device or path at fault.  The CLI turns them into one ``capctl: error: ...`` line and a
non-zero exit; library code never prints or exits.  OS errors are translated where they
happen, once per layer: each layer wraps its system calls in :class:`translate`, which raises
the layer's error naming the path, what failed and the kernel's reason, ``from`` the
:class:`OSError` so the cause survives for debugging (as psutil's ``wrap_exceptions``).  An
OSError that is an expected outcome (``ENOENT`` meaning "absent", an ``EEXIST`` race) is
handled where it happens, inside the ``with``, and never reaches it.
"""

from __future__ import annotations

import errno as _errno
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import TracebackType


class CapctlError(Exception):
    """Base class of every error capctl reports to a user."""

    exit_code = 1
    #: The kernel's errno when this error translates an :class:`OSError`, else None.
    errno: int | None = None
    #: The file or directory at fault, where one is (always set by :class:`translate`).
    path: str | None = None


class ParseError(CapctlError):
    """Malformed content in a driver, config or state file: names the file and line."""

    path: str

    def __init__(self, path: str | os.PathLike[str], message: str, line: int | None = None):
        self.path = str(path)
        self.line = line
        self.reason = message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class DriverError(CapctlError):
    """The NVIDIA driver (or its simulated root) is missing, not loaded or inconsistent."""


class NodeError(CapctlError):
    """A device node cannot be created, repaired or trusted: names the path."""

    path: str

    def __init__(self, path: str | os.PathLike[str], message: str):
        self.path = str(path)
        self.reason = message
        super().__init__(f"{self.path}: {message}")


class UnsafePathError(NodeError):
    """A path would leave its root (a symlink, ``..``) or is not what it must be."""


class DeviceError(CapctlError):
    """A requested device is malformed, unknown or not usable: names the device."""

    def __init__(self, device: str, message: str):
        self.device = device
        self.reason = message
        super().__init__(f"{device!r}: {message}")


class TopologyError(CapctlError):
    """The MIG topology (NVML or a snapshot) cannot be read or is invalid."""


class CgroupError(CapctlError):
    """A cgroup cannot be found, read, written or verified."""


class ConfigError(CapctlError):
    """capctl's own configuration (grants, settings) is missing, corrupt or unsafe."""


class HookError(CapctlError):
    """The OCI hook input (state, bundle config, request) is malformed or refused."""


class AccessDenied(CapctlError):
    """The kernel refused access (``EACCES``, ``EPERM``): a missing privilege or a policy (a
    mode, an LSM, a device cgroup), never "absent" or "malformed".  Each layer's error has a
    subclass that is also this one (psutil's ``AccessDenied``), so a caller or a test can
    tell it apart from every other failure without parsing the message."""


class NodeAccessDenied(NodeError, AccessDenied):
    """:class:`NodeError` for ``EACCES``/``EPERM`` on a node or its directory."""


class DriverAccessDenied(DriverError, AccessDenied):
    """:class:`DriverError` for ``EACCES``/``EPERM`` on a driver file."""


class CgroupAccessDenied(CgroupError, AccessDenied):
    """:class:`CgroupError` for ``EACCES``/``EPERM`` on a cgroup file."""


class TopologyAccessDenied(TopologyError, AccessDenied):
    """:class:`TopologyError` for ``EACCES``/``EPERM`` on a topology snapshot."""


#: The layers' errors :class:`translate` makes, each with its access-denied subclass.
_DENIED: dict[type[CapctlError], type[CapctlError]] = {
    NodeError: NodeAccessDenied,
    DriverError: DriverAccessDenied,
    CgroupError: CgroupAccessDenied,
    TopologyError: TopologyAccessDenied,
}
_ACCESS = (_errno.EACCES, _errno.EPERM)


def translated(
    kind: type[CapctlError], path: str | os.PathLike[str], err: OSError, doing: str = ""
) -> CapctlError:
    """The *kind* error (one of :data:`_DENIED`'s keys) for *err* on *path*:
    ``<path>: <doing>: <strerror>``, its access-denied subclass for ``EACCES``/``EPERM``,
    with ``path`` and ``errno`` set."""
    if kind not in _DENIED:
        raise TypeError(f"translate: no access-denied subclass for {kind.__name__}")
    cls = _DENIED[kind] if err.errno in _ACCESS else kind
    where = os.fspath(path)
    reason = f"{doing}: {err.strerror or err}" if doing else str(err.strerror or err)
    new = cls(where, reason) if issubclass(cls, NodeError) else cls(f"{where}: {reason}")
    new.path = where
    new.errno = err.errno
    return new


class translate:
    """``with translate(CgroupError, path, "cannot open"):``: an :class:`OSError` raised in
    the block becomes a *kind* error (see :func:`translated`) ``from`` it; anything else
    passes through.  A class, not a ``contextlib`` generator: the hook's path does not import
    contextlib (``docs/hook-startup.md``).
    """

    __slots__ = ("doing", "kind", "path")

    def __init__(self, kind: type[CapctlError], path: str | os.PathLike[str], doing: str = ""):
        self.kind, self.path, self.doing = kind, path, doing

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        typ: type[BaseException] | None,
        err: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not isinstance(err, OSError):
            return  # nothing raised, or not ours to translate: it propagates as it is
        raise translated(self.kind, self.path, err, self.doing) from err


"""One exception hierarchy for capctl.

Every expected failure is a :class:`CapctlError` (or a subclass) carrying the file, line,
device or path at fault.  The CLI turns them into one ``capctl: error: ...`` line and a
non-zero exit; library code never prints or exits.  OS errors are translated where they
happen, with ``raise ... from err`` so the cause survives for debugging.
"""

from __future__ import annotations

import os


class CapctlError(Exception):
    """Base class of every error capctl reports to a user."""

    exit_code = 1


class ParseError(CapctlError):
    """Malformed content in a driver, config or state file: names the file and line."""

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


def os_error(path: str | os.PathLike[str], err: OSError, doing: str) -> NodeError:
    """Translate an :class:`OSError` on *path* into a :class:`NodeError` naming both."""
    return NodeError(path, f"{doing}: {err.strerror or err}")

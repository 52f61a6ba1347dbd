"""Where things are on this host: the driver root, capctl's config, bounded file reads.

A :class:`Host` is built once by the CLI (or a test) and passed down; no module keeps a global
``/proc`` that tests would have to patch.  ``root`` is where the driver's files are read and the
host's nodes written (``/``, a containerized driver's ``/run/nvidia/driver``, or a simulated
root).  Cgroups and container processes are always the real ones and are not under ``root``.
"""

from __future__ import annotations

import os

from capctl._lite.record import Record, set_field
from capctl.errors import DriverError, ParseError

DEFAULT_CONFIG = "/etc/capctl/capctl.toml"

#: Largest driver file capctl reads.  A full ``mig-minors`` is about 100 KiB.
MAX_DRIVER_FILE = 1 << 20

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TypeAlias

    StrPath: TypeAlias = str | os.PathLike[str]


class Host(Record):
    """The roots capctl works under, as ``str`` paths (the hook does not import pathlib).

    The constructor also takes :class:`os.PathLike` objects (a ``Path``) and stores their
    string.
    """

    root: str = "/"
    config: str = DEFAULT_CONFIG
    topology: str | None = None
    #: Where ``root`` and ``topology`` came from, for ``doctor`` and messages: ``--root``,
    #: ``CAPCTL_ROOT``, ``[host] in FILE`` or ``default`` (see :func:`with_host_table`).
    root_from: str = "default"
    topology_from: str = "default"

    def __init__(
        self,
        root: StrPath = "/",
        config: StrPath = DEFAULT_CONFIG,
        topology: StrPath | None = None,
        root_from: str = "default",
        topology_from: str = "default",
    ) -> None:
        set_field(self, "root", os.fspath(root))
        set_field(self, "config", os.fspath(config))
        set_field(self, "topology", None if topology is None else os.fspath(topology))
        set_field(self, "root_from", root_from)
        set_field(self, "topology_from", topology_from)

    def describe(self) -> str:
        """``driver root R (from), topology T (from)``: what a command assumed, and why."""
        topology = self.topology if self.topology is not None else "NVML"
        return (f"driver root {self.root} ({self.root_from}), topology {topology} "
                f"({self.topology_from})")

    def path(self, relpath: str) -> str:
        """A root-relative path (``proc/devices``) as a real path under the root."""
        return os.path.join(self.root, relpath)

    def display(self, relpath: str) -> str:
        """How to name a root-relative path in messages: the real path."""
        return self.path(relpath)


def with_host_table(host: Host, driver_root: str | None, topology: str | None) -> Host:
    """``host`` with the config's ``[host]`` values (None: not set there) for whatever no
    option or environment variable gave (``*_from == "default"``).

    The one precedence of every entry point (docs/contract.md): options, then ``CAPCTL_*``
    (never for the hook, the wrapper or the Docker hook), then ``[host]``, then defaults."""
    where = f"[host] in {host.config}"
    root, root_from = host.root, host.root_from
    if root_from == "default" and driver_root is not None:
        root, root_from = driver_root, where
    topo, topo_from = host.topology, host.topology_from
    if topo_from == "default" and topology is not None:
        topo, topo_from = topology, where
    return Host(root, host.config, topo, root_from, topo_from)


def read_bounded(path: StrPath, limit: int = MAX_DRIVER_FILE) -> str:
    """Read a text file of at most ``limit`` bytes; larger is an error, not a truncation."""
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise
    except OSError as err:
        raise DriverError(f"{path}: cannot read: {err.strerror or err}") from err
    return _ascii(path, data, limit)


def read_small_optional(path: str, limit: int) -> str | None:
    """:func:`read_optional` for many small files (``sync`` reads up to 4324 capability files).

    ``os.open`` + one ``os.read`` + ``os.close``: three system calls, where ``open()`` adds an
    ``fstat``, an ``ioctl`` and an ``lseek`` and builds a buffered file object per file.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise DriverError(f"{path}: cannot read: {err.strerror or err}") from err
    try:
        # One read: a seq_file proc file gives all it holds to a read this large, and a file
        # cut short would fail its parser (every field is required), never pass as another.
        data = os.read(fd, limit + 1)
    except OSError as err:
        raise DriverError(f"{path}: cannot read: {err.strerror or err}") from err
    finally:
        os.close(fd)
    return _ascii(path, data, limit)


def read_optional(path: StrPath, limit: int = MAX_DRIVER_FILE) -> str | None:
    """:func:`read_bounded`, or None if the file does not exist."""
    try:
        return read_bounded(path, limit)
    except FileNotFoundError:
        return None


def is_root_owned_safe(st: os.stat_result) -> bool:
    """True if a file is owned by root and writable by nobody else."""
    return st.st_uid == 0 and not st.st_mode & 0o022


def _ascii(path: StrPath, data: bytes, limit: int) -> str:
    """``data`` read from ``path`` with ``limit + 1`` asked for, as ASCII text; refused when
    over ``limit`` bytes or not ASCII."""
    if len(data) > limit:
        raise ParseError(path, f"larger than {limit} bytes; refusing")
    try:
        return data.decode("ascii")
    except UnicodeDecodeError as err:
        raise ParseError(path, f"not ASCII text (byte {err.start})") from err

"""Read the driver's view of capabilities from a :class:`~capctl.host.Host` root.

This is the I/O half of :mod:`capctl.caps`: it finds and reads ``/proc/devices``, the
``*-minors`` files and the capability files, and cross-checks them.  A missing ``mig-minors``
means the driver (or its devfs capability interface) is not there, which is reported as such,
never as "no capabilities".
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from capctl import caps
from capctl.caps import Capability, CapabilityFile, CapabilityTable, Majors, Source
from capctl.errors import DriverError, ParseError
from capctl.host import Host, read_bounded, read_optional

#: A capability file holds three short lines.
_MAX_CAPFILE = 4096


@dataclass(frozen=True)
class DriverState:
    """Everything ``list`` and ``sync`` need to know about the driver right now."""

    majors: Majors
    table: CapabilityTable
    #: Capabilities that exist now (have a proc file), with that file's fields.
    existing: dict[str, CapabilityFile] = field(default_factory=dict)

    @property
    def caps_major(self) -> int:
        assert self.majors.caps is not None  # checked by load()
        return self.majors.caps


def load_majors(host: Host) -> Majors:
    """The NVIDIA char majors from ``<root>/proc/devices``."""
    path = host.path("proc/devices")
    try:
        text = read_bounded(path)
    except FileNotFoundError as err:
        raise DriverError(f"{path}: missing; is {host.root} a Linux root with /proc?") from err
    return caps.nvidia_majors(caps.parse_proc_devices(text, str(path)))


def load_table(host: Host) -> CapabilityTable:
    """Parse every known ``*-minors`` file; ``mig-minors`` is required."""
    parts: dict[Source, list[Capability]] = {}
    for source in Source:
        path = host.path(f"{caps.MINORS_DIR}/{source.value}")
        text = read_optional(path)
        if text is None:
            if source is Source.MIG:
                raise DriverError(
                    f"{path}: missing; the nvidia driver is not loaded, is older than R450, or "
                    "uses the /proc-based capability interface (load nvidia with "
                    "nv_cap_enable_devfs=1)"
                )
            continue
        parts[source] = caps.parse_minors(text, str(path), source)
    return caps.merge_tables(parts, host.display(caps.MINORS_DIR))


def _existing_mig(host: Host, table: CapabilityTable) -> dict[str, str]:
    """Map capability name -> proc file path for every capability file present now.

    Walks the capabilities tree once (far fewer syscalls than a stat per ``mig-minors`` line).
    A file that names a MIG capability missing from ``mig-minors`` is an inconsistency: fail.
    """
    found: dict[str, str] = {}
    base = host.path(caps.CAPABILITIES_DIR)
    for dirpath, _dirs, files in os.walk(base):
        for fname in files:
            full = os.path.join(dirpath, fname)
            rel = os.path.relpath(full, host.root)
            name = caps.name_from_proc_relpath(rel)
            if name is None:
                # Not a MIG capability: an nvlink/sys one if the table knows its path.
                name = rel[len(caps.CAPABILITIES_DIR) + 1 :]
                cap = table.get(name)
                if cap is None or cap.proc_relpath != rel:
                    continue  # some other driver file; not ours to judge
            elif name not in table:
                raise ParseError(full, f"capability {name!r} is not listed in mig-minors")
            found[name] = full
    for cap in table:
        if cap.source is Source.NVLINK and os.path.exists(host.path(cap.proc_relpath)):
            found[cap.name] = host.display(cap.proc_relpath)
    return found


def read_capability_file(host: Host, cap: Capability) -> CapabilityFile | None:
    """The parsed proc file of ``cap``, None if absent; its minor must match the table."""
    path = host.path(cap.proc_relpath)
    text = read_optional(path, _MAX_CAPFILE)
    if text is None:
        return None
    cf = caps.parse_capability_file(text, str(path))
    if cf.minor != cap.minor:
        raise ParseError(
            path,
            f"DeviceFileMinor {cf.minor} disagrees with {cap.source.value} "
            f"({cap.name} {cap.minor}); refusing",
        )
    return cf


def load(host: Host) -> DriverState:
    """Read and cross-check the driver's majors, minors and capability files."""
    majors = load_majors(host)
    table = load_table(host)
    if majors.caps is None:
        raise DriverError(
            f"{host.path('proc/devices')}: no 'nvidia-caps' character major; "
            "the nvidia driver is not loaded"
        )
    existing: dict[str, CapabilityFile] = {}
    for name in _existing_mig(host, table):
        cap = table.get(name)
        assert cap is not None
        cf = read_capability_file(host, cap)
        if cf is not None:
            existing[name] = cf
    return DriverState(majors, table, existing)

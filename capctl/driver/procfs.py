"""Read the driver's view of capabilities from a :class:`~capctl.host.Host` root.

This is the I/O half of :mod:`capctl.driver.capnames`: it finds and reads ``/proc/devices``, the
``*-minors`` files and the capability files, and cross-checks them.  A missing ``mig-minors``
means the driver (or its devfs capability interface) is not there, which is reported as such,
never as "no capabilities".
"""

from __future__ import annotations

import os

from capctl._lite.record import Record, replace
from capctl.driver import capfile, capnames, minorsfile, procdevices
from capctl.driver.capfile import CapabilityFile
from capctl.driver.capnames import Source
from capctl.driver.minorsfile import Capability, CapabilityTable
from capctl.driver.procdevices import Majors
from capctl.errors import DriverError, NodeError, ParseError, translate
from capctl.host import read_bounded, read_optional, read_small_optional

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from capctl.host import Host
else:
    # What collections.abc re-exports, without the collections package that importing it
    # loads (about 1.5 ms of every hook start; docs/hook-startup.md); os has loaded this module already.
    from _collections_abc import Mapping

#: A capability file holds three short lines.
_MAX_CAPFILE = 4096


class DriverState(Record):
    """Everything ``list`` and ``sync`` need to know about the driver right now."""

    majors: Majors
    table: CapabilityTable
    #: Capabilities that exist now (have a proc file), with that file's fields.
    existing: Mapping[str, CapabilityFile]

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
    return procdevices.nvidia_majors(procdevices.parse_proc_devices(text, path))


def load_table(host: Host) -> CapabilityTable:
    """Parse every known ``*-minors`` file; ``mig-minors`` is required."""
    parts: dict[Source, list[Capability]] = {}
    for source in Source:
        path = host.path(f"{capnames.MINORS_DIR}/{source.value}")
        text = read_optional(path)
        if text is None:
            if source is Source.MIG:
                # Every driver with MIG (R450 on) publishes it when the module loads; there is
                # no module parameter that turns it off (docs/driver.md, "Minors files").
                raise DriverError(
                    f"{path}: missing; the nvidia driver is not loaded (modprobe nvidia), is "
                    "older than R450, or --root is not the driver's root"
                )
            continue
        parts[source] = minorsfile.parse_minors(text, path, source)
    return minorsfile.merge_tables(parts, host.display(capnames.MINORS_DIR))


def _existing_mig(host: Host, table: CapabilityTable) -> dict[str, str]:
    """Map capability name -> proc file path for every capability file present now.

    Walks the capabilities tree once (far fewer syscalls than a stat per ``mig-minors`` line),
    like ``os.walk``: symlinks to directories are not entered.  A file that names a MIG
    capability missing from ``mig-minors`` is an inconsistency: fail.
    """
    found: dict[str, str] = {}
    prefix = capnames.CAPABILITIES_DIR + "/"
    # (directory, its root-relative path), depth first, each directory's files before its
    # subdirectories (the order os.walk gives).
    todo = [(host.path(capnames.CAPABILITIES_DIR), capnames.CAPABILITIES_DIR)]
    while todo:
        dirpath, reldir = todo.pop()
        with translate(DriverError, dirpath, "cannot read"):
            try:
                with os.scandir(dirpath) as it:
                    entries = list(it)
            except FileNotFoundError:
                continue  # no capabilities directory (yet), or one vanished while walking
        subdirs = []
        # In gpu<N>/mig/gi<G>: each ci<C> directory holds just its "access" file (the driver
        # makes and removes both with the instance), so it is not listed: its file is read
        # directly, and a missing one is an instance destroyed meanwhile (no entry).  That
        # saves a getdents per compute instance: 3840 of them with every instance present.
        in_gi = reldir.count("/") == 6 and reldir.rsplit("/", 2)[1] == "mig"
        gi_access = capnames.name_from_proc_relpath(f"{reldir}/access") if in_gi else None
        for entry in entries:
            rel = f"{reldir}/{entry.name}"
            if entry.is_dir():
                if gi_access is not None and entry.name[:2] == "ci" and not entry.is_symlink():
                    name = capnames.ci_name_in_gi(gi_access, entry.name)
                    if name is not None:
                        if name not in table:
                            raise ParseError(
                                f"{entry.path}/access",
                                f"capability {name!r} is not listed in mig-minors",
                            )
                        found[name] = f"{entry.path}/access"
                        continue
                if not entry.is_symlink():
                    subdirs.append((entry.path, rel))
                continue
            name = capnames.name_from_proc_relpath(rel)
            if name is None:
                # Not a MIG capability: an nvlink/sys one if the table knows its path.
                name = rel[len(prefix) :]
                cap = table.get(name)
                if cap is None or cap.proc_relpath != rel:
                    continue  # some other driver file; not ours to judge
            elif name not in table:
                raise ParseError(entry.path, f"capability {name!r} is not listed in mig-minors")
            found[name] = entry.path
        todo.extend(reversed(subdirs))
    for cap in table.of_source(Source.NVLINK):
        if os.path.exists(host.path(cap.proc_relpath)):
            found[cap.name] = host.display(cap.proc_relpath)
    return found


def read_capability_file(host: Host, cap: Capability) -> CapabilityFile | None:
    """The parsed proc file of ``cap``, None if absent; its minor must match the table."""
    return _read_capability_file(host.path(cap.proc_relpath), cap)


def _read_capability_file(path: str, cap: Capability) -> CapabilityFile | None:
    text = read_small_optional(path, _MAX_CAPFILE)
    if text is None:
        return None
    cf = capfile.parse_capability_file(text, path)
    if cf.minor != cap.minor:
        raise ParseError(
            path,
            f"DeviceFileMinor {cf.minor} disagrees with {cap.source.value} "
            f"({cap.name} {cap.minor}); refusing",
        )
    return cf


def _existing_files(host: Host, table: CapabilityTable) -> dict[str, CapabilityFile]:
    existing: dict[str, CapabilityFile] = {}
    for name, path in _existing_mig(host, table).items():
        cap = table.get(name)
        assert cap is not None
        cf = _read_capability_file(path, cap)
        if cf is not None:
            existing[name] = cf
    return existing


def load(host: Host, *, lazy: bool = False) -> DriverState:
    """Read and cross-check the driver's majors, minors and capability files.

    ``lazy`` (the OCI hook): read ``/proc/devices`` and the ``mig-minors`` text now, but look
    up a MIG capability's line and proc file only when asked for it (:class:`LazyTable`,
    :class:`LazyFiles`): two capabilities cost two line searches and two small reads instead
    of parsing 4322 lines and every capability file.  Iterating either falls back to the
    full load.
    """
    majors = load_majors(host)
    if lazy:
        path = host.path(f"{capnames.MINORS_DIR}/{Source.MIG.value}")
        text = read_optional(path)
        if text is None:
            load_table(host)  # raises the missing-driver error
        assert text is not None
        table: CapabilityTable = LazyTable(host, text, path)
    else:
        table = load_table(host)
    if majors.caps is None:
        raise DriverError(
            f"{host.path('proc/devices')}: no 'nvidia-caps' character major; "
            "the nvidia driver is not loaded"
        )
    existing = LazyFiles(host, table) if lazy else _existing_files(host, table)
    return DriverState(majors, table, existing)


class LazyTable(CapabilityTable):
    """A :class:`CapabilityTable` that finds MIG capabilities line by line in ``mig-minors``.

    Anything beyond ``get``/``in`` for a MIG name (iteration, ``by_minor``, nvlink and sys
    names) parses every minors file, once.
    """

    def __init__(self, host: Host, mig_text: str, mig_path: str):
        self._host, self._text, self._path = host, mig_text, mig_path
        self._found: dict[str, Capability | None] = {}
        self._full: CapabilityTable | None = None

    def _all(self) -> CapabilityTable:
        if self._full is None:
            self._full = load_table(self._host)
        return self._full

    def get(self, name: str) -> Capability | None:
        if self._full is not None or capnames.parse_mig_name(name) is None:
            return self._all().get(name)
        if name not in self._found:
            self._found[name] = minorsfile.find_mig_capability(self._text, self._path, name)
        return self._found[name]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __len__(self) -> int:
        return len(self._all())

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._all())

    def by_minor(self, minor: int) -> Capability | None:
        return self._all().by_minor(minor)

    def names(self) -> list[str]:
        return self._all().names()

    def of_source(self, source: Source) -> list[Capability]:
        return self._all().of_source(source)


class LazyFiles(Mapping[str, CapabilityFile]):
    """Capability proc files read (and cross-checked) when first looked up."""

    def __init__(self, host: Host, table: CapabilityTable):
        self._host, self._table = host, table
        self._read: dict[str, CapabilityFile | None] = {}
        self._all: dict[str, CapabilityFile] | None = None

    def __getitem__(self, name: str) -> CapabilityFile:
        if self._all is not None:
            return self._all[name]
        if name not in self._read:
            cap = self._table.get(name)
            self._read[name] = None if cap is None else read_capability_file(self._host, cap)
        cf = self._read[name]
        if cf is None:
            raise KeyError(name)
        return cf

    def _everything(self) -> dict[str, CapabilityFile]:
        if self._all is None:
            self._all = _existing_files(self._host, self._table)
        return self._all

    def __iter__(self) -> Iterator[str]:
        return iter(self._everything())

    def __len__(self) -> int:
        return len(self._everything())


# --- applying to the driver's files ------------------------------------------------------------


def write_modify(host: Host, cap: Capability, cf: CapabilityFile, modify: bool) -> CapabilityFile:
    """Set ``DeviceFileModify`` in the capability's proc file; returns the new fields.

    The driver's proc file takes the single line ``DeviceFileModify: 0|1`` (``docs/driver.md``).  A
    simulated root has plain files instead: those are rewritten whole, keeping the other
    fields, by create-then-rename.  Kernel proc files report size 0 (seq_file), which is how
    the two are told apart.
    """
    new = replace(cf, modify=modify)
    if cf.modify == modify:
        return new
    path = host.path(cap.proc_relpath)
    with translate(NodeError, path, f"cannot write DeviceFileModify: {int(modify)}"):
        st = os.stat(path)
        if st.st_mode & 0o170000 == 0o100000 and st.st_size > 0:  # a regular file: simulated
            from capctl.devfs.atomic import replace_file

            replace_file(path, capfile.format_capability_file(new).encode("ascii"),
                         mode=st.st_mode & 0o7777)
        else:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            try:
                os.write(fd, f"DeviceFileModify: {int(modify)}\n".encode("ascii"))
            finally:
                os.close(fd)
    return new

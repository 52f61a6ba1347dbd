"""Pure model of the driver's capabilities: names, minors files, capability files, majors.

Nothing here touches the filesystem: every parser takes the text and the path it came from
(for error messages) and returns plain data.  Strictness is on purpose: capctl creates device
nodes from this data, so a malformed line is an error naming the file and line, never skipped.

Sources (see DESIGN.md): ``/proc/devices``, ``/proc/driver/nvidia-caps/{mig,nvlink,sys}-minors``
and the capability files under ``/proc/driver/nvidia/capabilities/``; MIG User Guide, "Device
Nodes and Capabilities".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from enum import Enum
from functools import cache

from capctl.errors import ParseError
from capctl.record import record, set_field

#: The node directory and name pattern of a capability (root-relative, no leading slash).
CAPS_DEV_DIR = "dev/nvidia-caps"
#: Where the driver publishes the minors files.
MINORS_DIR = "proc/driver/nvidia-caps"
#: Where the driver publishes one file per existing MIG (and sys) capability.
CAPABILITIES_DIR = "proc/driver/nvidia/capabilities"
#: nvlink capabilities live under the nvlink module's own proc directory.
NVLINK_CAPABILITIES_DIR = "proc/driver/nvidia-nvlink/capabilities"

#: Linux dev_t minors are 20 bits (MINORBITS in include/linux/kdev_t.h).
MAX_MINOR = (1 << 20) - 1
#: Linux dev_t majors are 12 bits.
MAX_MAJOR = (1 << 12) - 1

#: Default node modes when the driver publishes no capability file (``sync --all``):
#: DESIGN.md, "256 = 0400 for config, 292 = 0444 otherwise".
CONFIG_MODE = 0o400
DEFAULT_MODE = 0o444

CAPS_MAJOR_NAME = "nvidia-caps"
#: Newer drivers register the GPU nodes as ``nvidia-frontend``; older ones as ``nvidia`` (195).
FRONTEND_MAJOR_NAMES = ("nvidia-frontend", "nvidia")
UVM_MAJOR_NAME = "nvidia-uvm"


class Kind(Enum):
    """What a capability guards."""

    CONFIG = "config"  # MIG management (create/destroy instances)
    MONITOR = "monitor"  # MIG monitoring of all instances
    GI = "gi"  # access to one GPU instance
    CI = "ci"  # access to one compute instance
    OTHER = "other"  # nvlink / sys capabilities (fabric management, imex)


class Source(Enum):
    """Which ``*-minors`` file a capability comes from."""

    MIG = "mig-minors"
    NVLINK = "nvlink-minors"
    SYS = "sys-minors"


_MIG_NAME = re.compile(
    r"(?P<fixed>config|monitor)"
    r"|gpu(?P<gpu>0|[1-9][0-9]{0,3})/gi(?P<gi>0|[1-9][0-9]{0,3})"
    r"(?:/ci(?P<ci>0|[1-9][0-9]{0,3}))?/access"
)
#: nvlink/sys capability names: lower-case words joined by '-' (``fabric-mgmt``).
_OTHER_NAME = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
_MINOR = r"(?P<minor>0|[1-9][0-9]{0,6})"
_MINORS_LINE = re.compile(r"(?P<name>\S+) " + _MINOR)
#: A whole mig-minors line in one match (the file has 4322 of them; one regex per line).
_MIG_MINORS_LINE = re.compile(r"(?P<name>" + _MIG_NAME.pattern + r") " + _MINOR)


def _whole_file(line: re.Pattern[str]) -> re.Pattern[str]:
    """A file of nothing but ``line``s, each ended by a newline (the last one maybe not).

    For :func:`_parse_minors_fast`: one ``fullmatch`` judges all 4322 lines of ``mig-minors``
    without a match object per line.  Named groups cannot repeat, so they become plain ones.
    """
    one = re.sub(r"\(\?P<\w+>", "(?:", line.pattern)
    return re.compile(f"(?:{one}\n)*(?:{one}\n?)?")


@cache
def _minors_file(source: Source) -> re.Pattern[str]:
    """The whole-file pattern of a minors file, compiled on first use (about 0.5 ms for
    both): the hook never parses a whole file, and it imports this module on every start."""
    if source is Source.MIG:
        return _whole_file(_MIG_MINORS_LINE)
    return _whole_file(re.compile(r"(?P<name>" + _OTHER_NAME.pattern + r") " + _MINOR))
_DEVICES_ENTRY = re.compile(r" *(?P<major>[0-9]{1,4}) (?P<name>\S+)")
_CAPFILE_LINE = re.compile(
    r"(?P<key>DeviceFileMinor|DeviceFileMode|DeviceFileModify): (?P<value>[0-9]{1,7})"
)


@record
class MigRef:
    """The parsed parts of a MIG capability name."""

    kind: Kind
    gpu: int | None = None
    gi: int | None = None
    ci: int | None = None


def parse_mig_name(name: str) -> MigRef | None:
    """Return the parts of a MIG capability name, or None if *name* is not one."""
    m = _MIG_NAME.fullmatch(name)
    if m is None:
        return None
    if m["fixed"]:
        return MigRef(Kind(m["fixed"]))
    gpu, gi = int(m["gpu"]), int(m["gi"])
    if m["ci"] is None:
        return MigRef(Kind.GI, gpu, gi)
    return MigRef(Kind.CI, gpu, gi, int(m["ci"]))


def gi_name(gpu_minor: int, gi: int) -> str:
    """``gpu<N>/gi<G>/access``: N is the GPU's *device minor*, not its index."""
    return f"gpu{gpu_minor}/gi{gi}/access"


def ci_name(gpu_minor: int, gi: int, ci: int) -> str:
    """``gpu<N>/gi<G>/ci<C>/access``."""
    return f"gpu{gpu_minor}/gi{gi}/ci{ci}/access"


def is_valid_name(name: str) -> bool:
    """True for a MIG capability name or an nvlink/sys one."""
    return parse_mig_name(name) is not None or _OTHER_NAME.fullmatch(name) is not None


def proc_relpath(name: str, source: Source) -> str:
    """The capability's proc file, root-relative.

    ``config`` -> ``proc/driver/nvidia/capabilities/mig/config``;
    ``gpu0/gi2/access`` -> ``.../capabilities/gpu0/mig/gi2/access``;
    ``gpu0/gi2/ci0/access`` -> ``.../capabilities/gpu0/mig/gi2/ci0/access``.
    """
    if source is Source.NVLINK:
        return f"{NVLINK_CAPABILITIES_DIR}/{name}"
    ref = parse_mig_name(name)
    if ref is None:
        return f"{CAPABILITIES_DIR}/{name}"
    if ref.kind in (Kind.CONFIG, Kind.MONITOR):
        return f"{CAPABILITIES_DIR}/mig/{name}"
    rest = f"gi{ref.gi}/access" if ref.kind is Kind.GI else f"gi{ref.gi}/ci{ref.ci}/access"
    return f"{CAPABILITIES_DIR}/gpu{ref.gpu}/mig/{rest}"


_PROC_MIG = re.compile(
    r"mig/(?P<fixed>config|monitor)"
    r"|gpu(?P<gpu>[0-9]+)/mig/gi(?P<gi>[0-9]+)(?:/ci(?P<ci>[0-9]+))?/access"
)


def name_from_proc_relpath(relpath: str) -> str | None:
    """Inverse of :func:`proc_relpath` for MIG capabilities under ``CAPABILITIES_DIR``."""
    prefix = CAPABILITIES_DIR + "/"
    if not relpath.startswith(prefix):
        return None
    m = _PROC_MIG.fullmatch(relpath[len(prefix) :])
    if m is None:
        return None
    if m["fixed"]:
        return str(m["fixed"])
    if m["ci"] is None:
        return gi_name(int(m["gpu"]), int(m["gi"]))
    return ci_name(int(m["gpu"]), int(m["gi"]), int(m["ci"]))


def node_name(minor: int) -> str:
    """Basename of the node: ``nvidia-cap<minor>``."""
    return f"nvidia-cap{minor}"


def node_relpath(minor: int) -> str:
    """``dev/nvidia-caps/nvidia-cap<minor>`` (root-relative)."""
    return f"{CAPS_DEV_DIR}/{node_name(minor)}"


def default_mode(name: str) -> int:
    """The driver's mode for a capability with no proc file to ask."""
    return CONFIG_MODE if name == "config" else DEFAULT_MODE


@record
class Capability:
    """One line of a ``*-minors`` file (4322 are built on every ``sync``: a positional init)."""

    name: str
    minor: int
    source: Source

    def __init__(self, name: str, minor: int, source: Source) -> None:
        set_field(self, "name", name)
        set_field(self, "minor", minor)
        set_field(self, "source", source)

    @property
    def ref(self) -> MigRef:
        return parse_mig_name(self.name) or MigRef(Kind.OTHER)

    @property
    def proc_relpath(self) -> str:
        return proc_relpath(self.name, self.source)

    @property
    def node_relpath(self) -> str:
        return node_relpath(self.minor)

    @property
    def path(self) -> str:
        """The node path as users see it: ``/dev/nvidia-caps/nvidia-capN``."""
        return "/" + self.node_relpath


@record
class CapabilityFile:
    """The three fields of a capability's proc file."""

    minor: int
    mode: int
    modify: bool


class CapabilityTable:
    """Every capability of the minors files, by name and by minor."""

    def __init__(self, caps: Iterable[Capability]):
        self._by_name: dict[str, Capability] = {}
        self._by_minor: dict[int, Capability] = {}
        self._parts: Mapping[Source, list[Capability]] | None = None
        for cap in caps:
            self._by_name[cap.name] = cap
            self._by_minor[cap.minor] = cap

    @classmethod
    def of(
        cls,
        by_name: dict[str, Capability],
        by_minor: dict[int, Capability],
        parts: Mapping[Source, list[Capability]],
    ) -> CapabilityTable:
        """A table over dicts already built (and checked) by :func:`merge_tables`."""
        table = cls.__new__(cls)
        table._by_name, table._by_minor, table._parts = by_name, by_minor, parts
        return table

    def __len__(self) -> int:
        return len(self._by_name)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._by_name.values())

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def get(self, name: str) -> Capability | None:
        return self._by_name.get(name)

    def by_minor(self, minor: int) -> Capability | None:
        return self._by_minor.get(minor)

    def names(self) -> list[str]:
        return list(self._by_name)

    def of_source(self, source: Source) -> list[Capability]:
        """The capabilities from one ``*-minors`` file, in file order."""
        if self._parts is not None:
            return list(self._parts.get(source, ()))
        return [cap for cap in self._by_name.values() if cap.source is source]


def parse_minors(text: str, path: str, source: Source) -> list[Capability]:
    """Parse a ``*-minors`` file: one ``<name> <minor>`` per line.

    Fails closed on a malformed line, a name that is not a capability name of this file's kind,
    an out-of-range minor and a repeated name or minor.
    """
    fast = _parse_minors_fast(text, source)
    return fast if fast is not None else _parse_minors_lines(text, path, source)


def _parse_minors_fast(text: str, source: Source) -> list[Capability] | None:
    """:func:`parse_minors` for a well-formed file, in a few C-level passes; None if in doubt.

    ``sync`` parses the 4322 lines of ``mig-minors`` on every run.  If the whole text is
    lines of the grammar and nothing else, its blank-separated words are names and minors in
    turn; if no name and no minor repeats and every minor is in range, the file is accepted
    exactly as the line parser would accept it.  Anything else (a bad line, a blank line, a
    repeat, an empty file) returns None, and the line parser decides and names the line.
    """
    if not text or _minors_file(source).fullmatch(text) is None:
        return None
    words = text.split()  # the grammar's only blanks are one space per line and newlines
    names, minors = words[0::2], list(map(int, words[1::2]))
    n = len(names)
    if len(set(names)) != n or len(set(minors)) != n or max(minors) > MAX_MINOR:
        return None
    return list(map(Capability, names, minors, [source] * n))


def _parse_minors_lines(text: str, path: str, source: Source) -> list[Capability]:
    """:func:`parse_minors` line by line: the reference, and every error's file and line."""
    caps: list[Capability] = []
    line_re = _MIG_MINORS_LINE if source is Source.MIG else _MINORS_LINE
    names: dict[str, int] = {}
    minors: dict[int, int] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = line_re.fullmatch(line)
        if m is None:
            m = _MINORS_LINE.fullmatch(line)
            if m is None:
                raise ParseError(
                    path, f"malformed line {line[:80]!r} (want '<name> <minor>')", lineno
                )
            raise ParseError(
                path, f"not a {source.value} capability name: {m['name'][:80]!r}", lineno
            )
        name, minor = m["name"], int(m["minor"])
        if source is not Source.MIG and _OTHER_NAME.fullmatch(name) is None:
            raise ParseError(path, f"not a {source.value} capability name: {name[:80]!r}", lineno)
        if minor > MAX_MINOR:
            raise ParseError(path, f"minor {minor} out of range", lineno)
        if name in names:
            raise ParseError(path, f"{name!r} repeated (first on line {names[name]})", lineno)
        if minor in minors:
            raise ParseError(
                path, f"minor {minor} repeated (first on line {minors[minor]})", lineno
            )
        names[name] = lineno
        minors[minor] = lineno
        caps.append(Capability(name, minor, source))
    return caps


def find_mig_capability(text: str, path: str, name: str) -> Capability | None:
    """The ``mig-minors`` line of one capability, without parsing the other 4321.  Pure.

    For the OCI hook, which needs two lines of the file.  The line found is held to the same
    rules as :func:`parse_minors` (a valid name, an in-range minor, the name and the minor
    each on one line only); the rest of the file is not judged.  None if ``name`` is absent.
    """
    key = f"{name} "
    if text.startswith(key):
        start = 0
    else:
        start = text.find(f"\n{key}") + 1
        if start == 0:
            return None
    end = text.find("\n", start)
    line = text[start:] if end < 0 else text[start:end]

    def fail(message: str) -> ParseError:
        return ParseError(path, message, text.count("\n", 0, start) + 1)

    m = _MIG_MINORS_LINE.fullmatch(line)
    if m is None or m["name"] != name:
        raise fail(f"malformed line {line[:80]!r} (want '<name> <minor>')")
    minor = int(m["minor"])
    if minor > MAX_MINOR:
        raise fail(f"minor {minor} out of range")
    if text.find(f"\n{key}", start) >= 0:
        raise fail(f"{name!r} repeated")
    # Names hold no blanks, so " <minor>" ending a line is that line's minor field.
    tail = f" {minor}"
    if text.count(f"{tail}\n") + text.endswith(tail) != 1:
        raise fail(f"minor {minor} repeated")
    return Capability(name, minor, Source.MIG)


def merge_tables(parts: Mapping[Source, list[Capability]], where: str) -> CapabilityTable:
    """Join the minors files into one table; all share one major, so minors must not clash."""
    by_name: dict[str, Capability] = {}
    by_minor: dict[int, Capability] = {}
    for caps in parts.values():
        these = {cap.minor: cap for cap in caps}
        if len(these) != len(caps) or not by_minor.keys().isdisjoint(these):
            _refuse_shared_minor(parts, where)
        by_minor.update(these)
        by_name.update({cap.name: cap for cap in caps})
    return CapabilityTable.of(by_name, by_minor, dict(parts))


def _refuse_shared_minor(parts: Mapping[Source, list[Capability]], where: str) -> None:
    """Raise naming the first two capabilities, in file order, that share a minor."""
    seen: dict[int, Capability] = {}
    for caps in parts.values():
        for cap in caps:
            other = seen.get(cap.minor)
            if other is not None:
                raise ParseError(
                    where,
                    f"minor {cap.minor} given to both {other.name!r} ({other.source.value}) "
                    f"and {cap.name!r} ({cap.source.value})",
                )
            seen[cap.minor] = cap
    raise AssertionError("no shared minor")  # pragma: no cover: called only on a clash


def parse_capability_file(text: str, path: str) -> CapabilityFile:
    """Parse a capability proc file: ``DeviceFileMinor``, ``DeviceFileMode`` (decimal),
    ``DeviceFileModify`` (0 or 1), each exactly once."""
    fields: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = _CAPFILE_LINE.fullmatch(line.strip())
        if m is None:
            raise ParseError(path, f"malformed line {line[:80]!r}", lineno)
        if m["key"] in fields:
            raise ParseError(path, f"{m['key']} repeated", lineno)
        fields[m["key"]] = int(m["value"])
    missing = [
        k for k in ("DeviceFileMinor", "DeviceFileMode", "DeviceFileModify") if k not in fields
    ]
    if missing:
        raise ParseError(path, f"missing {', '.join(missing)}")
    minor, mode, modify = (
        fields["DeviceFileMinor"],
        fields["DeviceFileMode"],
        fields["DeviceFileModify"],
    )
    if minor > MAX_MINOR:
        raise ParseError(path, f"DeviceFileMinor {minor} out of range")
    if mode > 0o777:
        raise ParseError(path, f"DeviceFileMode {mode} is not a permission mode (want <= 511)")
    if modify not in (0, 1):
        raise ParseError(path, f"DeviceFileModify {modify} (want 0 or 1)")
    return CapabilityFile(minor, mode, bool(modify))


def format_capability_file(cf: CapabilityFile) -> str:
    """The proc file's text, as the driver prints it."""
    return (
        f"DeviceFileMinor: {cf.minor}\nDeviceFileMode: {cf.mode}\n"
        f"DeviceFileModify: {int(cf.modify)}\n"
    )


@record
class Majors:
    """The character majors of the NVIDIA drivers, from ``/proc/devices``."""

    caps: int | None
    frontend: int | None
    uvm: int | None


def parse_proc_devices(text: str, path: str) -> dict[str, int]:
    """Parse the "Character devices:" section of ``/proc/devices`` into name -> major.

    The "Block devices:" section is ignored (block majors share numbers with char majors).
    A malformed line in the character section, or text without that section, is an error.
    """
    chars: dict[str, int] = {}
    section: str | None = None
    saw_char = False
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if line == "Character devices:":
            section, saw_char = "char", True
            continue
        if line == "Block devices:":
            section = "block"
            continue
        if section != "char":
            if section is None:
                raise ParseError(path, f"unexpected line before a section {line[:80]!r}", lineno)
            continue
        m = _DEVICES_ENTRY.fullmatch(line)
        if m is None:
            raise ParseError(path, f"malformed line {line[:80]!r} (want '<major> <name>')", lineno)
        major = int(m["major"])
        if major > MAX_MAJOR:
            raise ParseError(path, f"major {major} out of range", lineno)
        chars.setdefault(m["name"], major)
    if not saw_char:
        raise ParseError(path, "no 'Character devices:' section")
    return chars


def nvidia_majors(chars: Mapping[str, int]) -> Majors:
    """Pick the NVIDIA majors out of a parsed ``/proc/devices``."""
    frontend = next((chars[n] for n in FRONTEND_MAJOR_NAMES if n in chars), None)
    return Majors(chars.get(CAPS_MAJOR_NAME), frontend, chars.get(UVM_MAJOR_NAME))

"""Pure model of the driver's capabilities: names, minors files, capability files, majors.

Nothing here touches the filesystem: every parser takes the text and the path it came from
(for error messages) and returns plain data.  Strictness is on purpose: capctl creates device
nodes from this data, so a malformed line is an error naming the file and line, never skipped.

Sources (see DESIGN.md): ``/proc/devices``, ``/proc/driver/nvidia-caps/{mig,nvlink,sys}-minors``
and the capability files under ``/proc/driver/nvidia/capabilities/``; MIG User Guide, "Device
Nodes and Capabilities".
"""

from __future__ import annotations

from capctl.errors import ParseError
from capctl.litenum import Enum
from capctl.record import record, set_field

TYPE_CHECKING = False
if TYPE_CHECKING:
    import re
    from collections.abc import Iterable, Mapping

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


# --- line grammars ----------------------------------------------------------------------------
#
# One small parser per line kind, with str methods instead of regular expressions: the OCI hook
# imports this module on every container start, and ``import re`` alone costs it about 5 ms
# (issue 5).  Each parser accepts exactly what its grammar (a regex in its docstring) does;
# the tests hold them to those regexes.  Numbers are ASCII digits only: ``str.isdigit`` alone
# takes '²' and ``int`` takes '٣'.

_LOWER_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"


def _number(text: str, width: int) -> int:
    """``0|[1-9][0-9]{0,width-1}`` as an int (no leading zero, at most ``width`` digits);
    -1 if ``text`` is not one."""
    if (
        0 < len(text) <= width
        and text.isascii()
        and text.isdigit()
        and (text[0] != "0" or len(text) == 1)
    ):
        return int(text)
    return -1


def _digits(text: str) -> int:
    """``[0-9]+`` (leading zeros allowed, any length) as an int; -1 if ``text`` is not one."""
    return int(text) if text.isascii() and text.isdigit() else -1


def _is_word(text: str) -> bool:
    r"""``\S+``: not empty, and no character that ``re`` (and ``str.split``) calls white space."""
    return text.split() == [text]


def _is_other_name(name: str) -> bool:
    """``[a-z][a-z0-9]*(?:-[a-z0-9]+)*``: an nvlink/sys capability name, lower-case words
    joined by single '-' (``fabric-mgmt``)."""
    return "a" <= name[:1] <= "z" and all(
        part and not part.strip(_LOWER_ALNUM) for part in name.split("-")
    )


def _minors_line(line: str) -> tuple[str, int] | None:
    r"""``(\S+) (0|[1-9][0-9]{0,6})``: a ``*-minors`` line's name and minor, None if malformed.

    Whether the name is one of its file's kind is :func:`_is_name_of`'s question.  The one
    line parser of both :func:`parse_minors` and :func:`find_mig_capability`.
    """
    name, _, minor_text = line.partition(" ")
    minor = _number(minor_text, 7)
    if minor < 0 or not _is_word(name):
        return None
    return name, minor


def _is_name_of(name: str, source: Source) -> bool:
    """True if ``name`` may appear in ``source``'s minors file."""
    if source is Source.MIG:
        return _mig_name(name) is not None
    return _is_other_name(name)


#: ``*-minors`` line grammars for the whole-file fast path (:func:`_minors_file`), the same
#: languages as :func:`_minors_line` + :func:`_is_name_of`.  Plain strings: compiled on first use.
_SMALL_RE = "(?:0|[1-9][0-9]{0,3})"
_MIG_LINE_RE = (
    "(?:(?:config|monitor)"
    f"|gpu{_SMALL_RE}/gi{_SMALL_RE}(?:/ci{_SMALL_RE})?/access)"
    " (?:0|[1-9][0-9]{0,6})"
)
_OTHER_LINE_RE = "(?:[a-z][a-z0-9]*(?:-[a-z0-9]+)*) (?:0|[1-9][0-9]{0,6})"
#: Whole-file patterns by source, compiled by :func:`_minors_file` when ``sync`` first needs one.
_minors_files: dict[Source, re.Pattern[str]] = {}


def _minors_file(source: Source) -> re.Pattern[str]:
    """A whole minors file of nothing but lines of ``source``'s grammar, each ended by a newline
    (the last one maybe not).

    For :func:`_parse_minors_fast`: one ``fullmatch`` judges all 4322 lines of ``mig-minors``
    without a match object per line.  Compiled on first use (about 0.5 ms for both, and
    ``import re``): the hook never parses a whole file.
    """
    pattern = _minors_files.get(source)
    if pattern is None:
        import re

        one = _MIG_LINE_RE if source is Source.MIG else _OTHER_LINE_RE
        pattern = _minors_files[source] = re.compile(f"(?:{one}\n)*(?:{one}\n?)?")
    return pattern


def _devices_entry(line: str) -> tuple[int, str] | None:
    r"""`` *([0-9]{1,4}) (\S+)``: a ``/proc/devices`` entry's major and name (leading blanks
    and zeros allowed), None if malformed."""
    major_text, _, name = line.lstrip(" ").partition(" ")
    if len(major_text) > 4 or not _is_word(name):
        return None
    major = _digits(major_text)
    return None if major < 0 else (major, name)


_CAPFILE_KEYS = ("DeviceFileMinor", "DeviceFileMode", "DeviceFileModify")


def _capfile_line(line: str) -> tuple[str, int] | None:
    """``(DeviceFileMinor|DeviceFileMode|DeviceFileModify): ([0-9]{1,7})``: a capability file
    line's key and value, None if malformed."""
    key, _, value_text = line.partition(": ")
    if key not in _CAPFILE_KEYS or len(value_text) > 7:
        return None
    value = _digits(value_text)
    return None if value < 0 else (key, value)


@record
class MigRef:
    """The parsed parts of a MIG capability name."""

    kind: Kind
    gpu: int | None = None
    gi: int | None = None
    ci: int | None = None


def parse_mig_name(name: str) -> MigRef | None:
    """Return the parts of a MIG capability name, or None if *name* is not one."""
    fields = _mig_name(name)
    return None if fields is None else MigRef(*fields)


def _mig_name(name: str) -> tuple[Kind, int | None, int | None, int | None] | None:
    """:func:`parse_mig_name` as a tuple (no record built: the line parser asks 4322 times).

    The grammar: ``config|monitor|gpu<N>/gi<N>(/ci<N>)?/access``, each ``<N>`` being
    ``0|[1-9][0-9]{0,3}``.
    """
    if name == "config":
        return Kind.CONFIG, None, None, None
    if name == "monitor":
        return Kind.MONITOR, None, None, None
    parts = name.split("/")
    n = len(parts)
    if not 3 <= n <= 4 or parts[-1] != "access" or parts[0][:3] != "gpu" or parts[1][:2] != "gi":
        return None
    gpu, gi = _number(parts[0][3:], 4), _number(parts[1][2:], 4)
    if gpu < 0 or gi < 0:
        return None
    if n == 3:
        return Kind.GI, gpu, gi, None
    ci = _number(parts[2][2:], 4) if parts[2][:2] == "ci" else -1
    return None if ci < 0 else (Kind.CI, gpu, gi, ci)


def gi_name(gpu_minor: int, gi: int) -> str:
    """``gpu<N>/gi<G>/access``: N is the GPU's *device minor*, not its index."""
    return f"gpu{gpu_minor}/gi{gi}/access"


def ci_name(gpu_minor: int, gi: int, ci: int) -> str:
    """``gpu<N>/gi<G>/ci<C>/access``."""
    return f"gpu{gpu_minor}/gi{gi}/ci{ci}/access"


def is_valid_name(name: str) -> bool:
    """True for a MIG capability name or an nvlink/sys one."""
    return _mig_name(name) is not None or _is_other_name(name)


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


def name_from_proc_relpath(relpath: str) -> str | None:
    """Inverse of :func:`proc_relpath` for MIG capabilities under ``CAPABILITIES_DIR``.

    Below that directory: ``mig/(config|monitor)`` or
    ``gpu<N>/mig/gi<N>(/ci<N>)?/access``, each ``<N>`` being ``[0-9]+`` (any number of
    digits, leading zeros too: the name built from it is the canonical one).
    """
    prefix = CAPABILITIES_DIR + "/"
    if not relpath.startswith(prefix):
        return None
    rest = relpath[len(prefix) :]
    if rest == "mig/config" or rest == "mig/monitor":
        return rest[4:]
    parts = rest.split("/")
    n = len(parts)
    if (
        not 4 <= n <= 5
        or parts[1] != "mig"
        or parts[-1] != "access"
        or parts[0][:3] != "gpu"
        or parts[2][:2] != "gi"
    ):
        return None
    gpu, gi = _digits(parts[0][3:]), _digits(parts[2][2:])
    if gpu < 0 or gi < 0:
        return None
    if n == 4:
        return gi_name(gpu, gi)
    ci = _digits(parts[3][2:]) if parts[3][:2] == "ci" else -1
    return None if ci < 0 else ci_name(gpu, gi, ci)


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
    names: dict[str, int] = {}
    minors: dict[int, int] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parsed = _minors_line(line)
        if parsed is None:
            raise ParseError(path, f"malformed line {line[:80]!r} (want '<name> <minor>')", lineno)
        name, minor = parsed
        if not _is_name_of(name, source):
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

    parsed = _minors_line(line)
    if parsed is None or parsed[0] != name or _mig_name(name) is None:
        raise fail(f"malformed line {line[:80]!r} (want '<name> <minor>')")
    minor = parsed[1]
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
        parsed = _capfile_line(line.strip())
        if parsed is None:
            raise ParseError(path, f"malformed line {line[:80]!r}", lineno)
        key, value = parsed
        if key in fields:
            raise ParseError(path, f"{key} repeated", lineno)
        fields[key] = value
    missing = [k for k in _CAPFILE_KEYS if k not in fields]
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
        entry = _devices_entry(line)
        if entry is None:
            raise ParseError(path, f"malformed line {line[:80]!r} (want '<major> <name>')", lineno)
        major, name = entry
        if major > MAX_MAJOR:
            raise ParseError(path, f"major {major} out of range", lineno)
        chars.setdefault(name, major)
    if not saw_char:
        raise ParseError(path, "no 'Character devices:' section")
    return chars


def nvidia_majors(chars: Mapping[str, int]) -> Majors:
    """Pick the NVIDIA majors out of a parsed ``/proc/devices``."""
    frontend = next((chars[n] for n in FRONTEND_MAJOR_NAMES if n in chars), None)
    return Majors(chars.get(CAPS_MAJOR_NAME), frontend, chars.get(UVM_MAJOR_NAME))

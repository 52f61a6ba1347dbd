"""Parse the driver's ``*-minors`` files into a :class:`CapabilityTable`.  Pure.

One parser (:func:`parse_minors`) with a whole-file fast path for ``sync`` and a one-line
lookup (:func:`find_mig_capability`) for the hook, which needs two lines of 4322; both hold a
line to the same rules.  Strict on purpose: capctl creates device nodes from this data, so a
malformed line is an error naming the file and line, never skipped (``docs/driver.md``).
"""

from __future__ import annotations

from capctl._lite.record import Record, set_field
from capctl.devnum import MAX_MINOR
from capctl.driver.capnames import (
    Kind,
    MigRef,
    Source,
    _is_name_of,
    _is_word,
    _mig_name,
    _number,
    node_relpath,
    parse_mig_name,
    proc_relpath,
)
from capctl.errors import ParseError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import re
    from collections.abc import Iterable, Mapping


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


#: ``*-minors`` line grammars for the whole-file fast path (:func:`_minors_file`), the same
#: languages as :func:`_minors_line` + :func:`_is_name_of`.  Plain strings: compiled on first use.
_SMALL_RE = "(?:0|[1-9][0-9]{0,3})"
_MIG_LINE_RE = (
    "(?:(?:config|monitor)"
    f"|gpu{_SMALL_RE}/gi{_SMALL_RE}(?:/ci{_SMALL_RE})?/access)"
    " (?:0|[1-9][0-9]{0,6})"
)
_OTHER_SEGMENT_RE = "[a-z][a-z0-9]*(?:-[a-z0-9]+)*"
_OTHER_LINE_RE = f"(?:{_OTHER_SEGMENT_RE}(?:/{_OTHER_SEGMENT_RE})*) (?:0|[1-9][0-9]{{0,6}})"
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


class Capability(Record):
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
    if source is not Source.MIG and any(_mig_name(name) is not None for name in names):
        return None  # a MIG name in another file: the line parser refuses it
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

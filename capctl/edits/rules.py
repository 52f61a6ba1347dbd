"""The one device-rule model: types, access sets and rules, parsed and printed.

Pure: no file or kernel access.  Everything that grants or revokes device access (cgroup v1
files, the cgroup v2 eBPF generator, the edits every delivery consumes) speaks in
:class:`DeviceRule`; :mod:`capctl.cgroup.emulator` gives rule lists cgroup v1 semantics.
"""

from __future__ import annotations

# collections.abc is a submodule: importing it runs collections/__init__ (about 1 ms at
# every hook start; docs/hook-startup.md).  _collections_abc holds the very same classes and is loaded
# at every start already (os imports it).
from capctl._lite.litenum import StrEnum
from capctl._lite.record import Record
from capctl._lite.record import set_field as _set
from capctl.devnum import MAX_MAJOR, MAX_MINOR
from capctl.errors import ParseError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from collections.abc import Set as AbstractSet
    from typing import Any


class DeviceType(StrEnum):
    """Device type as written in ``devices.list``: char, block or all."""

    CHAR = "c"
    BLOCK = "b"
    ALL = "a"


class Access(frozenset[str]):
    """A set of the access letters ``r`` (read), ``w`` (write), ``m`` (mknod).

    Frozen; the set operators (``|``, ``&``, ``-``) return :class:`Access` again.  ``str()``
    gives the canonical ``rwm`` order used by the kernel.
    """

    LETTERS = "rwm"

    def __new__(cls, letters: Iterable[str] = "") -> Access:
        items = frozenset(letters)
        bad = items - frozenset(cls.LETTERS)
        if bad:
            raise ValueError(f"invalid access letters {''.join(sorted(bad))!r}")
        return super().__new__(cls, items)

    @classmethod
    def parse(cls, text: str) -> Access:
        """Parse an access string (``r``, ``rw``, ``rwm``...); each letter at most once."""
        if not _is_access(text) or len(set(text)) != len(text):
            raise ValueError(f"invalid access {text!r}")
        return cls(text)

    def __or__(self, other: AbstractSet[Any]) -> Access:
        return Access(frozenset.__or__(self, other))

    def __and__(self, other: AbstractSet[Any]) -> Access:
        return Access(frozenset.__and__(self, other))

    def __sub__(self, other: AbstractSet[Any]) -> Access:
        return Access(frozenset.__sub__(self, other))

    @property
    def is_full(self) -> bool:
        return len(self) == len(self.LETTERS)

    def __str__(self) -> str:
        return "".join(c for c in self.LETTERS if c in self)

    def __repr__(self) -> str:
        return f"Access({str(self)!r})"


R = Access("r")
RW = Access("rw")
RWM = Access("rwm")

# The parsers of this module use str methods rather than re (5 ms to import at every hook
# start; docs/hook-startup.md), each exactly as strict as the expression in its comment; tests/test_rules.py
# holds them to those expressions.


def _is_access(text: str) -> bool:
    # [rwm]{1,3}
    return 0 < len(text) <= 3 and not text.strip(Access.LETTERS)


class DeviceRule(Record):
    """One device cgroup rule: ``allow``/deny *access* to (type, major, minor).

    ``major``/``minor`` ``None`` is the wildcard ``*``.  A rule with type ``a`` must be the
    whole-world rule ``a *:* rwm`` (the kernel ignores everything after the ``a``).
    """

    type: DeviceType
    major: int | None
    minor: int | None
    access: Access
    allow: bool = True

    def __init__(
        self,
        type: DeviceType,
        major: int | None,
        minor: int | None,
        access: Access,
        allow: bool = True,
    ):
        _set(self, "type", type)
        _set(self, "major", major)
        _set(self, "minor", minor)
        _set(self, "access", access)
        _set(self, "allow", allow)
        if not access:
            raise ValueError(f"rule {self.line()!r} has no access")
        for name, value, top in (("major", major, MAX_MAJOR), ("minor", minor, MAX_MINOR)):
            if value is not None and not 0 <= value <= top:
                raise ValueError(f"{name} {value} out of range 0..{top}")
        if type is DeviceType.ALL and not (major is None and minor is None and access.is_full):
            raise ValueError(f"type 'a' rules must be 'a *:* rwm', not {self.line()!r}")

    @property
    def key(self) -> tuple[DeviceType, int | None, int | None]:
        return (self.type, self.major, self.minor)

    def line(self) -> str:
        """The v1 ``devices.list``/``devices.allow`` form, e.g. ``c 195:* rw``."""
        major = "*" if self.major is None else str(self.major)
        minor = "*" if self.minor is None else str(self.minor)
        return f"{self.type.value} {major}:{minor} {self.access}"

    def matches(self, type_: DeviceType, major: int, minor: int) -> bool:
        """Whether this rule's (type, major, minor) covers the concrete device."""
        return (
            self.type in (DeviceType.ALL, type_)
            and self.major in (None, major)
            and self.minor in (None, minor)
        )

    def __str__(self) -> str:
        return f"{'allow' if self.allow else 'deny'} {self.line()}"


def char(major: int, minor: int | None, access: str | Access, allow: bool = True) -> DeviceRule:
    """Shorthand for a char-device rule (``access`` as letters or :class:`Access`)."""
    acc = access if isinstance(access, Access) else Access.parse(access)
    return DeviceRule(DeviceType.CHAR, major, minor, acc, allow)


ALLOW_ALL = DeviceRule(DeviceType.ALL, None, None, RWM, True)
DENY_ALL = DeviceRule(DeviceType.ALL, None, None, RWM, False)


def _is_number(text: str) -> bool:
    # \*|[0-9]+ (ASCII digits: str.isdigit() alone takes '²')
    return text == "*" or (text.isascii() and text.isdigit())


def _number(text: str) -> int | None:
    return None if text == "*" else int(text)


def parse_rule(text: str, *, allow: bool = True) -> DeviceRule:
    """Parse one ``devices.list`` style line; raise :class:`ValueError` when malformed.

    The line as the kernel's ``devcgroup_seq_show()`` prints it:
    ``([abc]) (\\*|[0-9]+):(\\*|[0-9]+) ([rwm]{1,3})``.
    """
    fields = text.split(" ")
    if len(fields) == 3:
        type_, numbers, access = fields
        major, _, minor = numbers.partition(":")  # no ':': minor "" is refused
        if (
            type_ in ("a", "b", "c")
            and _is_number(major)
            and _is_number(minor)
            and _is_access(access)
        ):
            return DeviceRule(
                DeviceType(type_), _number(major), _number(minor), Access.parse(access), allow
            )
    raise ValueError(f"malformed device rule {text!r}")


def parse_devices_list(text: str, path: str = "devices.list") -> list[DeviceRule]:
    """Parse the content of a v1 ``devices.list`` into allow rules; fail closed.

    Every non-empty line must be a valid rule; the result is in file order.
    """
    rules = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line:
            continue
        try:
            rules.append(parse_rule(line))
        except ValueError as err:
            raise ParseError(path, str(err), lineno) from err
    return rules


def iter_lines(rules: Iterable[DeviceRule]) -> Iterator[str]:
    """The ``devices.list`` lines of *rules*."""
    return (r.line() for r in rules)

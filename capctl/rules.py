"""The one device-rule model: types, access sets, rules and a cgroup v1 emulator.

Pure: no file or kernel access.  Everything that grants or revokes device access (cgroup v1
files, the cgroup v2 eBPF generator, the OCI hook) speaks in :class:`DeviceRule`.

The emulator follows the semantics of the kernel's v1 devices controller
(``security/device_cgroup.c``) the way runc's ``devices/devices_emulator.go`` models them:
a cgroup has a default policy (allow all = "blacklist", deny all = "whitelist") and a set of
exceptions keyed by (type, major, minor); writing a rule whose verdict equals the default
removes access bits from the exactly matching exception, otherwise it adds them.  The kernel
ignores requests that would only make sense against a *partially* matching wildcard exception
(it cannot split ``c 195:* rw`` to deny ``c 195:0 r``); the emulator refuses them instead, so
capctl never believes in a restriction the kernel does not enforce.
"""

from __future__ import annotations

# collections.abc is a submodule: importing it runs collections/__init__ (about 1 ms at
# every hook start, issue 5).  _collections_abc holds the very same classes and is loaded
# at every start already (os imports it).
from _collections_abc import Mapping

from capctl.errors import CgroupError, ParseError
from capctl.litenum import StrEnum
from capctl.record import record
from capctl.record import set_field as _set

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence
    from collections.abc import Set as AbstractSet
    from typing import Any

# Linux dev_t: 12-bit major, 20-bit minor (include/linux/kdev_t.h, MINORBITS = 20).
MAJOR_MAX = (1 << 12) - 1
MINOR_MAX = (1 << 20) - 1


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
# start, issue 5), each exactly as strict as the expression in its comment; tests/test_rules.py
# holds them to those expressions.


def _is_access(text: str) -> bool:
    # [rwm]{1,3}
    return 0 < len(text) <= 3 and not text.strip(Access.LETTERS)


@record
class DeviceRule:
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
        for name, value, top in (("major", major, MAJOR_MAX), ("minor", minor, MINOR_MAX)):
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


# --- OCI spec --------------------------------------------------------------------------------

# runc's default allowed devices (libcontainer/specconv/spec_linux.go, AllowedDevices), each
# with the node path that makes runc leave it out when linux.devices names that path.  The
# same in runc 1.1.x (Debian bookworm: 1.1.5) and >= 1.2.4; 1.2.0-1.2.3 lacked c 10:200
# (PR #3468, restored by #4555); c 5:1 (/dev/console) went before 1.0.0 (PR #2391).  Needed
# to rebuild a container's whole filter when its program cannot be read.
_RUNC_DEFAULTS: tuple[tuple[str | None, DeviceRule], ...] = (
    (None, DeviceRule(DeviceType.CHAR, None, None, Access("m"))),
    (None, DeviceRule(DeviceType.BLOCK, None, None, Access("m"))),
    ("/dev/null", char(1, 3, "rwm")),
    ("/dev/random", char(1, 8, "rwm")),
    ("/dev/full", char(1, 7, "rwm")),
    ("/dev/tty", char(5, 0, "rwm")),
    ("/dev/zero", char(1, 5, "rwm")),
    ("/dev/urandom", char(1, 9, "rwm")),
    (None, char(136, None, "rwm")),  # /dev/pts/*
    (None, char(5, 2, "rwm")),  # /dev/ptmx
    (None, char(10, 200, "rwm")),  # /dev/net/tun
)
RUNC_DEFAULT_RULES: tuple[DeviceRule, ...] = tuple(rule for _path, rule in _RUNC_DEFAULTS)


def _spec_int(entry: Mapping[str, Any], key: str, where: str) -> int | None:
    value = entry.get(key)
    if value is None or value == -1:  # OCI: absent (or runc's -1) means wildcard
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise ParseError(where, f"{key} must be an integer, not {value!r}")
    return value


def oci_device_rules(config: Mapping[str, Any], where: str = "config.json") -> list[DeviceRule]:
    """The device cgroup rules a runc-like runtime derives from an OCI ``config.json``.

    As runc builds them: ``linux.resources.devices``, then the runtime defaults
    (:data:`RUNC_DEFAULT_RULES`) less those whose path ``linux.devices`` names.  The
    ``linux.devices`` nodes themselves get no rule (runc only creates them; the spec allows
    them in ``linux.resources.devices``, as Docker, containerd and podman do).  Fails closed
    (:class:`ParseError`) on anything malformed, including an empty ``access``, which runc
    refuses too.
    """
    linux = config.get("linux", {})
    if not isinstance(linux, Mapping):
        raise ParseError(where, "linux must be an object")
    resources = linux.get("resources", {})
    if not isinstance(resources, Mapping):
        raise ParseError(where, "linux.resources must be an object")
    rules: list[DeviceRule] = []
    for i, entry in enumerate(
        _spec_list(resources.get("devices"), where, "linux.resources.devices")
    ):
        here = f"{where}: linux.resources.devices[{i}]"
        allow = entry.get("allow")
        if not isinstance(allow, bool):
            raise ParseError(here, "allow must be true or false")
        type_text = entry.get("type", "a") or "a"
        access_text = entry.get("access")
        if not isinstance(access_text, str) or not access_text:
            raise ParseError(here, "access must be a non-empty string (runc refuses it too)")
        try:
            rules.append(
                DeviceRule(
                    DeviceType(type_text),
                    _spec_int(entry, "major", here),
                    _spec_int(entry, "minor", here),
                    Access.parse(access_text),
                    allow,
                )
            )
        except ValueError as err:
            raise ParseError(here, str(err)) from err
    node_paths: set[str] = set()
    for i, entry in enumerate(_spec_list(linux.get("devices"), where, "linux.devices")):
        here = f"{where}: linux.devices[{i}]"
        type_text = entry.get("type")
        if type_text not in ("c", "b", "u", "p"):
            raise ParseError(here, f"type must be c, b, u or p, not {type_text!r}")
        path = entry.get("path")
        if not isinstance(path, str) or not path.startswith("/"):
            raise ParseError(here, "path must be an absolute path")
        if type_text != "p":
            major, minor = _spec_int(entry, "major", here), _spec_int(entry, "minor", here)
            if major is None or minor is None:
                raise ParseError(here, "a device node needs a major and a minor")
        node_paths.add(path)
    rules.extend(rule for path, rule in _RUNC_DEFAULTS if path is None or path not in node_paths)
    return rules


def _spec_list(value: object, where: str, name: str) -> list[Mapping[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(e, Mapping) for e in value):
        raise ParseError(where, f"{name} must be a list of objects")
    return value


# --- cgroup v1 emulator ------------------------------------------------------------------------

Key = tuple[DeviceType, int | None, int | None]


def _sort_key(key: Key) -> tuple[str, int, int]:
    t, major, minor = key
    return (t.value, -1 if major is None else major, -1 if minor is None else minor)


class Emulator:
    """A model of one v1 devices cgroup: default policy plus exceptions.

    ``default_allow`` True is "blacklist" mode (``a *:* rwm`` in ``devices.list``);
    exceptions then deny.  False is "whitelist" mode; exceptions allow.  Mutable; equal
    when both fields are (unhashable).
    """

    __slots__ = ("default_allow", "exceptions")

    def __init__(self, default_allow: bool = True, exceptions: dict[Key, Access] | None = None):
        self.default_allow = default_allow
        self.exceptions: dict[Key, Access] = {} if exceptions is None else exceptions

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Emulator) or type(other) is not type(self):
            return NotImplemented
        return (self.default_allow, self.exceptions) == (other.default_allow, other.exceptions)

    def __repr__(self) -> str:
        return f"Emulator(default_allow={self.default_allow!r}, exceptions={self.exceptions!r})"

    @classmethod
    def from_rules(cls, rules: Iterable[DeviceRule], *, default_allow: bool = True) -> Emulator:
        emu = cls(default_allow=default_allow)
        for rule in rules:
            emu.apply(rule)
        return emu

    @classmethod
    def from_list(cls, text: str, path: str = "devices.list") -> Emulator:
        """The state a ``devices.list`` shows.

        The kernel prints only ``a *:* rwm`` for an allow-all cgroup, hiding any deny
        exceptions, so a list with that line must have nothing else (and is then assumed to
        have no exceptions, as runc does).
        """
        rules = parse_devices_list(text, path)
        if ALLOW_ALL in rules:
            if len(rules) != 1:
                raise ParseError(path, "'a *:* rwm' listed together with other rules")
            return cls(default_allow=True)
        emu = cls(default_allow=False)
        for rule in rules:
            emu.apply(rule)
        return emu

    def copy(self) -> Emulator:
        return Emulator(self.default_allow, dict(self.exceptions))

    @property
    def is_allow_all(self) -> bool:
        """Everything is allowed (a privileged container's cgroup)."""
        return self.default_allow and not self.exceptions

    def rules(self) -> list[DeviceRule]:
        """The exceptions as rules in a stable order (verdict opposite to the default)."""
        return [
            DeviceRule(t, major, minor, self.exceptions[(t, major, minor)], not self.default_allow)
            for (t, major, minor) in sorted(self.exceptions, key=_sort_key)
        ]

    def listing(self) -> list[DeviceRule]:
        """What the kernel's ``devices.list`` shows for this state."""
        if self.default_allow:
            return [ALLOW_ALL]
        return self.rules()

    def apply(self, rule: DeviceRule, *, strict: bool = True) -> None:
        """Apply one write to ``devices.allow`` (rule.allow) or ``devices.deny``.

        *strict* (the default) refuses removals a wider wildcard exception would make
        ineffective; :meth:`transition` turns it off, since it checks the end state instead.
        """
        if rule.type is DeviceType.ALL:
            self.default_allow = rule.allow
            self.exceptions = {}
            return
        if rule.allow == self.default_allow:
            self._remove(rule, strict)
        else:
            self.exceptions[rule.key] = self.exceptions.get(rule.key, Access()) | rule.access

    def _remove(self, rule: DeviceRule, strict: bool) -> None:
        # The kernel's dev_exception_rm() only touches the exactly matching exception: a request
        # that a partially matching wildcard exception still covers would silently not take
        # effect.  Refuse it (runc: "cannot punch hole in existing wildcard rule").
        t, major, minor = rule.key
        for wider in ((t, None, minor), (t, major, None), (t, None, None)):
            if wider == rule.key or not strict:
                continue
            overlap = self.exceptions.get(wider, Access()) & rule.access
            if overlap:
                w = DeviceRule(t, wider[1], wider[2], overlap, not self.default_allow)
                raise CgroupError(
                    f"rule '{rule}' cannot take effect on cgroup v1: wildcard rule '{w}'"
                    " covers it and the kernel cannot punch a hole into a wildcard"
                )
        left = self.exceptions.get(rule.key, Access()) - rule.access
        if left:
            self.exceptions[rule.key] = left
        else:
            self.exceptions.pop(rule.key, None)

    def allows(
        self, type_: DeviceType, major: int | None, minor: int | None, access: Access
    ) -> bool:
        """Whether one access of *access* to the device (or wildcard range) is allowed.

        Kernel semantics (``match_exception()`` in security/device_cgroup.c): in a whitelist,
        a single exception must cover the device and every requested bit (``O_RDWR`` needs
        ``rw`` in one exception, ``r`` and ``w`` in two do not do); in a blacklist, no deny
        exception may overlap the device and any requested bit.  Conservative for wildcards.
        """
        if self.default_allow:
            return not any(
                t == type_
                and (ma is None or major is None or ma == major)
                and (mi is None or minor is None or mi == minor)
                and acc & access
                for (t, ma, mi), acc in self.exceptions.items()
            )
        return any(
            t == type_ and ma in (None, major) and mi in (None, minor) and access <= acc
            for (t, ma, mi), acc in self.exceptions.items()
        )

    def with_allowed(self, rules: Iterable[DeviceRule]) -> Emulator:
        """A copy that also allows *rules* (allow rules only); rules already allowed are skipped."""
        target = self.copy()
        for rule in rules:
            if not rule.allow:
                raise CgroupError(f"cannot grant a deny rule: '{rule}'")
            if rule.type is DeviceType.ALL:
                raise CgroupError(f"refusing to grant access to all devices: '{rule}'")
            if not target.allows(rule.type, rule.major, rule.minor, rule.access):
                target.apply(rule)
        return target

    def without(self, rules: Iterable[DeviceRule]) -> Emulator:
        """A copy with the access of *rules* taken away (revoke); refuses what cannot work.

        Refused (CgroupError): revoking from an allow-all cgroup (its deny exceptions cannot
        be listed, so capctl could not verify them) and revoking what a wider wildcard rule
        would keep allowing.
        """
        target = self.copy()
        if target.default_allow:
            raise CgroupError("cannot revoke single devices from a cgroup that allows all devices")
        for rule in rules:
            if rule.type is DeviceType.ALL:
                raise CgroupError(f"refusing to revoke with a rule for all devices: '{rule}'")
            target.apply(DeviceRule(rule.type, rule.major, rule.minor, rule.access, False))
        return target

    def transition(self, target: Emulator) -> list[DeviceRule]:
        """The minimal rule writes that turn this state into *target* (runc's algorithm).

        A blacklist source or a change of default needs a disruptive ``a`` rule first, since
        ``devices.list`` cannot show a blacklist cgroup's deny exceptions.  The result is
        verified: applying it to a copy of this state must give *target*, else CgroupError.
        """
        out: list[DeviceRule] = []
        old = self.exceptions
        if self.default_allow or self.default_allow != target.default_allow:
            out.append(ALLOW_ALL if target.default_allow else DENY_ALL)
            old = {}
        for key in sorted(old, key=_sort_key):
            dropped = old[key] - target.exceptions.get(key, Access())
            if dropped:
                out.append(DeviceRule(key[0], key[1], key[2], dropped, target.default_allow))
        for key in sorted(target.exceptions, key=_sort_key):
            gained = target.exceptions[key] - old.get(key, Access())
            if gained:
                out.append(DeviceRule(key[0], key[1], key[2], gained, not target.default_allow))
        check = self.copy()
        for rule in out:
            check.apply(rule, strict=False)
        if check != target:
            raise CgroupError("device rule transition does not reach its target state")
        return out


def normalize(rules: Sequence[DeviceRule], *, default_allow: bool = True) -> Emulator:
    """Run *rules* (in order) through the emulator, as runc does before generating eBPF."""
    return Emulator.from_rules(rules, default_allow=default_allow)


def iter_lines(rules: Iterable[DeviceRule]) -> Iterator[str]:
    """The ``devices.list`` lines of *rules*."""
    return (r.line() for r in rules)

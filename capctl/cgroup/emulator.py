"""A model of one cgroup v1 devices controller, as pure state: apply rules, diff states.

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
# every hook start; docs/hook-startup.md).  _collections_abc holds the very same classes and is loaded
# at every start already (os imports it).
from capctl.edits.rules import (
    ALLOW_ALL,
    DENY_ALL,
    Access,
    DeviceRule,
    DeviceType,
    parse_devices_list,
)
from capctl.errors import CgroupError, ParseError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence


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

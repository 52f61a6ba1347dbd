"""The grant policy as data: who holds which capability, parsed and validated.  Pure.

A grant lets a non-root user or group open one capability's node, e.g. ``config`` (MIG
management) to the ``mig-admins`` group.

**Why POSIX ACLs.**  Several users *and* several groups may hold one capability.  Owner, group
and mode can express one group (or one user) besides root; ACLs express any number.  A granted
node carries ``user::r--, user:<uid>:r--..., group::---, group:<gid>:r--..., mask::r--,
other::---`` (mode 0440, owner root:root): exactly root and the grantees can open it.  Read is
all a grantee needs: the driver checks a capability by the caller being able to open its node
for reading (driver default modes 0400/0444).  The owning group gets nothing, so being in
root's group grants nothing.  The mode differs from the driver defaults, which
:func:`capctl.devfs.nodes._acl_matters` relies on to notice a stale ACL cheaply.

**Names and ids.**  The config stores both, e.g. ``{ name = "alice", uid = 1001 }``.  The id
is authoritative: ACLs hold ids, and ``sync`` runs from udev at early boot, when NSS (LDAP,
sssd) may not answer, so applying a grant must not need a name lookup.  The name is kept for
people and for ``revoke --user alice``; ``capctl grants`` reports when the name and the id no
longer agree (user renamed, deleted, uid reused) so an admin can re-grant or revoke.  A grant
survives deleting its user, like a file owned by that uid would: revoke it by id.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from capctl.driver import capnames
from capctl.errors import ParseError
from capctl.policy import acl

#: ``capctl grant mig-config`` means the driver's ``config`` capability (docs/contract.md).
ALIASES = {"mig-config": "config", "mig-monitor": "monitor"}
#: What ``useradd`` accepts, and a little more (NSS names from LDAP may contain dots or '$').
_PRINCIPAL_NAME = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.$@-]{0,255}")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


class Kind(Enum):
    USER = "user"
    GROUP = "group"

    @property
    def id_key(self) -> str:
        return "uid" if self is Kind.USER else "gid"


@dataclass(frozen=True, slots=True, order=True)
class Principal:
    """A user or group, by id (authoritative) and name (as it was when granted)."""

    kind: Kind = field(compare=False)
    id: int
    name: str

    def __str__(self) -> str:
        return f"{self.kind.value} {self.name!r} ({self.kind.id_key} {self.id})"


@dataclass(frozen=True, slots=True)
class CapGrants:
    """Who holds one capability; ``users``/``groups`` sorted by id."""

    users: tuple[Principal, ...] = ()
    groups: tuple[Principal, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.users or self.groups)

    def members(self) -> tuple[Principal, ...]:
        return self.users + self.groups

    def with_(self, p: Principal) -> CapGrants:
        if p.kind is Kind.USER:
            kept = tuple(u for u in self.users if u.id != p.id)
            return replace(self, users=tuple(sorted((*kept, p))))
        kept = tuple(g for g in self.groups if g.id != p.id)
        return replace(self, groups=tuple(sorted((*kept, p))))

    def without(self, p: Principal) -> CapGrants:
        return CapGrants(
            tuple(u for u in self.users if not (p.kind is Kind.USER and u.id == p.id)),
            tuple(g for g in self.groups if not (p.kind is Kind.GROUP and g.id == p.id)),
        )

    def ownership(self) -> Ownership:
        """The node this grant demands (see the module docstring)."""
        a = acl.read_only((u.id for u in self.users), (g.id for g in self.groups))
        return Ownership(mode=a.mode, uid=0, gid=0, acl=a.encode())


@dataclass(frozen=True)
class Policy:
    """Capability name -> its grantees.  Only non-empty entries are kept."""

    grants: Mapping[str, CapGrants] = field(default_factory=dict)

    def get(self, name: str) -> CapGrants:
        return self.grants.get(name, CapGrants())

    def set(self, name: str, g: CapGrants) -> Policy:
        new = {k: v for k, v in self.grants.items() if k != name}
        if g:
            new[name] = g
        return Policy(dict(sorted(new.items())))

    def ownership(self) -> dict[str, Ownership]:
        return {name: g.ownership() for name, g in self.grants.items() if g}


@dataclass(frozen=True)
class Document:
    """The whole config file: our policy plus whatever else it holds (kept on rewrite)."""

    policy: Policy
    other: Mapping[str, Any] = field(default_factory=dict)


# --- parsing and formatting (pure) -------------------------------------------------------------


def _parse_principal(kind: Kind, item: Any, where: str) -> Principal:
    if not isinstance(item, dict) or set(item) != {"name", kind.id_key}:
        want = f"{{ name = \"...\", {kind.id_key} = N }}"
        raise ParseError(where, f"each {kind.value} must be {want}")
    name, ident = item["name"], item[kind.id_key]
    if not isinstance(name, str) or _PRINCIPAL_NAME.fullmatch(name) is None:
        raise ParseError(where, f"bad {kind.value} name {name!r}")
    if isinstance(ident, bool) or not isinstance(ident, int) or not 0 <= ident <= acl.MAX_ID:
        raise ParseError(where, f"bad {kind.id_key} {ident!r} for {kind.value} {name!r}")
    return Principal(kind, ident, name)


def toml_key(k: str) -> str:
    """A key as TOML writes it: bare when it can be, else a basic string (for messages)."""
    if _BARE_KEY.fullmatch(k):
        return k
    escaped = "".join(
        f"\\u{ord(c):04X}" if ord(c) < 0x20 or ord(c) == 0x7F
        else "\\" + c if c in '"\\' else c
        for c in k
    )
    return f'"{escaped}"'


def parse_document(doc: Mapping[str, Any], path: str) -> Document:
    """Validate a parsed config.  Strict about ``grants``; other tables are not ours to judge."""
    raw = doc.get("grants", {})
    if not isinstance(raw, dict):
        raise ParseError(path, "'grants' must be a table of [grants.\"<capability>\"] tables")
    policy = Policy()
    for name, entry in raw.items():
        where = f"{path}: [grants.{toml_key(name)}]"
        if name in ALIASES:
            # The alias is the command line's; the file has the driver's names only, so that
            # one capability never has two tables that list, sync and revoke differently.
            raise ParseError(where, f"{name} is the command-line alias of "
                             f"{ALIASES[name]}; name the table [grants.{ALIASES[name]}]")
        if not capnames.is_valid_name(name):
            raise ParseError(where, "not a capability name")
        if not isinstance(entry, dict) or not set(entry) <= {"users", "groups"}:
            raise ParseError(where, "only 'users' and 'groups' allowed")
        g = CapGrants()
        for kind, k in ((Kind.USER, "users"), (Kind.GROUP, "groups")):
            items = entry.get(k, [])
            if not isinstance(items, list):
                raise ParseError(where, f"'{k}' must be an array")
            for item in items:
                p = _parse_principal(kind, item, where)
                if any(q.id == p.id for q in g.members() if q.kind is kind):
                    raise ParseError(where, f"{kind.id_key} {p.id} listed twice")
                g = g.with_(p)
        policy = policy.set(name, g)
    return Document(policy, {k: v for k, v in doc.items() if k != "grants"})


def canonical_name(text: str) -> str:
    """``mig-config`` -> ``config``; other names as given."""
    return ALIASES.get(text, text)


@dataclass(frozen=True, slots=True)
class Ownership:
    """How a granted capability's node deviates from the driver default (see grants)."""

    mode: int
    uid: int = 0
    gid: int = 0
    acl: bytes | None = None

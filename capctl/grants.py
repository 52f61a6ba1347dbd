"""Delegation: the persisted grant policy and its application to nodes and proc files.

A grant lets a non-root user or group open one capability's node, e.g. ``config`` (MIG
management) to the ``mig-admins`` group.

**Why POSIX ACLs.**  Several users *and* several groups may hold one capability.  Owner, group
and mode can express one group (or one user) besides root; ACLs express any number.  A granted
node carries ``user::r--, user:<uid>:r--..., group::---, group:<gid>:r--..., mask::r--,
other::---`` (mode 0440, owner root:root): exactly root and the grantees can open it.  Read is
all a grantee needs: the driver checks a capability by the caller being able to open its node
for reading (driver default modes 0400/0444).  The owning group gets nothing, so being in
root's group grants nothing.  The mode differs from the driver defaults, which
:func:`capctl.nodes._acl_matters` relies on to notice a stale ACL cheaply.

**Names and ids.**  The config stores both, e.g. ``{ name = "alice", uid = 1001 }``.  The id
is authoritative: ACLs hold ids, and ``sync`` runs from udev at early boot, when NSS (LDAP,
sssd) may not answer, so applying a grant must not need a name lookup.  The name is kept for
people and for ``revoke --user alice``; ``capctl grants`` reports when the name and the id no
longer agree (user renamed, deleted, uid reused) so an admin can re-grant or revoke.  A grant
survives deleting its user, like a file owned by that uid would: revoke it by id.

**Proc files.**  ``DeviceFileModify: 0`` in a capability's proc file tells the driver's helper
(nvidia-modprobe, run by nvidia-smi) to stop resetting the node (MIG User Guide, "Device Nodes
and Capabilities").  A granted capability that exists gets it; revoking the last grant writes
``DeviceFileModify: 1`` back.  A driver reload resets it to 1, so ``sync`` writes it again.

The config file (``--config``, TOML) is read with ``tomllib``, refused when it is not root-owned
or is group/world-writable (configuration comes from root only), and rewritten atomically (temp
file, fsync, rename, fsync directory) under an ``flock`` on ``<config>.lock``, which is also
held while the change is applied so concurrent ``grant``/``revoke``/``sync`` runs serialise.
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import os
import pwd
import re
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any

from capctl import acl, caps, driver, record, settings, sync, tomlwrite
from capctl.caps import Capability, CapabilityFile
from capctl.driver import DriverState
from capctl.errors import ConfigError, DriverError, ParseError, os_error
from capctl.host import Host

#: ``capctl grant mig-config`` means the driver's ``config`` capability (DESIGN.md).
ALIASES = {"mig-config": "config", "mig-monitor": "monitor"}
#: The config is a few KiB at most; refuse to parse anything absurd.
MAX_CONFIG = 1 << 20
_HEADER = (
    "# capctl settings and delegation policy.\n"
    "# [grants.\"<capability>\"] tables are written by 'capctl grant' and 'capctl revoke';\n"
    "# the numeric uid/gid is what applies, the name is for people (see 'capctl grants').\n\n"
)
#: What ``useradd`` accepts, and a little more (NSS names from LDAP may contain dots or '$').
_PRINCIPAL_NAME = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.$@-]{0,255}")


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

    def ownership(self) -> sync.Ownership:
        """The node this grant demands (see the module docstring)."""
        a = acl.read_only((u.id for u in self.users), (g.id for g in self.groups))
        return sync.Ownership(mode=a.mode, uid=0, gid=0, acl=a.encode())


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

    def ownership(self) -> dict[str, sync.Ownership]:
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


def parse_document(doc: Mapping[str, Any], path: str) -> Document:
    """Validate a parsed config.  Strict about ``grants``; other tables are not ours to judge."""
    raw = doc.get("grants", {})
    if not isinstance(raw, dict):
        raise ParseError(path, "'grants' must be a table of [grants.\"<capability>\"] tables")
    policy = Policy()
    for name, entry in raw.items():
        where = f"{path}: [grants.{tomlwrite.key(name)}]"
        if not caps.is_valid_name(name):
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


def format_document(d: Document) -> str:
    """TOML text of a document (the policy last, other tables as they were)."""
    grants: dict[str, Any] = {}
    for name, g in d.policy.grants.items():
        entry: dict[str, Any] = {}
        if g.users:
            entry["users"] = [{"name": u.name, "uid": u.id} for u in g.users]
        if g.groups:
            entry["groups"] = [{"name": x.name, "gid": x.id} for x in g.groups]
        grants[name] = entry
    body: dict[str, Any] = dict(d.other)
    if grants:
        body["grants"] = grants
    try:
        return tomlwrite.dumps(body, _HEADER)
    except TypeError as err:
        raise ConfigError(f"cannot rewrite the config: {err}") from err


def canonical_name(text: str) -> str:
    """``mig-config`` -> ``config``; other names as given."""
    return ALIASES.get(text, text)


# --- the config file ---------------------------------------------------------------------------


def load_document(path: Path) -> Document:
    """Read and validate the config (:func:`capctl.settings.read_table`); absent: empty."""
    doc = settings.read_table(path)
    if doc is None:
        return Document(Policy())
    return parse_document(doc, str(path))


def load_policy(path: Path) -> Policy:
    return load_document(path).policy


def save_document(path: Path, d: Document) -> None:
    """Atomically replace the config: temp file in its directory, fsync, rename, fsync dir."""
    text = format_document(d).encode("utf-8")
    parent = path.parent
    try:
        parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        dir_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as err:
        raise ConfigError(f"{parent}: cannot open config directory: {err.strerror or err}") from err
    tmp = f".{path.name}.tmp-{os.getpid()}"
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644, dir_fd=dir_fd)
        try:
            os.fchmod(fd, 0o644)  # whatever the umask
            if os.geteuid() == 0:
                os.fchown(fd, 0, 0)
            view = memoryview(text)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        os.fsync(dir_fd)
    except OSError as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise ConfigError(f"{path}: cannot write: {err.strerror or err}") from err
    finally:
        os.close(dir_fd)


@contextlib.contextmanager
def locked(path: Path, *, shared: bool = False) -> Iterator[None]:
    """Hold ``flock`` on ``<config>.lock`` (the config itself is replaced by rename, so the
    lock must live on a file that stays)."""
    lock = path.with_name(path.name + ".lock")
    try:
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as err:
        raise ConfigError(f"{lock}: cannot open lock file: {err.strerror or err}") from err
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


# --- users and groups --------------------------------------------------------------------------


def resolve(kind: Kind, text: str) -> Principal:
    """A user or group that exists now, by name or numeric id; else a ConfigError naming it."""
    try:
        if kind is Kind.USER:
            pw = pwd.getpwuid(int(text)) if text.isdigit() else pwd.getpwnam(text)
            return Principal(kind, pw.pw_uid, pw.pw_name)
        gr = grp.getgrgid(int(text)) if text.isdigit() else grp.getgrnam(text)
        return Principal(kind, gr.gr_gid, gr.gr_name)
    except (KeyError, OverflowError) as err:
        raise ConfigError(f"unknown {kind.value} {text!r}: no such {kind.value} here") from err


def current_name(p: Principal) -> str | None:
    """The name ``p``'s id has now (None: no such id)."""
    try:
        if p.kind is Kind.USER:
            return pwd.getpwuid(p.id).pw_name
        return grp.getgrgid(p.id).gr_name
    except (KeyError, OverflowError):
        return None


def status(p: Principal) -> tuple[str, str]:
    """``("ok"|"changed"|"missing", detail)``: does the stored name still match the id?"""
    now = current_name(p)
    if now is None:
        return "missing", f"no {p.kind.value} has {p.kind.id_key} {p.id} now"
    if now != p.name:
        return "changed", f"{p.kind.id_key} {p.id} is now {now!r}"
    return "ok", ""


def _match(g: CapGrants, kind: Kind, text: str) -> Principal | None:
    """The grantee ``text`` names: stored name, numeric id, or the id NSS gives the name."""
    held = [p for p in g.members() if p.kind is kind]
    for p in held:
        if p.name == text or (text.isdigit() and p.id == int(text)):
            return p
    with contextlib.suppress(ConfigError):
        now = resolve(kind, text)
        return next((p for p in held if p.id == now.id), None)
    return None


# --- applying to the driver's files ------------------------------------------------------------


def write_modify(host: Host, cap: Capability, cf: CapabilityFile, modify: bool) -> CapabilityFile:
    """Set ``DeviceFileModify`` in the capability's proc file; returns the new fields.

    The driver's proc file takes the single line ``DeviceFileModify: 0|1`` (DESIGN.md).  A
    simulated root has plain files instead: those are rewritten whole, keeping the other
    fields, by create-then-rename.  Kernel proc files report size 0 (seq_file), which is how
    the two are told apart.
    """
    new = record.replace(cf, modify=modify)
    if cf.modify == modify:
        return new
    path = Path(host.path(cap.proc_relpath))
    try:
        st = os.stat(path)
        if stat.S_ISREG(st.st_mode) and st.st_size > 0:
            tmp = path.with_name(f".{path.name}.capctl-{os.getpid()}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                         stat.S_IMODE(st.st_mode))
            try:
                os.write(fd, caps.format_capability_file(new).encode("ascii"))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, path)
        else:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            try:
                os.write(fd, f"DeviceFileModify: {int(modify)}\n".encode("ascii"))
            finally:
                os.close(fd)
    except OSError as err:
        raise os_error(path, err, f"cannot write DeviceFileModify: {int(modify)}") from err
    return new


def _apply_one(host: Host, state: DriverState, cap: Capability, g: CapGrants) -> bool:
    """Make an existing capability's node and proc file match its grants (or the defaults if
    none are left).  False if the capability does not exist now (applied by a later sync)."""
    cf = state.existing.get(cap.name)
    if cf is None:
        return False
    if g:
        cf = write_modify(host, cap, cf, False)  # first: keep nvidia-modprobe off the node
    state = record.replace(
        state, existing={**state.existing, cap.name: record.replace(cf, modify=True)}
    )
    grants = {cap.name: g.ownership()} if g else {}
    full = sync.plan(state, everything=False, grants=grants)
    one = sync.SyncPlan(specs=[(c, s) for c, s in full.specs if c.name == cap.name])
    sync.apply(host, state, one)
    if not g:
        write_modify(host, cap, cf, True)  # last: the driver's helper may manage it again
    return True


@dataclass(frozen=True)
class Outcome:
    """What ``grant``/``revoke`` did."""

    capability: str
    principals: tuple[Principal, ...]
    changed: bool  # the policy changed
    applied: bool  # the node and proc file were updated (the capability exists now)


def grant(host: Host, cap_text: str, kind: Kind, who: str) -> Outcome:
    """Grant ``who`` read access to a capability, persistently, and apply it now."""
    name = canonical_name(cap_text)
    state = driver.load(host)
    cap = state.table.get(name)
    if cap is None:
        raise ConfigError(
            f"unknown capability {cap_text!r}: not in {host.display(caps.MINORS_DIR)}/*-minors "
            "(use mig-config, mig-monitor or a name from 'capctl list')"
        )
    principal = resolve(kind, who)
    with locked(Path(host.config)):
        doc = load_document(Path(host.config))
        before = doc.policy.get(name)
        after = before.with_(principal)
        changed = after != before
        if changed:
            save_document(Path(host.config), replace(doc, policy=doc.policy.set(name, after)))
        applied = _apply_one(host, state, cap, after)
    return Outcome(name, (principal,), changed, applied)


def revoke(host: Host, cap_text: str, kind: Kind | None = None, who: str | None = None) -> Outcome:
    """Take a grant away (``kind``/``who`` None: every grantee of the capability)."""
    name = canonical_name(cap_text)
    if not caps.is_valid_name(name):
        raise ConfigError(f"unknown capability {cap_text!r}")
    with locked(Path(host.config)):
        doc = load_document(Path(host.config))
        before = doc.policy.get(name)
        if not before:
            raise ConfigError(f"{host.config}: no grants for {name!r}")
        if kind is None or who is None:
            gone = before.members()
        else:
            p = _match(before, kind, who)
            if p is None:
                raise ConfigError(
                    f"{kind.value} {who!r} holds no grant for {name!r} in {host.config}"
                )
            gone = (p,)
        after = before
        for p in gone:
            after = after.without(p)
        save_document(Path(host.config), replace(doc, policy=doc.policy.set(name, after)))
        try:
            state: DriverState | None = driver.load(host)
        except DriverError:
            state = None  # driver not loaded: nothing on disk to restore; sync does it later
        cap = state.table.get(name) if state is not None else None
        applied = state is not None and cap is not None and _apply_one(host, state, cap, after)
    return Outcome(name, gone, True, applied)


def ownership(host: Host) -> dict[str, sync.Ownership]:
    """Node ownership every grant demands, for ``sync``, ``list`` and the doctor."""
    return load_policy(Path(host.config)).ownership()


def sync_host(host: Host, *, everything: bool = False, dry_run: bool = False) -> sync.SyncReport:
    """``capctl sync`` with grants: re-pin the proc files of granted capabilities that exist
    (a driver reload resets ``DeviceFileModify`` to 1), then create or repair every node."""
    lock = contextlib.nullcontext() if dry_run or not Path(host.config).parent.is_dir() else \
        locked(Path(host.config), shared=True)
    with lock:
        policy = load_policy(Path(host.config))
        state = driver.load(host)
        own = policy.ownership()
        if not dry_run:
            existing = dict(state.existing)
            for name in own:
                cf = existing.get(name)
                cap = state.table.get(name)
                if cf is not None and cap is not None and cf.modify:
                    existing[name] = write_modify(host, cap, cf, False)
            state = record.replace(state, existing=existing)
        return sync.apply(host, state, sync.plan(state, everything=everything, grants=own),
                          dry_run=dry_run)


@dataclass(frozen=True)
class GrantView:
    """One capability's grants as ``capctl grants`` shows them."""

    capability: str
    grants: CapGrants

    def to_json(self) -> dict[str, Any]:
        def one(p: Principal) -> dict[str, Any]:
            st, detail = status(p)
            return {"name": p.name, p.kind.id_key: p.id, "status": st, "detail": detail or None}

        return {
            "capability": self.capability,
            "users": [one(p) for p in self.grants.users],
            "groups": [one(p) for p in self.grants.groups],
        }


def describe(host: Host) -> list[GrantView]:
    return [GrantView(name, g) for name, g in load_policy(Path(host.config)).grants.items()]


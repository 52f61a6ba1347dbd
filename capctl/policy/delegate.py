"""``capctl grant`` / ``revoke`` / ``grants``: change the stored policy and apply it now.

Applying a grant means the node's ACL and mode (:mod:`capctl.devfs.sync`) and
``DeviceFileModify: 0`` in the capability's proc file, which tells the driver's helper
(nvidia-modprobe, run by nvidia-smi) to stop resetting the node (``docs/driver.md``).
Revoking the last grant writes ``DeviceFileModify: 1`` back.  A driver reload resets it to 1,
so ``sync`` writes it again.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from capctl._lite import record
from capctl.devfs import sync
from capctl.driver import capnames, procfs
from capctl.driver.minorsfile import Capability
from capctl.driver.procfs import DriverState, write_modify
from capctl.errors import ConfigError, DriverError
from capctl.host import Host
from capctl.policy import grants
from capctl.policy.grants import CapGrants, Kind, Principal, canonical_name
from capctl.policy.lock import ConfigLock
from capctl.policy.principals import resolve, status
from capctl.policy.store import load_document, load_policy, save_document


def _match(g: CapGrants, kind: Kind, text: str) -> Principal | None:
    """The grantee ``text`` names: stored name, numeric id, or the id NSS gives the name."""
    held = [p for p in g.members() if p.kind is kind]
    for p in held:
        # ASCII digits only: int() reads "٣" as 3, a different principal than the one named.
        if p.name == text or (text.isascii() and text.isdigit() and p.id == int(text)):
            return p
    with contextlib.suppress(ConfigError):
        now = resolve(kind, text)
        return next((p for p in held if p.id == now.id), None)
    return None


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
    state = procfs.load(host)
    cap = state.table.get(name)
    if cap is None:
        raise ConfigError(
            f"unknown capability {cap_text!r}: not in {host.display(capnames.MINORS_DIR)}/*-minors "
            "(use mig-config, mig-monitor or a name from 'capctl list')"
        )
    principal = resolve(kind, who)
    with ConfigLock(host.config):
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
    if not capnames.is_valid_name(name):
        raise ConfigError(f"unknown capability {cap_text!r}")
    with ConfigLock(host.config):
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
            state: DriverState | None = procfs.load(host)
        except DriverError:
            state = None  # driver not loaded: nothing on disk to restore; sync does it later
        cap = state.table.get(name) if state is not None else None
        applied = state is not None and cap is not None and _apply_one(host, state, cap, after)
    return Outcome(name, gone, True, applied)


def ownership(host: Host) -> dict[str, grants.Ownership]:
    """Node ownership every grant demands, for ``sync``, ``list`` and the doctor."""
    return sync.grant_ownership(host.config)


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

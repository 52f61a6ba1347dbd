"""``capctl list``: every capability the driver knows, whether it exists, and its node's state.

Built from the same plan as ``sync --all`` run dry, so ``list`` and ``sync`` can never disagree
about what a correct node is.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from capctl.devfs import sync
from capctl.devfs.nodes import Action
from capctl.driver import procfs
from capctl.driver.capnames import CAPS_DEV_DIR
from capctl.host import Host
from capctl.policy import grants


@dataclass(frozen=True, slots=True)
class Entry:
    name: str
    minor: int
    path: str
    source: str
    exists: bool
    #: "ok", "missing", "absent" (not needed yet), "wrong", "unmanaged" (DeviceFileModify: 0
    #: and no capctl grant), or "stray" (an entry for a node that is no capability's: source
    #: "stray", name the node's, minor the one it opens; ``sync`` removes it).
    node: str
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "minor": self.minor,
            "path": self.path,
            "source": self.source,
            "exists": self.exists,
            "node": self.node,
            "detail": self.detail or None,
        }


def inventory(host: Host, grants: Mapping[str, grants.Ownership] | None = None) -> list[Entry]:
    """One entry per capability, then one per stray node (``docs/driver.md``, "Nodes").

    A capability that a stray node opens is "wrong" even if its own node is right: the stray
    bypasses its grants.
    """
    state = procfs.load(host)
    plan = sync.plan(state, everything=True, grants=grants)
    report = sync.apply(host, state, plan, dry_run=True)
    strays: list[Entry] = []
    aliased: dict[int, str] = {}
    for change in report.changes:
        # A planned name holding another capability's node (repaired in place by sync).
        if change.action is Action.REPAIRED:
            try:
                st = os.lstat(change.path)
            except FileNotFoundError:
                continue
            if stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == state.caps_major:
                aliased.setdefault(
                    os.minor(st.st_rdev), f"/{CAPS_DEV_DIR}/{change.path.rsplit('/', 1)[1]}"
                )
    for change in report.removed:
        try:
            st = os.lstat(change.path)
        except FileNotFoundError:
            continue  # gone since sync looked
        minor = os.minor(st.st_rdev)
        name = change.path.rsplit("/", 1)[1]
        strays.append(
            Entry(name, minor, f"/{CAPS_DEV_DIR}/{name}", "stray", False, "stray", change.reason)
        )
        if os.major(st.st_rdev) == state.caps_major:
            aliased.setdefault(minor, f"/{CAPS_DEV_DIR}/{name}")
    by_name = {
        cap.name: change for (cap, _spec), change in zip(plan.specs, report.changes, strict=True)
    }
    skipped = {s.name: s.reason for s in plan.skipped}
    out: list[Entry] = []
    for cap in state.table:
        found = by_name.get(cap.name)
        if found is None and cap.name in skipped:
            node, detail = "unmanaged", skipped[cap.name]
        elif found is None:
            # An nvlink/sys capability without a proc file: its mode is unknown, so no node.
            node, detail = "absent", ""
        elif found.action is Action.UNCHANGED:
            node, detail = "ok", ""
        elif found.action is Action.CREATED:
            # A node for a capability that does not exist yet is not needed ("absent"); for one
            # that exists it is missing.
            node, detail = ("missing" if cap.name in state.existing else "absent"), ""
        else:
            node, detail = "wrong", found.reason
        alias = aliased.get(cap.minor)
        if alias is not None and node in ("ok", "absent", "unmanaged"):
            node, detail = "wrong", f"also opened by stray node {alias}"
        out.append(
            Entry(
                cap.name,
                cap.minor,
                cap.path,
                cap.source.value,
                cap.name in state.existing,
                node,
                detail,
            )
        )
    return out + strays

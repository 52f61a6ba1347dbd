"""``capctl list``: every capability the driver knows, whether it exists, and its node's state.

Built from the same plan as ``sync --all`` run dry, so ``list`` and ``sync`` can never disagree
about what a correct node is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from capctl.devfs import sync
from capctl.devfs.nodes import Action
from capctl.driver import procfs
from capctl.host import Host
from capctl.policy import grants


@dataclass(frozen=True, slots=True)
class Entry:
    name: str
    minor: int
    path: str
    source: str
    exists: bool
    #: "ok", "missing", "absent" (not needed yet), "wrong" or "unmanaged" (DeviceFileModify: 0 and no capctl grant).
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
    state = procfs.load(host)
    plan = sync.plan(state, everything=True, grants=grants)
    report = sync.apply(host, state, plan, dry_run=True)
    by_name = {
        cap.name: change for (cap, _spec), change in zip(plan.specs, report.changes, strict=True)
    }
    skipped = {s.name: s.reason for s in plan.skipped}
    out: list[Entry] = []
    for cap in state.table:
        change = by_name.get(cap.name)
        if change is None:
            node, detail = "unmanaged", skipped.get(cap.name, "")
        elif change.action is Action.UNCHANGED:
            node, detail = "ok", ""
        elif change.action is Action.CREATED:
            # A node for a capability that does not exist yet is not needed ("absent"); for one
            # that exists it is missing.
            node, detail = ("missing" if cap.name in state.existing else "absent"), ""
        else:
            node, detail = "wrong", change.reason
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
    return out

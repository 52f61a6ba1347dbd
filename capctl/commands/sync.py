"""``capctl sync``'s run and output, without click: the click command
(:mod:`capctl.commands.nodes`) and the fast entry (:mod:`capctl.commands.fast`) share them."""

from __future__ import annotations

from capctl.devfs.nodes import Action
from capctl.errors import CapctlError
from capctl.host import Host

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from capctl.deliver.cdifile import Outcome
    from capctl.devfs.sync import SyncReport

    CdiOut = tuple[Outcome, Outcome] | None

#: ``sync`` lists each changed node up to this many; more, and it prints only the summary.
SYNC_LIST_MAX = 20


def sync_cdi(host: Host, dry_run: bool) -> CdiOut:
    """Regenerate the CDI specs named by ``[cdi] output`` (None: not configured)."""
    from capctl.policy import settings

    cdi = settings.load_cdi(host.config)
    if cdi.output is None:
        return None
    from capctl.deliver import cdifile

    return cdifile.refresh(host, cdi.output, management=cdi.management, dry_run=dry_run)


def run(host: Host, *, everything: bool, dry_run: bool) -> tuple[SyncReport, CdiOut]:
    """Sync the nodes (:func:`capctl.devfs.sync.sync_host`), then the CDI specs."""
    from capctl.devfs import sync

    # Also re-writes DeviceFileModify: 0 for granted capabilities (a driver reload resets it).
    try:
        report = sync.sync_host(host, everything=everything, dry_run=dry_run)
    except CapctlError:
        # The CDI spec still follows the driver (or goes): never left stale by a failed sync.
        if not dry_run:
            try:
                sync_cdi(host, dry_run)
            except CapctlError:
                pass
        raise
    return report, sync_cdi(host, dry_run)


def text(report: SyncReport, cdi_out: CdiOut, *, dry_run: bool, verbose: bool) -> str:
    """What ``sync`` prints: each change (every node with ``verbose``), the skipped
    capabilities, the CDI specs that changed, and a summary line."""
    would = "would be " if dry_run else ""
    groups = (report.removed, report.changes, report.link_changes, report.device_links)
    unchanged = sum(g.tally(Action.UNCHANGED) for g in groups)
    changed = sum(len(g) for g in groups) - unchanged
    # One line a node is for a few changes (a repair, a stray) or -v; a first sync creates
    # thousands, and printing them cost most of its time: then the summary says how many.
    lines = []
    if verbose or changed <= SYNC_LIST_MAX:
        lines = [f"{would}{c.action.value}: {c.path}" + (f" ({c.reason})" if c.reason else "")
                 for g in groups for c in g
                 if verbose or c.action is not Action.UNCHANGED]
    if not lines and changed:
        lines = [f"{changed} nodes and /dev/char links {would}changed; -v lists each"]
    lines += [f"skipped: {skip.name}: {skip.reason}" for skip in report.skipped]
    lines += [f"{would}{spec.action}: {spec.path}" for spec in cdi_out or ()
              if spec.changed or (verbose and spec.action != "absent")]
    lines.append(
        f"{report.count(Action.CREATED)} {would}created, {report.count(Action.REPAIRED)} "
        f"{would}repaired, {report.count(Action.UNCHANGED)} unchanged, {len(report.skipped)} skipped"
        + (f", {len(report.removed)} {would}removed" if len(report.removed) else "")
    )
    return "\n".join(lines) + "\n"


def json_doc(report: SyncReport, cdi_out: CdiOut, *, dry_run: bool) -> dict[str, Any]:
    """What ``sync --json`` prints (docs/contract.md)."""
    def changes(group: Any) -> list[dict[str, Any]]:
        return [{"path": c.path, "action": c.action.value, "reason": c.reason or None}
                for c in group]

    return {
        "dry_run": dry_run,
        **({} if cdi_out is None else {"cdi": {
            "path": cdi_out[0].path, "changed": cdi_out[0].changed,
            "management": {"path": cdi_out[1].path, "action": cdi_out[1].action}}}),
        "nodes": changes(report.changes),
        "links": changes(report.link_changes),
        "device_links": changes(report.device_links),
        "skipped": [{"name": s.name, "reason": s.reason} for s in report.skipped],
        "removed": [{"path": c.path, "reason": c.reason} for c in report.removed],
    }

"""``capctl list`` and ``capctl sync``: the host's capability nodes."""

from __future__ import annotations

from typing import Any

import click

from capctl.commands.output import print_json, table
from capctl.devfs.nodes import Action
from capctl.errors import CapctlError
from capctl.host import Host


@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def list_cmd(host: Host, as_json: bool) -> None:
    """Every capability in the driver's *-minors files and its node's state."""
    from capctl.devfs.inventory import inventory

    entries = inventory(host, _grant_ownership(host))
    if as_json:
        print_json([e.to_json() for e in entries])
        return
    rows = [
        (
            e.name,
            str(e.minor),
            e.path,
            "yes" if e.exists else "no",
            e.node + (f" ({e.detail})" if e.detail else ""),
        )
        for e in entries
    ]
    table(rows, ("NAME", "MINOR", "PATH", "EXISTS", "NODE"))


def _grant_ownership(host: Host) -> dict[str, Any]:
    """Node ownership demanded by capctl's grants (``[grants]`` in the config)."""
    from capctl.policy import delegate

    return dict(delegate.ownership(host))


def _sync_cdi(host: Host, dry_run: bool) -> tuple[Any, Any] | None:
    """Regenerate the CDI specs named by ``[cdi] output`` (None: not configured)."""
    from capctl.deliver import cdifile
    from capctl.policy import settings

    cdi = settings.load_cdi(host.config)
    if cdi.output is None:
        return None
    return cdifile.refresh(host, cdi.output, management=cdi.management, dry_run=dry_run)


#: ``sync`` lists each changed node up to this many; more, and it prints only the summary.
SYNC_LIST_MAX = 20


@click.command("sync")
@click.option(
    "--all",
    "everything",
    is_flag=True,
    help="Every capability in mig-minors, not only existing ones.",
)
@click.option("--dry-run", is_flag=True, help="Report what would change; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
@click.option("-v", "--verbose", is_flag=True,
              help="List every node, changed or not (default: each change when at most 20).")
@click.pass_obj
def sync_cmd(host: Host, everything: bool, dry_run: bool, as_json: bool, verbose: bool) -> None:
    """Create or repair the host's capability nodes (idempotent)."""
    from capctl.devfs import sync

    # Also re-writes DeviceFileModify: 0 for granted capabilities (a driver reload resets it).
    try:
        report = sync.sync_host(host, everything=everything, dry_run=dry_run)
    except CapctlError:
        # The CDI spec still follows the driver (or goes): never left stale by a failed sync.
        if not dry_run:
            try:
                _sync_cdi(host, dry_run)
            except CapctlError:
                pass
        raise
    cdi_out = _sync_cdi(host, dry_run)
    if as_json:
        print_json(
            {
                "dry_run": dry_run,
                **({} if cdi_out is None else {"cdi": {
                    "path": cdi_out[0].path, "changed": cdi_out[0].changed,
                    "management": {"path": cdi_out[1].path, "action": cdi_out[1].action}}}),
                "nodes": [
                    {"path": c.path, "action": c.action.value, "reason": c.reason or None}
                    for c in report.changes
                ],
                "links": [
                    {"path": c.path, "action": c.action.value, "reason": c.reason or None}
                    for c in report.link_changes
                ],
                "device_links": [
                    {"path": c.path, "action": c.action.value, "reason": c.reason or None}
                    for c in report.device_links
                ],
                "skipped": [{"name": s.name, "reason": s.reason} for s in report.skipped],
                "removed": [{"path": c.path, "reason": c.reason} for c in report.removed],
            }
        )
        return
    would = "would be " if dry_run else ""
    every = [*report.removed, *report.changes, *report.link_changes, *report.device_links]
    changed = [c for c in every if c.action is not Action.UNCHANGED]
    # One line a node is for a few changes (a repair, a stray) or -v; a first sync creates
    # thousands, and printing them cost most of its time: then the summary says how many.
    listed = every if verbose else changed if len(changed) <= SYNC_LIST_MAX else []
    lines = [f"{would}{c.action.value}: {c.path}" + (f" ({c.reason})" if c.reason else "")
             for c in listed]
    if lines:
        click.echo("\n".join(lines))
    elif changed:
        click.echo(f"{len(changed)} nodes and /dev/char links {would}changed; -v lists each")
    for skip in report.skipped:
        click.echo(f"skipped: {skip.name}: {skip.reason}")
    for spec in cdi_out or ():
        if spec.changed or (verbose and spec.action != "absent"):
            click.echo(f"{would}{spec.action}: {spec.path}")
    click.echo(
        f"{report.count(Action.CREATED)} {would}created, {report.count(Action.REPAIRED)} "
        f"{would}repaired, {report.count(Action.UNCHANGED)} unchanged, {len(report.skipped)} skipped"
        + (f", {len(report.removed)} {would}removed" if len(report.removed) else "")
    )

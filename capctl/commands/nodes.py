"""``capctl list`` and ``capctl sync``: the host's capability nodes."""

from __future__ import annotations

from typing import Any

import click

from capctl.commands.output import print_json, table
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
    from capctl.commands import sync

    report, cdi_out = sync.run(host, everything=everything, dry_run=dry_run)
    if as_json:
        print_json(sync.json_doc(report, cdi_out, dry_run=dry_run))
    else:
        click.echo(sync.text(report, cdi_out, dry_run=dry_run, verbose=verbose), nl=False)

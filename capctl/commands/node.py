"""The commands a Kubernetes DaemonSet runs beside ``capctl watch``: ``health`` (its liveness
and readiness probes) and ``uninstall`` (what the DaemonSet runs when it stops).  Listed in
:data:`capctl.cli.COMMANDS`; each command calls one library function (:mod:`capctl.watch.heartbeat`,
:mod:`capctl.uninstall`) and formats its result.
"""

from __future__ import annotations

import click

from capctl.errors import CapctlError


@click.command("health")
@click.option("--heartbeat", "path", required=True, metavar="FILE",
              help="The file 'capctl watch --heartbeat' rewrites.")
@click.option("--max-age", type=click.FloatRange(min=1.0), default=60.0, show_default=True,
              help="Seconds: an older beat means the watcher is stuck.")
@click.option("--ready", is_flag=True,
              help="Also fail unless the watcher's last sync and CDI spec refresh succeeded.")
def health_cmd(path: str, max_age: float, ready: bool) -> None:
    """Whether 'capctl watch' is alive (liveness) and, with --ready, in sync (readiness).

    Exit 0 with one line when it is; 'capctl: error: ...' and exit 1 when it is stuck,
    not running or (with --ready) not in sync."""
    from capctl.watch import heartbeat

    click.echo(heartbeat.check(path, max_age=max_age, ready=ready))


@click.command("uninstall")
@click.option("--hooks-dir", default=None, metavar="DIR",
              help="hooks.d directory to remove capctl's definition from.")
@click.option("--containerd-dir", default=None, metavar="DIR",
              help="containerd drop-in directory to remove capctl's snippet from.")
@click.option("--crio-dir", default=None, metavar="DIR",
              help="CRI-O drop-in directory to remove capctl's snippet from.")
@click.option("--launcher-dir", default=None, metavar="DIR",
              help="Where 'capctl install' wrote capctl-runtime's launcher.")
@click.option("--cdi-output", default=None, metavar="FILE",
              help="The CDI spec 'capctl watch --cdi-output' keeps.")
@click.option("--dry-run", is_flag=True, help="Show what would be removed; remove nothing.")
def uninstall_cmd(hooks_dir: str | None, containerd_dir: str | None, crio_dir: str | None,
                  launcher_dir: str | None, cdi_output: str | None, dry_run: bool) -> None:
    """Remove what 'capctl install' and 'capctl watch' wrote in the places named, and only
    what capctl wrote: a foreign file at one of its names is left and reported."""
    from capctl import uninstall

    removals = uninstall.plan(hooks_dir=hooks_dir, containerd_dir=containerd_dir,
                              crio_dir=crio_dir, launcher_dir=launcher_dir, cdi_output=cdi_output)
    failed: list[str] = []
    for r in removals:
        if not r.own:
            click.echo(f"left {r.path}: {r.what}, {r.reason}")
            continue
        if not dry_run:
            try:
                uninstall.remove(r)
            except CapctlError as err:  # go on: remove all that can be removed
                failed.append(str(err))
                continue
        click.echo(f"{'would remove' if dry_run else 'removed'} {r.path}: {r.what}")
    if not removals:
        click.echo("nothing of capctl's found")
    if failed:
        raise CapctlError("; ".join(failed))

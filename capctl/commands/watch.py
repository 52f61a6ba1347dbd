"""``capctl watch``: sync and the CDI spec follow the driver."""

from __future__ import annotations

import click

from capctl.errors import CapctlError
from capctl.host import Host


@click.command("watch")
@click.option(
    "--quiet",
    type=click.FloatRange(0.0, 60.0),
    default=1.0,
    show_default=True,
    help="Seconds without driver events before running sync.",
)
@click.option("--cdi-output", "cdi_output", default=None, metavar="FILE",
              help="Keep this CDI spec current (default: [cdi] output of the config, if set).")
@click.option(
    "--poll",
    type=click.FloatRange(0.05, 60.0),
    default=1.0,
    show_default=True,
    help="Seconds between looks for MIG instances created or destroyed (no event exists).",
)
@click.option("--heartbeat", default=None, metavar="FILE",
              help="Rewrite FILE while watching, for 'capctl health' (liveness, readiness).")
@click.pass_obj
def watch_cmd(host: Host, quiet: float, cdi_output: str | None, poll: float,
              heartbeat: str | None) -> None:
    """Run sync (and regenerate the CDI spec) at start, whenever the nvidia driver (re)loads
    (kernel uevents), whenever a capability node changes (inotify) and whenever a MIG instance
    appears or goes (a poll), so that grants hold and the spec stays current.  The
    mig-config / mig-monitor devices go to their own spec beside it when the config's [cdi]
    management is true (read at start).  Stops on SIGTERM/SIGINT."""
    from capctl.deliver import cdifile
    from capctl.devfs import sync
    from capctl.policy import settings
    from capctl.watch import changes, uevent
    from capctl.watch.heartbeat import Heartbeat

    cdi_settings = settings.load_cdi(host.config)
    if cdi_output is None:
        cdi_output = cdi_settings.output
    # The CDI spec also depends on the topology snapshot: the detector watches it too, and
    # tells subscribe_settled once the capability files and the snapshot both hold still.
    files = () if host.topology is None or cdi_output is None else (str(host.topology),)
    detector = changes.ChangeDetector(host, poll_interval=poll, files=files,
                                      settle=min(poll, changes.SETTLE))
    last_error: list[str] = [""]
    beat = None if heartbeat is None else Heartbeat(heartbeat)

    def report_error(err: CapctlError | None) -> None:
        msg = "" if err is None else str(err)
        if msg and msg != last_error[0]:  # a retry that fails the same way says nothing new
            click.echo(f"capctl: error: {msg}", err=True)
        last_error[0] = msg
        if beat is not None:
            beat.synced(msg or None)

    def run_sync(always: bool = False) -> None:
        # The spec is refreshed (or removed) whatever sync does: a spec left stale after a
        # failed sync would map a destroyed instance's UUID to minors a new one may own.
        errors: list[str] = []
        report = None
        try:
            report = sync.sync_host(host)
        except CapctlError as err:  # keep watching: the next event or poll may fix it
            errors.append(str(err))
        if cdi_output is not None:
            try:
                for spec in cdifile.refresh(host, cdi_output,
                                            management=cdi_settings.management):
                    if spec.changed:
                        click.echo(f"cdi: {spec.path} {spec.action}", err=True)
            except CapctlError as err:
                errors.append(str(err))
        if errors:
            report_error(CapctlError("; ".join(errors)))
            if cdi_output is not None:
                detector.retry()
        else:
            report_error(None)
        if report is None:
            return
        n = sum(1 for c in report.changes if c.action.value != "unchanged")
        if n or always:  # a sync that found nothing to do (e.g. after its own changes): quiet
            removed = f", {len(report.removed)} stray(s) removed" if len(report.removed) else ""
            click.echo(f"sync: {n} node(s) created or repaired{removed}", err=True)
        elif len(report.removed):
            click.echo(f"sync: {len(report.removed)} stray(s) removed", err=True)

    def ready() -> None:
        click.echo(
            "watching kernel uevents for the nvidia driver, /dev/nvidia-caps and MIG instances",
            err=True,
        )
        run_sync(always=True)

    with detector:
        if cdi_output is not None:
            detector.subscribe_settled(lambda _settled: run_sync())
        uevent.watch(run_sync, quiet=quiet, on_ready=ready, detector=detector,
                     on_tick=None if beat is None else beat.tick)
    if beat is not None:
        beat.remove()

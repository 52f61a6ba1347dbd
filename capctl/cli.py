"""The ``capctl`` command line: a thin click front over the library.

The root group builds one :class:`~capctl.host.Host` into ``ctx.obj``; each command calls one
library function and formats its result.  Expected failures are :class:`CapctlError` and come
out as one ``capctl: error: ...`` line and exit 1; usage errors are click's (exit 2).

Environment variables (``CAPCTL_ROOT``, ``CAPCTL_TOPOLOGY``, ``CAPCTL_CONFIG``) are honoured
for commands an admin types, but never for ``hook``: a runtime may hand a hook the container's
environment (CVE-2025-23266), so the hook takes its configuration from arguments only.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import click
from click.core import ParameterSource

from capctl import __version__
from capctl.devfs.nodes import Action
from capctl.errors import CapctlError
from capctl.host import DEFAULT_CONFIG, Host

#: Subcommands that must not read configuration from the environment.
_ENV_BLIND = frozenset({"hook"})


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"capctl: error: {message}", err=True)
    sys.exit(code)


class CapctlGroup(click.Group):
    """Maps :class:`CapctlError` (and stray OS errors) to one line on stderr."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CapctlError as err:
            _fail(str(err), err.exit_code)
        except BrokenPipeError:
            # The reader went away (``capctl list | head``): not an error worth a message.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(141)
        except OSError as err:
            # Every expected OS error is translated where it happens; this is the last net so a
            # user never sees a traceback.
            where = f"{err.filename}: " if err.filename else ""
            _fail(f"{where}{err.strerror or err}")


def _given(ctx: click.Context, name: str, value: Any, default: Any) -> tuple[Any, str]:
    """An option's value and where it came from: ``--name``, its ``CAPCTL_*`` variable, or
    ``default``.  An env-blind command (the hook) never takes the variable: default then."""
    source = ctx.get_parameter_source(name)
    if source is ParameterSource.COMMANDLINE:
        return value, f"--{name}"
    if source is ParameterSource.ENVIRONMENT and ctx.invoked_subcommand not in _ENV_BLIND:
        return value, f"CAPCTL_{name.upper()}"
    return default, "default"


@click.group(cls=CapctlGroup)
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="CAPCTL_ROOT",
    default=Path("/"),
    show_default=True,
    help="Host root of the driver files and nodes.",
)
@click.option(
    "--topology",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="CAPCTL_TOPOLOGY",
    default=None,
    help="MIG topology snapshot (JSON) to use instead of NVML.",
)
@click.option(
    "--config",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="CAPCTL_CONFIG",
    default=DEFAULT_CONFIG,
    show_default=True,
    help="capctl settings and grants.",
)
@click.version_option(version=__version__, prog_name="capctl")  # no importlib.metadata (25 ms)
@click.pass_context
def cli(ctx: click.Context, root: Path, topology: Path | None, config: Path) -> None:
    """Control access to NVIDIA MIG capability device nodes."""
    root, root_from = _given(ctx, "root", root, Path("/"))
    topology, topology_from = _given(ctx, "topology", topology, None)
    config, _config_from = _given(ctx, "config", config, DEFAULT_CONFIG)
    host = Host(root, config, topology, root_from, topology_from)
    if "default" in (host.root_from, host.topology_from):
        host = _with_config_host(host, tolerant=ctx.invoked_subcommand == "doctor")
    ctx.obj = host


def _with_config_host(host: Host, *, tolerant: bool) -> Host:
    """``host`` with the config's ``[host]`` for what no option or variable gave: the one
    precedence of every entry point (:func:`capctl.host.with_host_table`).  ``tolerant``: a
    config that cannot be read leaves the defaults (``doctor`` reports the config itself)."""
    from capctl.host import with_host_table
    from capctl.policy import settings

    try:
        table = settings.read_table(host.config)
        if table is None:
            return host
        hs = settings.host_from_table(host.config, table)
    except CapctlError:
        if tolerant:
            return host
        raise
    return with_host_table(host, hs.driver_root, hs.topology)


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False))


def _table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> None:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    click.echo(fmt.format(*header).rstrip())
    for row in rows:
        click.echo(fmt.format(*row).rstrip())


# --- list -------------------------------------------------------------------------------------


@cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def list_cmd(host: Host, as_json: bool) -> None:
    """Every capability in the driver's *-minors files and its node's state."""
    from capctl.devfs.inventory import inventory

    entries = inventory(host, _grant_ownership(host))
    if as_json:
        _print_json([e.to_json() for e in entries])
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
    _table(rows, ("NAME", "MINOR", "PATH", "EXISTS", "NODE"))


# --- sync -------------------------------------------------------------------------------------


def _grant_ownership(host: Host) -> dict[str, Any]:
    """Node ownership demanded by capctl's grants (``[grants]`` in the config)."""
    from capctl.policy import delegate

    return dict(delegate.ownership(host))


def _sync_cdi(host: Host, dry_run: bool) -> dict[str, Any] | None:
    """Regenerate the CDI spec named by ``[cdi] output`` (None: not configured)."""
    from capctl.deliver import cdifile
    from capctl.policy import settings

    cdi = settings.load_cdi(host.config)
    output = cdi.output
    if output is None:
        return None
    if dry_run:
        data = cdifile.render(host, management=cdi.management)
        try:
            with open(output, "rb") as f:
                changed = f.read(len(data) + 1) != data
        except FileNotFoundError:
            changed = True
        return {"path": output, "changed": changed}
    return {"path": output, "changed": cdifile.refresh(host, output, management=cdi.management)}


#: ``sync`` lists each changed node up to this many; more, and it prints only the summary.
SYNC_LIST_MAX = 20


@cli.command("sync")
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
        _print_json(
            {
                "dry_run": dry_run,
                **({} if cdi_out is None else {"cdi": cdi_out}),
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
    if cdi_out is not None and (cdi_out["changed"] or verbose):
        click.echo(f"{would}{'written' if cdi_out['changed'] else 'unchanged'}: {cdi_out['path']}")
    click.echo(
        f"{report.count(Action.CREATED)} {would}created, {report.count(Action.REPAIRED)} "
        f"{would}repaired, {report.count(Action.UNCHANGED)} unchanged, {len(report.skipped)} skipped"
        + (f", {len(report.removed)} {would}removed" if len(report.removed) else "")
    )


# --- doctor -----------------------------------------------------------------------------------


@cli.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
@click.pass_obj
def doctor_cmd(host: Host, as_json: bool) -> None:
    """What is present, missing or wrong on this host, and how to fix it."""
    from capctl import doctor

    results = doctor.run(host)
    failed = any(f.level is doctor.Level.FAIL for _t, fs in results for f in fs)
    if as_json:
        _print_json({topic: [f.to_json() for f in fs] for topic, fs in results})
    else:
        for topic, findings in results:
            click.echo(f"{topic}:")
            for f in findings:
                click.echo(f"  [{f.level.value:>4}] {f.what}")
                if f.fix and f.level is not doctor.Level.OK:
                    click.echo(f"         fix: {f.fix}")
    if failed:
        sys.exit(1)


# --- install ----------------------------------------------------------------------------------


@cli.command("install")
@click.option("--hooks-dir", default=None, metavar="DIR",
              help="hooks.d directory (podman, CRI-O); default /usr/share/containers/oci/hooks.d. "
                   "Naming any of --hooks-dir, --docker-config, --containerd-dir or --crio-dir "
                   "writes only the places named.")
@click.option("--no-hooks", is_flag=True, help="Write no hooks.d definition.")
@click.option("--always", is_flag=True,
              help="hooks.d: run the hook for every container, not only annotated ones.")
@click.option("--docker-config", default=None, metavar="FILE",
              help="Docker daemon.json to add runtime 'capctl' to (default if /etc/docker exists).")
@click.option("--containerd-dir", default=None, metavar="DIR",
              help="containerd drop-in directory (default if /etc/containerd exists).")
@click.option("--crio-dir", default=None, metavar="DIR",
              help="CRI-O drop-in directory (default if /etc/crio exists).")
@click.option("--docker-hook-link", default=None, metavar="DIR",
              help="Also link DIR/nvidia-container-runtime-hook to capctl-docker-hook (Docker --gpus).")
@click.option("--launcher-dir", default=None, metavar="DIR",
              help="Where to write capctl-runtime's launcher, which the runtime entries run "
                   "(default: PREFIX/libexec of this installation).")
@click.option("--dry-run", is_flag=True, help="Show what would be written; write nothing.")
@click.pass_context
def install_cmd(
    ctx: click.Context, hooks_dir: str | None, no_hooks: bool, always: bool,
    docker_config: str | None, containerd_dir: str | None, crio_dir: str | None,
    docker_hook_link: str | None, launcher_dir: str | None, dry_run: bool,
) -> None:
    """Write capctl's hook and runtime definitions for this installation."""
    from capctl import install

    host: Host = ctx.obj
    options: list[str] = []
    # Only what the command line gave is baked into the hook's arguments: [host] stays the
    # one place for the rest, read by the hook at every start (a change needs no reinstall).
    if host.root_from in ("--root", "CAPCTL_ROOT"):
        options += ["--root", os.path.abspath(host.root)]
    if host.topology_from in ("--topology", "CAPCTL_TOPOLOGY"):
        options += ["--topology", os.path.abspath(str(host.topology))]
    if host.config != DEFAULT_CONFIG:
        options += ["--config", os.path.abspath(host.config)]
    inst = install.Installation(
        sys.executable, os.path.dirname(sys.executable), tuple(options),
        launcher_dir=os.path.abspath(launcher_dir or os.path.join(sys.prefix, "libexec")),
        paths=install.import_paths(), config=os.path.abspath(host.config),
    )
    # Naming any runtime's place means "these and no others": no surprise writes into /etc
    # for a runtime the admin did not mention.  Naming none means every runtime found.
    named = any(x is not None for x in (hooks_dir, docker_config, containerd_dir, crio_dir))
    found = install.default_targets([] if named else [
        d for d in ("/etc/docker", "/etc/containerd", "/etc/crio") if os.path.isdir(d)])
    writes = install.plan(
        inst,
        hooks_dir=None if no_hooks or (named and hooks_dir is None)
        else (hooks_dir or install.HOOKS_DIR),
        always=always,
        docker_config=docker_config or found["docker_config"],
        capctl_config=None if host.config == DEFAULT_CONFIG else os.path.abspath(host.config),
        containerd_dir=containerd_dir or found["containerd_dir"],
        crio_dir=crio_dir or found["crio_dir"],
    )
    verb = "would write" if dry_run else "wrote"
    if dry_run:
        click.echo(f"host: {host.describe()}")
    for w in writes:
        if not dry_run:
            install.write_atomic(w)
        click.echo(f"{verb} {w.path}: {w.what}{' (replaced own file)' if w.replaces else ''}")
        if dry_run:
            click.echo("    " + w.text.rstrip().replace("\n", "\n    "))
    if docker_hook_link is not None:
        path = install.link_docker_hook(docker_hook_link, inst, dry_run=dry_run)
        click.echo(f"{'would link' if dry_run else 'linked'} {path} -> {inst.docker_hook}")


# --- resolve / topology ---------------------------------------------------------------


@cli.command("resolve")
@click.argument("devices")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def resolve_cmd(host: Host, devices: str, as_json: bool) -> None:
    """DEVICES (NVIDIA_VISIBLE_DEVICES syntax) -> MIG devices, capabilities and device nodes."""
    from capctl.request import resolve

    plan = resolve.resolve_visible_devices(devices, host)
    if as_json:
        _print_json(plan.to_list())
        return
    rows = [
        (
            d.uuid,
            str(d.gpu_index),
            str(d.gpu_minor),
            "-" if d.gi is None else str(d.gi),
            "-" if d.ci is None else str(d.ci),
            ", ".join(f"{c.name}={c.minor}" for c in d.caps) or "-",
            ", ".join(d.device_nodes) or "-",
        )
        for d in plan.devices
    ]
    _table(rows, ("UUID", "GPU", "MINOR", "GI", "CI", "CAPS (NAME=MINOR)", "DEVICE NODES"))


@cli.command("topology")
@click.option("--json", "as_json", is_flag=True, help="Snapshot JSON, accepted back by --topology.")
@click.pass_obj
def topology_cmd(host: Host, as_json: bool) -> None:
    """The MIG topology as capctl sees it (NVML, or the --topology snapshot)."""
    from capctl.request import topology

    topo = topology.load_topology(host)
    if as_json:
        click.echo(topo.to_json(), nl=False)
        return
    rows: list[tuple[str, ...]] = []
    for g in topo.gpus:
        mig = "enabled" if g.mig_enabled else "disabled"
        rows.append(
            (f"GPU {g.index}", str(g.minor), "-", "-", g.uuid, g.name, f"{g.pci_bus_id} MIG {mig}")
        )
        rows += [
            (f"  {g.index}:{m.index}", str(g.minor), str(m.gi), str(m.ci), m.uuid, m.profile, "")
            for m in g.mig_devices
        ]
    _table(rows, ("DEVICE", "MINOR", "GI", "CI", "UUID", "NAME/PROFILE", "PCI BUS ID"))


# --- cdi -------------------------------------------------------------------------------------


def _cdi_kind(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from capctl.deliver import cdi

    try:
        cdi.check_kind(value)
    except CapctlError as err:
        raise click.BadParameter(str(err)) from err
    return value


@cli.group("cdi")
def cdi_group() -> None:
    """Container Device Interface specs for CDI-aware runtimes."""


@cdi_group.command("generate")
@click.option("--output", "output", default=None, metavar="FILE",
              help="Spec file to write atomically ('-': stdout).  "
                   "[default: /var/run/cdi/capctl.io-mig.json]")
@click.option("--kind", default="capctl.io/mig", show_default=True, callback=_cdi_kind,
              metavar="VENDOR/CLASS", help="CDI kind of the devices.")
@click.option("--management/--no-management", default=None,
              help="With or without the mig-config / mig-monitor devices, most of the spec's "
                   "size.  [default: [cdi] management of the config, else with]")
@click.pass_obj
def cdi_generate_cmd(host: Host, output: str | None, kind: str, management: bool | None) -> None:
    """A CDI spec for every MIG device and GPU of the host's current topology."""
    from capctl.deliver import cdi, cdifile
    from capctl.policy import settings

    if management is None:
        management = settings.load_cdi(host.config).management
    output = cdi.DEFAULT_OUTPUT if output is None else output
    if output == "-":
        click.echo(cdifile.render(host, kind, management=management).decode("ascii"), nl=False)
        return
    changed = cdifile.generate(host, output, kind, management=management)
    click.echo(f"{output}: {'written' if changed else 'unchanged'}", err=True)


# --- hook -------------------------------------------------------------------------------------


@cli.command("hook")
@click.pass_obj
def hook_cmd(host: Host) -> None:
    """OCI prestart/createRuntime hook: reads the container state from stdin.

    Global options come from the command line only (never CAPCTL_* variables).
    """
    from capctl.deliver import hook

    sys.exit(hook.main(host))


# --- delegation: grant / revoke / grants / watch -------------------------------------


def _principal(user: str | None, group: str | None, *, required: bool) -> tuple[Any, str | None]:
    from capctl.policy.grants import Kind

    if user is not None and group is not None:
        raise click.UsageError("give --user or --group, not both")
    if user is not None:
        return Kind.USER, user
    if group is not None:
        return Kind.GROUP, group
    if required:
        raise click.UsageError("give --user U or --group G")
    return None, None


@cli.command("grant")
@click.argument("capability")
@click.option("--user", "user", metavar="U", help="User name or uid.")
@click.option("--group", "group", metavar="G", help="Group name or gid.")
@click.pass_obj
def grant_cmd(host: Host, capability: str, user: str | None, group: str | None) -> None:
    """Let a user or group open CAPABILITY (mig-config, mig-monitor or a name from list)."""
    from capctl.policy import delegate

    kind, who = _principal(user, group, required=True)
    assert who is not None
    out = delegate.grant(host, capability, kind, who)
    p = out.principals[0]
    verb = "granted" if out.changed else "already granted"
    where = "applied" if out.applied else f"stored; applies when {out.capability} appears"
    click.echo(f"{verb}: {out.capability} to {p} ({where})")


@cli.command("revoke")
@click.argument("capability")
@click.option("--user", "user", metavar="U", help="User name or uid (default: every grantee).")
@click.option("--group", "group", metavar="G", help="Group name or gid.")
@click.pass_obj
def revoke_cmd(host: Host, capability: str, user: str | None, group: str | None) -> None:
    """Take CAPABILITY away from a user or group (or from every grantee)."""
    from capctl.policy import delegate, store

    kind, who = _principal(user, group, required=False)
    out = delegate.revoke(host, capability, kind, who)
    for p in out.principals:
        click.echo(f"revoked: {out.capability} from {p}")
    if not out.applied:
        click.echo(f"{out.capability}: removed from the config; its node was not changed (the "
                   "capability or the driver is not there now): run 'capctl sync' once it is")
    elif not store.load_policy(Path(host.config)).get(out.capability):
        click.echo(f"{out.capability}: no grants left; driver defaults restored")


@cli.command("grants")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def grants_cmd(host: Host, as_json: bool) -> None:
    """The capabilities delegated to users and groups."""
    from capctl.policy import delegate, principals

    views = delegate.describe(host)
    if as_json:
        _print_json([v.to_json() for v in views])
        return

    def who(p: Any) -> str:
        status, detail = principals.status(p)
        return f"{p.name}({p.id})" + ("" if status == "ok" else f"[{status}: {detail}]")

    rows = [
        (
            v.capability,
            ",".join(who(p) for p in v.grants.users) or "-",
            ",".join(who(p) for p in v.grants.groups) or "-",
        )
        for v in views
    ]
    _table(rows, ("CAPABILITY", "USERS", "GROUPS"))


@cli.command("watch")
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
    appears or goes (a poll), so that grants hold and the spec stays current.  The spec has
    the mig-config / mig-monitor devices unless the config's [cdi] management is false (read
    at start).  Stops on SIGTERM/SIGINT."""
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
                if cdifile.refresh(host, cdi_output, management=cdi_settings.management):
                    click.echo(f"cdi: {cdi_output} written", err=True)
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


# --- node commands for a DaemonSet: health, uninstall (capctl/nodecli.py) -----------------

from capctl import nodecli  # noqa: E402  (the registration is all that lives here)

nodecli.register(cli)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="capctl")

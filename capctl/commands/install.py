"""``capctl install``: the hook and runtime definitions for this installation."""

from __future__ import annotations

import os
import sys

import click

from capctl.host import DEFAULT_CONFIG, Host


@click.command("install")
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
              help="Also write capctl-docker-hook's launcher and link "
                   "DIR/nvidia-container-runtime-hook to it (Docker --gpus).")
@click.option("--launcher-dir", default=None, metavar="DIR",
              help="Where to write the launchers: capctl's, capctl-runtime's (which the runtime "
                   "entries run) and capctl-docker-hook's (default: PREFIX/libexec of this "
                   "installation).")
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
    install.check_trusted(inst)
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
        docker_hook=docker_hook_link is not None,
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

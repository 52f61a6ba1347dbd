"""The ``capctl`` command line: a thin click front over the library.

The root group builds one :class:`~capctl.host.Host` into ``ctx.obj``; each command calls one
library function and formats its result.  Expected failures are :class:`CapctlError` and come
out as one ``capctl: error: ...`` line and exit 1; usage errors are click's (exit 2).

Environment variables (``CAPCTL_ROOT``, ``CAPCTL_TOPOLOGY``, ``CAPCTL_CONFIG``) are honoured
for commands an admin types, but never for ``hook``: a runtime may hand a hook the container's
environment (CVE-2025-23266), so the hook takes its configuration from arguments only.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from capctl import __version__
from capctl.guard import guarded
from capctl.host import DEFAULT_CONFIG, Host

#: Subcommands that must not read configuration from the environment.
_ENV_BLIND = frozenset({"hook"})
#: Subcommands that use no :class:`Host`, so the config's ``[host]`` is not read for them.
_HOST_FREE = frozenset({"health", "uninstall"})


class CapctlGroup(click.Group):
    """The subcommands of :data:`COMMANDS`, each imported when it runs (click's documented
    lazy group: ``list_commands`` and ``get_command``), and :class:`CapctlError` (and stray OS
    errors) as one line on stderr.  Commands added with ``@cli.command`` work as well."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands or cmd_name not in COMMANDS:
            return super().get_command(ctx, cmd_name)
        module, _, attr = COMMANDS[cmd_name][0].partition(":")
        cmd = getattr(importlib.import_module(module), attr)
        assert isinstance(cmd, click.Command), COMMANDS[cmd_name]
        return cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The commands and their short helps, as click lists them, from :data:`COMMANDS`
        without importing the commands."""
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(n) for n in names)
        rows = []
        for name in names:
            cmd = self.commands.get(name) or click.Command(name, help=COMMANDS[name][1])
            if not cmd.hidden:
                rows.append((name, cmd.get_short_help_str(limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        return guarded(lambda: super(CapctlGroup, self).invoke(ctx))


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
    from capctl.policy.settings import with_config_host

    host = Host(root, config, topology, root_from, topology_from)
    if ctx.invoked_subcommand in _HOST_FREE:
        ctx.obj = host  # the config is not theirs to judge: a probe fails only on its file
    else:
        ctx.obj = with_config_host(host, tolerant=ctx.invoked_subcommand == "doctor")


#: Every subcommand: its name -> ("module:attribute", its short help).  A command's module is
#: imported only when the command runs (or its own ``--help`` is shown), and ``capctl --help``
#: lists these short helps without importing any of them: click's own import is most of
#: the CLI's start (``bench/bench_hook.py``).  To add a command: a module in
#: ``capctl/commands/`` and one line here (``tests/test_cli_lazy.py`` checks that each short
#: help is the command's own).
COMMANDS: dict[str, tuple[str, str]] = {
    "cdi": ("capctl.commands.cdi:cdi_group",
            "Container Device Interface specs for CDI-aware runtimes."),
    "doctor": ("capctl.commands.doctor:doctor_cmd",
               "What is present, missing or wrong on this host, and how to fix it."),
    "grant": ("capctl.commands.grants:grant_cmd",
              "Let a user or group open CAPABILITY (mig-config, mig-monitor or a name from list)."),
    "grants": ("capctl.commands.grants:grants_cmd",
               "The capabilities delegated to users and groups."),
    "health": ("capctl.commands.node:health_cmd",
               "Whether 'capctl watch' is alive (liveness) and, with --ready, in sync "
               "(readiness)."),
    "hook": ("capctl.commands.hook:hook_cmd",
             "OCI prestart/createRuntime hook: reads the container state from stdin."),
    "install": ("capctl.commands.install:install_cmd",
                "Write capctl's hook and runtime definitions for this installation."),
    "list": ("capctl.commands.nodes:list_cmd",
             "Every capability in the driver's *-minors files and its node's state."),
    "resolve": ("capctl.commands.resolve:resolve_cmd",
                "DEVICES (NVIDIA_VISIBLE_DEVICES syntax) -> MIG devices, capabilities and "
                "device nodes."),
    "revoke": ("capctl.commands.grants:revoke_cmd",
               "Take CAPABILITY away from a user or group (or from every grantee)."),
    "sync": ("capctl.commands.nodes:sync_cmd",
             "Create or repair the host's capability nodes (idempotent)."),
    "uninstall": ("capctl.commands.node:uninstall_cmd",
                  "Remove what 'capctl install' and 'capctl watch' wrote in the places named, "
                  "and only what capctl wrote: a foreign file at one of its names is left and "
                  "reported."),
    "topology": ("capctl.commands.resolve:topology_cmd",
                 "The MIG topology as capctl sees it (NVML, or the --topology snapshot)."),
    "watch": ("capctl.commands.watch:watch_cmd",
              "Run sync (and regenerate the CDI spec) at start, whenever the nvidia driver "
              "(re)loads (kernel uevents), whenever a capability node changes (inotify) and "
              "whenever a MIG instance appears or goes (a poll), so that grants hold and the "
              "spec stays current."),
}


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="capctl")

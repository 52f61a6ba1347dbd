"""``capctl hook`` through click (``--help``, a malformed call); runtimes start the hook
without click (:mod:`capctl.main`)."""

from __future__ import annotations

import sys

import click

from capctl.host import Host


@click.command("hook")
@click.pass_obj
def hook_cmd(host: Host) -> None:
    """OCI prestart/createRuntime hook: reads the container state from stdin.

    Global options come from the command line only (never CAPCTL_* variables).
    """
    from capctl.deliver import hook

    sys.exit(hook.main(host))

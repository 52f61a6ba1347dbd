"""``capctl cdi``: Container Device Interface specs."""

from __future__ import annotations

import click

from capctl.errors import CapctlError
from capctl.host import Host


def _cdi_kind(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from capctl.deliver import cdi

    try:
        cdi.check_kind(value)
    except CapctlError as err:
        raise click.BadParameter(str(err)) from err
    return value


@click.group("cdi")
def cdi_group() -> None:
    """Container Device Interface specs for CDI-aware runtimes."""


@cdi_group.command("generate")
@click.option("--output", "output", default=None, metavar="FILE",
              help="Spec file to write atomically ('-': stdout).  "
                   "[default: /var/run/cdi/capctl.io-mig.json]")
@click.option("--kind", default="capctl.io/mig", show_default=True, callback=_cdi_kind,
              metavar="VENDOR/CLASS", help="CDI kind of the devices.")
@click.option("--management/--no-management", default=None,
              help="Also write the mig-config / mig-monitor devices, to their own spec "
                   "NAME-management.json beside NAME.json; without, remove the one capctl "
                   "wrote.  [default: [cdi] management of the config, else without]")
@click.pass_obj
def cdi_generate_cmd(host: Host, output: str | None, kind: str, management: bool | None) -> None:
    """A CDI spec for every MIG device and GPU of the host's current topology ('-': that
    spec on stdout, without the management spec)."""
    from capctl.deliver import cdi, cdifile
    from capctl.policy import settings

    if management is None:
        management = settings.load_cdi(host.config).management
    output = cdi.DEFAULT_OUTPUT if output is None else output
    if output == "-":
        click.echo(cdifile.render(host, kind).main.decode("ascii"), nl=False)
        return
    for spec in cdifile.generate(host, output, kind, management=management):
        if spec.action != "absent":
            click.echo(f"{spec.path}: {spec.action}", err=True)

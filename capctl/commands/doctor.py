"""``capctl doctor``: findings with a fix each."""

from __future__ import annotations

import sys

import click

from capctl.commands.output import print_json
from capctl.host import Host


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
@click.pass_obj
def doctor_cmd(host: Host, as_json: bool) -> None:
    """What is present, missing or wrong on this host, and how to fix it."""
    from capctl import doctor

    results = doctor.run(host)
    failed = any(f.level is doctor.Level.FAIL for _t, fs in results for f in fs)
    if as_json:
        print_json({topic: [f.to_json() for f in fs] for topic, fs in results})
    else:
        for topic, findings in results:
            click.echo(f"{topic}:")
            for f in findings:
                click.echo(f"  [{f.level.value:>4}] {f.what}")
                if f.fix and f.level is not doctor.Level.OK:
                    click.echo(f"         fix: {f.fix}")
    if failed:
        sys.exit(1)

"""``capctl grant``, ``revoke`` and ``grants``: delegation to users and groups."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from capctl.commands.output import print_json, table
from capctl.host import Host


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


@click.command("grant")
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


@click.command("revoke")
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


@click.command("grants")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def grants_cmd(host: Host, as_json: bool) -> None:
    """The capabilities delegated to users and groups."""
    from capctl.policy import delegate, principals

    views = delegate.describe(host)
    if as_json:
        print_json([v.to_json() for v in views])
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
    table(rows, ("CAPABILITY", "USERS", "GROUPS"))

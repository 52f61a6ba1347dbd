"""Users and groups: look a grantee up by name or id, and check a stored name still fits."""

from __future__ import annotations

import grp
import pwd

from capctl.errors import ConfigError
from capctl.policy.grants import Kind, Principal

# --- users and groups --------------------------------------------------------------------------


def resolve(kind: Kind, text: str) -> Principal:
    """A user or group that exists now, by name or numeric id; else a ConfigError naming it."""
    # ASCII digits only: str.isdigit() takes "²" (and int() then fails) and int() reads "٣"
    # as 3, a different user than the one named.  Anything else is a name, looked up as such.
    numeric = text.isascii() and text.isdigit()
    try:
        if kind is Kind.USER:
            pw = pwd.getpwuid(int(text)) if numeric else pwd.getpwnam(text)
            return Principal(kind, pw.pw_uid, pw.pw_name)
        gr = grp.getgrgid(int(text)) if numeric else grp.getgrnam(text)
        return Principal(kind, gr.gr_gid, gr.gr_name)
    except (KeyError, OverflowError, ValueError) as err:
        raise ConfigError(f"unknown {kind.value} {text!r}: no such {kind.value} here") from err


def current_name(p: Principal) -> str | None:
    """The name ``p``'s id has now (None: no such id)."""
    try:
        if p.kind is Kind.USER:
            return pwd.getpwuid(p.id).pw_name
        return grp.getgrgid(p.id).gr_name
    except (KeyError, OverflowError):
        return None


def status(p: Principal) -> tuple[str, str]:
    """``("ok"|"changed"|"missing", detail)``: does the stored name still match the id?"""
    now = current_name(p)
    if now is None:
        return "missing", f"no {p.kind.value} has {p.kind.id_key} {p.id} now"
    if now != p.name:
        return "changed", f"{p.kind.id_key} {p.id} is now {now!r}"
    return "ok", ""

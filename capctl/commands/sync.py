"""``capctl sync``'s run and output, without click: the click command
(:mod:`capctl.commands.nodes`) and the fast entry (:mod:`capctl.main`) share them.

``sync`` runs when the driver loads (udev, ``capctl-sync.service``), so its common command
lines skip click: :func:`fast_main` takes the global options as the click group does
(option, then ``CAPCTL_*``, then the config's ``[host]``, then the default), runs the sync and
prints exactly what the click command prints, and fails as it fails (``capctl: error: ...``,
the error's exit status; 141 when stdout's reader went away).
"""

from __future__ import annotations

import os
import stat
import sys

from capctl._lite.strpath import normalized
from capctl.devfs.nodes import Action
from capctl.errors import CapctlError
from capctl.guard import guarded
from capctl.host import DEFAULT_CONFIG, Host

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from capctl.deliver.cdifile import Outcome
    from capctl.devfs.sync import SyncReport

    CdiOut = tuple[Outcome, Outcome] | None

#: ``sync`` lists each changed node up to this many; more, and it prints only the summary.
SYNC_LIST_MAX = 20


def sync_cdi(host: Host, dry_run: bool) -> CdiOut:
    """Regenerate the CDI specs named by ``[cdi] output`` (None: not configured)."""
    from capctl.policy import settings

    cdi = settings.load_cdi(host.config)
    if cdi.output is None:
        return None
    from capctl.deliver import cdifile

    return cdifile.refresh(host, cdi.output, management=cdi.management, dry_run=dry_run)


def run(host: Host, *, everything: bool, dry_run: bool) -> tuple[SyncReport, CdiOut]:
    """Sync the nodes (:func:`capctl.devfs.sync.sync_host`), then the CDI specs."""
    from capctl.devfs import sync

    # Also re-writes DeviceFileModify: 0 for granted capabilities (a driver reload resets it).
    try:
        report = sync.sync_host(host, everything=everything, dry_run=dry_run)
    except CapctlError:
        # The CDI spec still follows the driver (or goes): never left stale by a failed sync.
        if not dry_run:
            try:
                sync_cdi(host, dry_run)
            except CapctlError:
                pass
        raise
    return report, sync_cdi(host, dry_run)


def text(report: SyncReport, cdi_out: CdiOut, *, dry_run: bool, verbose: bool) -> str:
    """What ``sync`` prints: each change (every node with ``verbose``), the skipped
    capabilities, the CDI specs that changed, and a summary line."""
    would = "would be " if dry_run else ""
    groups = (report.removed, report.changes, report.link_changes, report.device_links)
    unchanged = sum(g.tally(Action.UNCHANGED) for g in groups)
    changed = sum(len(g) for g in groups) - unchanged
    # One line a node is for a few changes (a repair, a stray) or -v; a first sync creates
    # thousands, and printing them cost most of its time: then the summary says how many.
    lines = []
    if verbose or changed <= SYNC_LIST_MAX:
        lines = [f"{would}{c.action.value}: {c.path}" + (f" ({c.reason})" if c.reason else "")
                 for g in groups for c in g
                 if verbose or c.action is not Action.UNCHANGED]
    if not lines and changed:
        lines = [f"{changed} nodes and /dev/char links {would}changed; -v lists each"]
    lines += [f"skipped: {skip.name}: {skip.reason}" for skip in report.skipped]
    lines += [f"{would}{spec.action}: {spec.path}" for spec in cdi_out or ()
              if spec.changed or (verbose and spec.action != "absent")]
    lines.append(
        f"{report.count(Action.CREATED)} {would}created, {report.count(Action.REPAIRED)} "
        f"{would}repaired, {report.count(Action.UNCHANGED)} unchanged, {len(report.skipped)} skipped"
        + (f", {len(report.removed)} {would}removed" if len(report.removed) else "")
    )
    return "\n".join(lines) + "\n"


def json_doc(report: SyncReport, cdi_out: CdiOut, *, dry_run: bool) -> dict[str, Any]:
    """What ``sync --json`` prints (docs/contract.md)."""
    def changes(group: Any) -> list[dict[str, Any]]:
        return [{"path": c.path, "action": c.action.value, "reason": c.reason or None}
                for c in group]

    return {
        "dry_run": dry_run,
        **({} if cdi_out is None else {"cdi": {
            "path": cdi_out[0].path, "changed": cdi_out[0].changed,
            "management": {"path": cdi_out[1].path, "action": cdi_out[1].action}}}),
        "nodes": changes(report.changes),
        "links": changes(report.link_changes),
        "device_links": changes(report.device_links),
        "skipped": [{"name": s.name, "reason": s.reason} for s in report.skipped],
        "removed": [{"path": c.path, "reason": c.reason} for c in report.removed],
    }


# --- the fast entry --------------------------------------------------------------------------


#: The global options: (option, its CAPCTL_* variable, default, whether a directory is its
#: kind).  click's ``Path(file_okay=False)`` / ``Path(dir_okay=False)`` refuse the other kind.
_GLOBALS = (
    ("--root", "CAPCTL_ROOT", "/", True),
    ("--topology", "CAPCTL_TOPOLOGY", None, False),
    ("--config", "CAPCTL_CONFIG", DEFAULT_CONFIG, False),
)


def _value(opts: Mapping[str, str], environ: Mapping[str, str], option: str, var: str,
           is_dir: bool) -> tuple[str | None, str] | None:
    """An option's value and where it came from, or None for a value click would refuse
    (then click says why)."""
    if option in opts:
        value, source = opts[option], option
    else:
        value, source = environ.get(var, ""), var  # click ignores an empty variable
        if not value:
            return None, "default"
    try:
        st = os.stat(value)
    except OSError:
        return normalized(value), source
    if stat.S_ISDIR(st.st_mode) != is_dir or not os.access(value, os.R_OK):
        return None
    return normalized(value), source


def host_from(opts: Mapping[str, str], environ: Mapping[str, str]) -> Host | None:
    """The :class:`Host` the click group builds for these options and variables, before the
    config's ``[host]``; None where click would refuse a value."""
    got = []
    for option, var, default, is_dir in _GLOBALS:
        found = _value(opts, environ, option, var, is_dir)
        if found is None:
            return None
        value, source = found
        got.append((default, "default") if value is None else (value, source))
    (root, root_from), (topology, topology_from), (config, _) = got
    assert root is not None and config is not None
    return Host(root, config, topology, root_from, topology_from)


def fast_main(host: Host, flags: list[str]) -> None:
    """``capctl [options] sync [flags]`` without click, for the ``host`` of :func:`host_from`:
    print what the click command prints, fail as it fails (:func:`capctl.guard.guarded`)."""
    verbose = "-v" in flags or "--verbose" in flags
    dry_run = "--dry-run" in flags

    def sync() -> None:
        from capctl.policy.settings import with_config_host

        full = with_config_host(host, tolerant=False)
        report, cdi_out = run(full, everything="--all" in flags, dry_run=dry_run)
        sys.stdout.write(text(report, cdi_out, dry_run=dry_run, verbose=verbose))
        sys.stdout.flush()

    guarded(sync)

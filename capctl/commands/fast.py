"""The command lines :mod:`capctl.main` runs without click (about 25 ms of imports).

- ``capctl [options] sync [--all] [--dry-run] [-v]``: the udev rules and
  ``capctl-sync.service`` run it when the driver loads, and admins type it.
- ``capctl [options] health --heartbeat FILE [--max-age S] [--ready]``: the DaemonSet's
  probes run it every few seconds on every node.

Each takes the global options as the click group does (the option, then its ``CAPCTL_*``
variable, then the config's ``[host]``, then the default), prints exactly what the click
command prints and fails as it fails (:func:`capctl.guard.guarded`).  A value click would
refuse (``--root`` naming a file, ``--max-age 0``) is not judged here: :func:`host_from` and
:func:`health_options` answer None, and click parses the command line and says why
(``tests/test_fast_commands.py`` holds both paths to the same output).
"""

from __future__ import annotations

import os
import stat
import sys

from capctl._lite.strpath import normalized
from capctl.guard import guarded
from capctl.host import DEFAULT_CONFIG, Host

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

#: The global options: (option, its CAPCTL_* variable, default, whether a directory is its
#: kind).  click's ``Path(file_okay=False)`` / ``Path(dir_okay=False)`` refuse the other kind.
_GLOBALS = (
    ("--root", "CAPCTL_ROOT", "/", True),
    ("--topology", "CAPCTL_TOPOLOGY", None, False),
    ("--config", "CAPCTL_CONFIG", DEFAULT_CONFIG, False),
)


def _value(opts: Mapping[str, str], environ: Mapping[str, str], option: str, var: str,
           is_dir: bool) -> tuple[str | None, str] | None:
    """An option's value and where it came from, or None for a value click would refuse."""
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


def _print(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def sync(host: Host, flags: list[str]) -> None:
    """``capctl sync`` with ``flags`` (``--all``, ``--dry-run``, ``-v``/``--verbose``)."""
    dry_run = "--dry-run" in flags

    def run() -> None:
        from capctl.commands import sync
        from capctl.policy.settings import with_config_host

        report, cdi_out = sync.run(with_config_host(host, tolerant=False),
                                   everything="--all" in flags, dry_run=dry_run)
        _print(sync.text(report, cdi_out, dry_run=dry_run,
                         verbose="-v" in flags or "--verbose" in flags))

    guarded(run)


def health_options(values: Mapping[str, str]) -> tuple[str, float] | None:
    """``(--heartbeat, --max-age)`` as click takes them, or None for click to judge: a
    missing ``--heartbeat``, or a ``--max-age`` that is not a plain decimal number of at
    least 1 (click's ``FloatRange(min=1.0)`` also takes ``1e3``, ``inf`` and the like)."""
    path = values.get("--heartbeat")
    if path is None:
        return None
    text = values.get("--max-age", "60")
    whole, _, frac = text.partition(".")
    if not (whole + frac).isdigit() or not (whole + frac).isascii():
        return None
    max_age = float(text)
    return (path, max_age) if max_age >= 1.0 else None


def health(path: str, max_age: float, flags: list[str]) -> None:
    """``capctl health --heartbeat PATH --max-age MAX_AGE [--ready]``."""
    def run() -> None:
        from capctl.watch import heartbeat

        _print(heartbeat.check(path, max_age=max_age, ready="--ready" in flags) + "\n")

    guarded(run)

"""The ``capctl`` entry point.

Three command lines skip click (about 30 ms of imports) and go straight to their library code:

- ``capctl [--root R] [--topology T] [--config C] hook`` runs on every container start
  (:mod:`capctl.deliver.hook`), with options taken from the arguments only, never from the
  environment.  Nothing on that path imports re, enum, pathlib, json, contextlib or typing
  (``tests/test_hook_imports.py``).
- ``capctl [options] sync [--all] [--dry-run] [-v]``, which runs when the driver loads (udev,
  ``capctl-sync.service``), and ``capctl [options] health --heartbeat FILE [--max-age S]
  [--ready]``, which the DaemonSet's probes run (:mod:`capctl.commands.fast`); both honour
  ``CAPCTL_*`` as the click commands do.

``capctl --version`` is answered here too, in click's words, without importing click.  Every
other command line, including malformed ones and ``--help``, goes to the click CLI, which
imports a command's modules only when that command runs (:mod:`capctl.cli`).  The fast paths
print what the click commands print and exit as they exit
(``tests/test_fast_commands.py``).
"""

from __future__ import annotations

import gc
import os
import sys

from capctl import __version__

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

_OPTIONS = ("--root", "--topology", "--config")

#: What a hook definition's ``-c`` runs once its ``sys.path`` is set:
#: ``<python> -I -S -c "import sys; sys.path += [...]; <HOOK_ENTRY>" [options] hook``
#: (:func:`capctl.install.interpreter_args`, ``hooks/``).  ``-I`` isolates the interpreter
#: from the environment a runtime may pass through (``PYTHONPATH``, user site-packages);
#: ``-S`` leaves out ``site`` (about 3 ms, more with ``.pth`` files), whose only use here was
#: putting site-packages on ``sys.path``, which the definition does itself.  ``-c``, not
#: ``-m capctl``: ``-m`` imports runpy (about 3 ms of every container start;
#: docs/hook-startup.md) and pip's console script imports ``re``.
HOOK_ENTRY = "from capctl.main import hook_entry; hook_entry()"
#: click's ``--version`` line (``click.version_option``'s default message).
VERSION_LINE = f"capctl, version {__version__}\n"


#: What each fast command takes after its name: its flags (each may repeat, as click's flags
#: may) and its options with a value (each at most once here; click takes the last).
FAST: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "hook": (frozenset(), frozenset()),
    "sync": (frozenset({"--all", "--dry-run", "-v", "--verbose"}), frozenset()),
    "health": (frozenset({"--ready"}), frozenset({"--heartbeat", "--max-age"})),
}


def _option(argv: list[str], i: int, names: frozenset[str] | tuple[str, ...],
            ) -> tuple[str, str, int] | None:
    """``(name, value, index after it)`` for the option ``--name VALUE`` or ``--name=VALUE``
    at ``argv[i]``, if its name is one of ``names`` and its value is not empty; else None."""
    name, eq, value = argv[i].partition("=")
    if name not in names:
        return None
    if not eq:
        if i + 1 >= len(argv):
            return None
        value = argv[i + 1]
        i += 1
    return (name, value, i + 1) if value else None


def fast_command(argv: list[str], command: str,
                 ) -> tuple[dict[str, str], list[str], dict[str, str]] | None:
    """``(global options, flags, options)`` if ``argv`` is exactly ``[global options] COMMAND
    [its flags and options]`` as :data:`FAST` lists them, each option given at most once;
    else None (click then parses it and says what is wrong)."""
    flags, valued = FAST[command]
    opts: dict[str, str] = {}
    i = 0
    while i < len(argv) and argv[i] != command:
        found = _option(argv, i, _OPTIONS)
        if found is None or found[0] in opts:
            return None
        opts[found[0]] = found[1]
        i = found[2]
    if i >= len(argv):
        return None
    given: list[str] = []
    values: dict[str, str] = {}
    i += 1
    while i < len(argv):
        if argv[i] in flags:
            given.append(argv[i])
            i += 1
            continue
        found = _option(argv, i, valued)
        if found is None or found[0] in values:
            return None
        values[found[0]] = found[1]
        i = found[2]
    return opts, given, values


def hook_options(argv: list[str]) -> dict[str, str] | None:
    """The global options if ``argv`` is exactly ``[options] hook``; else None."""
    found = fast_command(argv, "hook")
    return None if found is None else found[0]


def main() -> None:
    argv = sys.argv[1:]
    if argv == ["--version"]:
        sys.stdout.write(VERSION_LINE)
        return
    opts = hook_options(argv)
    if opts is not None:
        # A hook lives for milliseconds and makes no garbage cycles worth collecting; the
        # collector would run a few times during the imports alone (about 0.7 ms).
        gc.disable()
        from capctl.deliver.hook import main as hook_main
        from capctl.host import DEFAULT_CONFIG, Host

        host = Host(
            root=opts.get("--root", "/"),
            config=opts.get("--config", DEFAULT_CONFIG),
            topology=opts.get("--topology"),
            root_from="--root" if "--root" in opts else "default",
            topology_from="--topology" if "--topology" in opts else "default",
        )
        sys.exit(hook_main(host))
    for command in ("sync", "health"):
        found = fast_command(argv, command)
        if found is not None:
            _fast(command, *found)
    from capctl.cli import main as cli_main

    cli_main()


def _fast(command: str, opts: dict[str, str], flags: list[str], values: dict[str, str]) -> None:
    """Run ``sync`` or ``health`` without click (:mod:`capctl.commands.fast`) and end the
    process; return only where click must judge a value (and say why it refuses it)."""
    from capctl.commands import fast

    host = fast.host_from(opts, os.environ)
    if host is None:
        return
    if command == "sync":
        # A first sync makes some 20,000 objects and no cycles: the collector would only
        # walk them (about 3 ms), and tearing them down at exit another 2 ms.
        gc.disable()
        exit_now(lambda: fast.sync(host, flags))
    health = fast.health_options(values)
    if health is not None:
        exit_now(lambda: fast.health(*health, flags))


def hook_entry() -> None:
    """:func:`main`, then exit without the interpreter's teardown (what hooks run)."""
    exit_now(main)


def exit_now(entry: Callable[[], None]) -> None:
    """Run ``entry``, then exit without the interpreter's teardown (every hook entry point,
    and the fast ``sync``: :func:`main` does not return from one).

    Tearing down the modules and objects of a finished hook costs about 2 ms of every
    container start and does nothing the kernel does not do at exit: every file capctl
    writes is written with ``os.write`` or closed before this point, and capctl registers no
    ``atexit`` handler (none runs).  Only the standard streams are flushed.
    """
    try:
        entry()
        code: object = 0
    except SystemExit as stop:
        code = stop.code
    if code is None:
        code = 0
    elif not isinstance(code, int):
        sys.stderr.write(f"{code}\n")
        code = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:
        code = code or 1
    os._exit(code)

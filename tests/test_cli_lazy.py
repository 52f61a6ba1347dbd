"""The CLI imports a command's modules only when it runs, and ``--version`` needs no click.

A structural check (the modules a process holds when it exits), not a timing; the time is
``bench/bench_hook.py``'s.
"""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from capctl import __version__, install
from capctl.cli import COMMANDS, cli
from capctl.main import VERSION_LINE

#: How capctl's launcher starts the CLI (``capctl install``), plus a report of ``sys.modules``
#: at exit on stderr.  (``-X importtime`` does not see ``importlib.import_module``.)
SETUP = (f"{install.path_setup(install.import_paths())}; "
         "import atexit; atexit.register(lambda: sys.stderr.write('MODULES ' + ' '.join(sys.modules)))")


def imports(*argv: str) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    res = subprocess.run(
        [sys.executable, "-I", "-S", "-c", f"{SETUP}; from capctl.main import main; main()", *argv],
        capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "COLUMNS": "80"},
    )
    return set(res.stderr.rsplit("MODULES ", 1)[1].split()), res


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_table_names_each_command_with_its_own_short_help(name: str) -> None:
    cmd = cli.get_command(click.Context(cli), name)
    assert isinstance(cmd, click.Command) and cmd.name == name
    assert COMMANDS[name][1] == cmd.get_short_help_str(limit=10_000)


def test_help_lists_every_command_without_importing_any() -> None:
    mods, res = imports("--help")
    assert res.returncode == 0, res.stderr
    listed = res.stdout.split("Commands:\n", 1)[1].split()
    assert all(name in listed for name in COMMANDS)
    assert not [m for m in mods if m.startswith("capctl.commands.") and m != "capctl.commands"]



@pytest.mark.parametrize("width", [60, 80, 200])
def test_listing_is_clicks_own(width: int) -> None:
    """The same text as click's own listing, which imports every command to ask it."""
    ctx = click.Context(cli, info_name="capctl")
    mine, clicks = click.HelpFormatter(width=width), click.HelpFormatter(width=width)
    cli.format_commands(ctx, mine)
    click.Group.format_commands(cli, ctx, clicks)
    assert mine.getvalue() == clicks.getvalue()


def test_a_command_imports_only_its_module() -> None:
    mods, res = imports("sync", "--help")
    assert res.returncode == 0, res.stderr
    assert "capctl.commands.nodes" in mods
    assert not {"capctl.commands.watch", "capctl.commands.install", "capctl.commands.cdi",
                "capctl.commands.grants", "capctl.doctor", "pyroute2"} & mods


def test_version_without_click_in_clicks_words() -> None:
    mods, res = imports("--version")
    assert (res.returncode, res.stdout) == (0, VERSION_LINE)
    assert "click" not in mods and "capctl.cli" not in mods
    assert CliRunner().invoke(cli, ["--version"]).output == VERSION_LINE == (
        f"capctl, version {__version__}\n")


def test_commands_added_with_the_decorator_still_work() -> None:
    """The table is the usual way; ``@cli.command`` (a merge, a plugin) keeps working."""
    @click.command("extra-test")
    def extra() -> None:
        """Say hello."""
        click.echo("hello")

    cli.add_command(extra)
    try:
        runner = CliRunner()
        assert runner.invoke(cli, ["extra-test"]).output == "hello\n"
        assert "extra-test  Say hello." in runner.invoke(cli, ["--help"]).output
    finally:
        cli.commands.pop("extra-test")

"""``.ci/run`` runs the README's test command, as it is, however CI starts it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def readme_test_command() -> str:
    """The quick start's test command: the line the README says CI runs (without its comment)."""
    block = (REPO / "README.md").read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = [line.split("#", 1)[0].strip() for line in block.splitlines()
                if line.startswith("    ") and "what CI runs" in line]
    assert len(commands) == 1, commands
    return commands[0]


def test_ci_execs_the_readme_test_command() -> None:
    lines = [line.strip() for line in (REPO / ".ci/run").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    assert lines[-1] == f"exec {readme_test_command()}"


@pytest.mark.parametrize("how", [["sh"], ["bash"], []], ids=["sh", "bash", "direct"])
def test_ci_runs_it_from_the_checkouts_root_under_any_shell(tmp_path: Path, how: list[str]) -> None:
    """A copy of ``.ci/run`` in a checkout whose test command records how it ran, started from
    another directory: Debian's ``sh`` (dash) refused bash's ``set -o pipefail`` and ran
    nothing."""
    if how and shutil.which(how[0]) is None:
        pytest.skip(f"needs {how[0]}")
    checkout = tmp_path / "checkout"
    (checkout / ".ci").mkdir(parents=True)
    shutil.copy2(REPO / ".ci/run", checkout / ".ci/run")
    command = readme_test_command()
    stub = checkout / command
    stub.write_text('#!/bin/sh\nprintf "%s|%s\\n" "$(pwd)" "$#" > ran\n')
    stub.chmod(0o755)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    res = subprocess.run([*how, str(checkout / ".ci/run")], cwd=elsewhere, capture_output=True,
                         text=True, stdin=subprocess.DEVNULL, env={"PATH": os.environ["PATH"]})
    assert res.returncode == 0, res.stderr
    assert (checkout / "ran").read_text() == f"{checkout}|0\n"


@pytest.mark.parametrize("shell", ["sh", "bash"])
@pytest.mark.parametrize("how", ["stdin", "-c"])
def test_ci_runs_it_when_its_text_is_fed_to_a_shell(tmp_path: Path, shell: str, how: str) -> None:
    """CI may hand the script's text to a shell from the checkout's root (``sh < .ci/run``,
    ``bash -c "$(cat .ci/run)"``): ``$0`` is then the shell's name, and the script must not
    leave the checkout for the directory above it."""
    if shutil.which(shell) is None:
        pytest.skip(f"needs {shell}")
    checkout = tmp_path / "checkout"
    (checkout / ".ci").mkdir(parents=True)
    text = (REPO / ".ci/run").read_text()
    (checkout / ".ci/run").write_text(text)
    for where in (checkout, tmp_path):  # the one above records too: a wrong cd shows
        stub = where / readme_test_command()
        stub.write_text('#!/bin/sh\nprintf "%s\\n" "$(pwd)" > ran\n')
        stub.chmod(0o755)
    argv, stdin = ([shell], text) if how == "stdin" else ([shell, "-c", text], "")
    res = subprocess.run(argv, cwd=checkout, input=stdin, capture_output=True, text=True,
                         env={"PATH": os.environ["PATH"]})
    assert res.returncode == 0, res.stderr
    assert (checkout / "ran").read_text() == f"{checkout}\n"
    assert not (tmp_path / "ran").exists()

"""``capctl-docker-hook``: dockerd's environment is dropped, loading variables are refused.

Both ways it is installed behave the same: pip's console script and the launcher ``capctl
install --docker-hook-link`` writes and links (``python -IS``, the installation's paths).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from capctl import docker_hook, install

CONSOLE = str(Path(sys.executable).parent / "capctl-docker-hook")


@pytest.fixture(params=["console-script", "launcher"])
def hook(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "console-script":
        return CONSOLE
    inst = install.Installation(sys.executable, str(Path(sys.executable).parent),
                                launcher_dir=str(tmp_path / "libexec"),
                                paths=install.import_paths())
    for w in install.plan(inst, hooks_dir=None, docker_hook=True):
        install.write_atomic(w)
    link = install.link_docker_hook(str(tmp_path / "bin"), inst, dry_run=False)
    assert Path(link).resolve() == tmp_path / "libexec" / install.DOCKER_HOOK_LAUNCHER
    return link


def test_refuses_variables_that_changed_loading(hook: str) -> None:
    res = subprocess.run([hook, "prestart"], env={"LD_PRELOAD": "", "PATH": "/bin"},
                         capture_output=True, text=True, input="{}")
    assert (res.returncode, res.stdout, res.stderr) == (
        1, "", "capctl: error: refusing to run with LD_PRELOAD in dockerd's environment\n")


def test_harmless_python_variables_pass() -> None:
    assert docker_hook.loading_env({"PYTHONUNBUFFERED": "1", "PYTHONPATH": "/x"}) == ["PYTHONPATH"]


def test_only_prestart(hook: str) -> None:
    res = subprocess.run([hook, "poststop"], env={"PATH": "/bin"}, capture_output=True, text=True)
    assert (res.returncode, res.stdout, res.stderr) == (
        2, "", "capctl: error: usage: nvidia-container-runtime-hook prestart\n")


def test_bad_state_is_one_line(hook: str) -> None:
    res = subprocess.run([hook, "prestart"], env={"PATH": "/bin"}, capture_output=True,
                         text=True, input="not json")
    assert res.returncode == 1
    assert res.stderr.startswith("capctl: error: container state (stdin): not valid JSON")
    assert res.stderr.count("\n") == 1

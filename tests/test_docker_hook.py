"""``capctl-docker-hook``: dockerd's environment is dropped, loading variables are refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from capctl import docker_hook

HOOK = str(Path(sys.executable).parent / "capctl-docker-hook")


def test_refuses_variables_that_changed_loading() -> None:
    res = subprocess.run([HOOK, "prestart"], env={"LD_PRELOAD": "", "PATH": "/bin"},
                         capture_output=True, text=True, input="{}")
    assert res.returncode == 1 and "LD_PRELOAD" in res.stderr


def test_harmless_python_variables_pass() -> None:
    assert docker_hook.loading_env({"PYTHONUNBUFFERED": "1", "PYTHONPATH": "/x"}) == ["PYTHONPATH"]


def test_only_prestart() -> None:
    res = subprocess.run([HOOK, "poststop"], env={"PATH": "/bin"}, capture_output=True, text=True)
    assert res.returncode == 2 and "usage" in res.stderr

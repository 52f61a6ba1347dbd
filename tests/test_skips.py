"""./test.sh fails on a skip whose reason is not on the allow-list (tests/conftest.py), and
only then: a real pytest run of a small module, with the suite's conftest as a plugin."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MODULE = """
import pytest
def test_allowed(): pytest.skip("udevadm verify needs systemd >= 254 (here: 252)")
def test_runs(): pass
"""


def _run(tmp_path: Path, extra: str, strict: bool) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_mod.py").write_text(MODULE + extra)
    env = {"PATH": "/usr/bin:/bin", **({"CAPCTL_STRICT_SKIPS": "1"} if strict else {})}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest",
         "--rootdir", str(tmp_path), str(tmp_path / "test_mod.py")],
        cwd=REPO, env=env, capture_output=True, text=True)


def test_allowed_skips_pass(tmp_path: Path) -> None:
    res = _run(tmp_path, "", strict=True)
    assert res.returncode == 0, res.stdout
    assert "unexpected skips" not in res.stdout


@pytest.mark.parametrize("strict", [True, False], ids=["test.sh", "other-runs"])
def test_an_unexpected_skip_fails_the_run(tmp_path: Path, strict: bool) -> None:
    res = _run(tmp_path, "def test_new(): pytest.skip('needs something new')\n", strict)
    if strict:
        assert res.returncode == 1, res.stdout
        assert "test_mod.py::test_new: needs something new" in res.stdout
    else:
        assert res.returncode == 0, res.stdout


def test_a_failure_keeps_its_own_status(tmp_path: Path) -> None:
    res = _run(tmp_path, "def test_bad(): assert False\n", strict=True)
    assert res.returncode == 1

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


# --- the gates follow the host's cgroup layout (tests/support/hostcg.py) ------------------------

HYBRID = """\
30 24 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
35 30 0:31 / /sys/fs/cgroup/devices rw,nosuid - cgroup cgroup rw,devices
36 30 0:32 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
"""
V2_ONLY = "30 24 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
V1_ONLY = "\n".join(line for line in HYBRID.splitlines() if "cgroup2" not in line) + "\n"
#: scripts/v2only.sh's result seen from a process that still lists what it unmounted above.
V2_OVER_V1 = HYBRID + "50 24 0:27 / /sys/fs/cgroup rw,relatime - cgroup2 none rw,nsdelegate\n"


@pytest.mark.parametrize(
    ("mountinfo", "v1", "v2", "v2_only", "namespace"),
    [
        (HYBRID, "/sys/fs/cgroup/devices", "/sys/fs/cgroup/unified", False, True),
        (V2_ONLY, None, "/sys/fs/cgroup", True, False),
        (V1_ONLY, "/sys/fs/cgroup/devices", None, False, False),
        (V2_OVER_V1, None, "/sys/fs/cgroup", True, False),
    ],
    ids=["hybrid", "v2-only", "v1-only", "cgroup2-mounted-over-v1"],
)
def test_layout(mountinfo: str, v1: str | None, v2: str | None, v2_only: bool,
                namespace: bool) -> None:
    from tests.support.hostcg import parse_layout

    layout = parse_layout(mountinfo)
    assert (str(layout.v1_devices) if layout.v1_devices else None) == v1
    assert (str(layout.v2) if layout.v2 else None) == v2
    assert layout.v2_only is v2_only and layout.v2_needs_namespace is namespace
    if v1 is None:
        with pytest.raises(RuntimeError, match="v1 devices"):
            layout.device_dir("/a", cgroup2=False)
    else:
        assert str(layout.device_dir("/a/b", cgroup2=False)) == f"{v1}/a/b"


def test_v2only_script_gives_the_v2_only_layout() -> None:
    """scripts/v2only.sh, as CI runs the suite through it: the gates see a v2-only host."""
    from tests.support.hostcg import IS_ROOT

    if not IS_ROOT:
        pytest.skip("needs root (cgroups, mknod, containers)")
    code = "from tests.support.hostcg import LAYOUT as L; print(L.v1_devices, L.v2, L.v2_only)"
    res = subprocess.run([str(REPO / "scripts/v2only.sh"), sys.executable, "-c", code],
                         cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["None", "/sys/fs/cgroup", "True"]

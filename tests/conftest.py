"""Shared fixtures: simulated NVIDIA roots and the real-kernel gates."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from capctl import simulated
from capctl.host import Host
from tests.support.hostcg import KUBE_PLAY_NEEDS_V1, NO_V1, needs

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root (mknod, cgroups)")
needs_runc = needs(tools=("runc", "busybox"))


@pytest.fixture
def sim_root(tmp_path: Path) -> Path:
    """A simulated 8-GPU host root (driver files; GPU nodes too when root)."""
    root = tmp_path / "root"
    simulated.build(root, dev_nodes=IS_ROOT)
    return root


@pytest.fixture
def sim_host(sim_root: Path, tmp_path: Path) -> Host:
    return Host(root=sim_root, config=tmp_path / "capctl.toml", topology=sim_root / "topology.json")


def _trusted_base() -> str:
    """Where a directory only this user (root: only root) can change is made: /run for root,
    the home's cache for others (tmp_path is under /tmp, which everyone may write)."""
    return "/run" if IS_ROOT else os.path.join(os.path.expanduser("~"), ".cache")


@pytest.fixture
def trusted_dir() -> Iterator[Path]:
    """A directory whose whole path passes :func:`capctl.trustedpath.resolve`: for the fake
    real runtimes that capctl-runtime and capctl install accept."""
    import tempfile

    from capctl import trustedpath

    base = _trusted_base()
    os.makedirs(base, exist_ok=True)
    path = tempfile.mkdtemp(prefix="capctl-test.", dir=base)
    os.chmod(path, 0o755)
    probe = os.path.join(path, "probe")
    with open(probe, "w") as f:
        f.write("#!/bin/sh\n")
    os.chmod(probe, 0o755)
    try:
        trustedpath.resolve(probe)
    except trustedpath.UnsafePath as err:
        shutil.rmtree(path)
        pytest.fail(f"no trusted directory for fake runtimes under {base}: {err}")
    os.unlink(probe)
    try:
        yield Path(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _nspawn_missing() -> list[str]:
    from tests.support.nspawn import missing_tools

    return missing_tools()


#: Tests that boot a real systemd in systemd-nspawn (tests/support/nspawn.py).
needs_nspawn = [
    pytest.mark.kernel,
    pytest.mark.runc,
    pytest.mark.skipif(not IS_ROOT, reason="needs root (nspawn, cgroups, mknod)"),
    pytest.mark.skipif(
        bool(_nspawn_missing()), reason=f"needs {', '.join(_nspawn_missing())} (scripts/setup.sh)"
    ),
]


#: System places where capctl installs runtime definitions: tests must use their own.
_SYSTEM_PLACES = ("/etc/docker", "/etc/containerd", "/etc/crio", "/etc/cdi", "/var/run/cdi",
                  "/usr/share/containers/oci/hooks.d", "/etc/containers/oci/hooks.d")


def _snapshot(places: tuple[str, ...]) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for place in places:
        for dirpath, _dirs, files in os.walk(place):
            for name in files:
                path = os.path.join(dirpath, name)
                try:
                    with open(path, "rb") as f:
                        found[path] = f.read()
                except OSError:
                    found[path] = b"<unreadable>"
    return found


@pytest.fixture(scope="session", autouse=True)
def _system_places_untouched() -> Iterator[None]:
    """Fail the run if any test wrote into a runtime's system configuration."""
    before = _snapshot(_SYSTEM_PLACES)
    yield
    after = _snapshot(_SYSTEM_PLACES)
    changed = sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))
    assert not changed, f"tests changed system configuration: {changed}"


# --- no unexpected skip ------------------------------------------------------------------------

#: The skips ./test.sh accepts (CAPCTL_STRICT_SKIPS=1): each is a fact of the host that no
#: package install changes, and the reason says which.  Any other skip fails the run, so a test
#: cannot stop proving what it claims without someone noticing (docs/testing.md).
ALLOWED_SKIPS: dict[str, str] = {
    NO_V1: "the cgroup-v2-only run (scripts/v2only.sh) has no v1; the hybrid run covers it",
    KUBE_PLAY_NEEDS_V1: "a podman 4.3 limitation, in the v2-only run only; the hybrid run "
                        "plays the DaemonSet's pod",
    "devices.allow is cgroup v1": "the test's other variant runs on the other cgroup version",
    "root is not refused by a directory's mode": "a permission test that only a non-root "
                                                 "user can make",
    "udevadm verify needs systemd >= 254": "Debian 12 ships systemd 252; the rules are still "
                                           "parsed by udevadm test-builtin",
}


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _unexpected_skips(config: pytest.Config) -> list[str]:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    return sorted({
        f"{r.nodeid}: {_skip_reason(r)}" for r in skipped
        if not any(_skip_reason(r).startswith(allowed) for allowed in ALLOWED_SKIPS)
    })


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Before the terminal summary (the reporter prints it after every other finisher).
    if os.environ.get("CAPCTL_STRICT_SKIPS") != "1":
        return
    unexpected = _unexpected_skips(session.config)
    session.config.stash[_UNEXPECTED] = unexpected
    if unexpected and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    unexpected = config.stash.get(_UNEXPECTED, [])
    if unexpected:
        terminalreporter.write_sep("=", "unexpected skips: the run fails (tests/conftest.py "
                                        "ALLOWED_SKIPS)", red=True)
        for line in unexpected:
            terminalreporter.write_line(line)


_UNEXPECTED = pytest.StashKey[list[str]]()

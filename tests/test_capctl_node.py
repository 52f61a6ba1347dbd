"""``deploy/image/capctl-node`` as shipped, with a stand-in ``capctl`` that records its calls.

The script runs in a private mount namespace with a tmpfs on ``/opt`` (it writes the pod's
``/opt/capctl``), against a node directory whose path holds a space: every path must reach
capctl as one argument.  ``tests/test_kube_play.py`` runs it for real, in a pod.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import needs_root

SCRIPT = Path(__file__).resolve().parents[1] / "deploy/image/capctl-node"
HOOKS_DIR = "usr/share/containers/oci/hooks.d"
#: A capctl that writes each call's arguments, one per line, after a "CALL" line.
STUB = """#!/bin/sh
printf '%s\\n' CALL "$@" >> "$CALLS"
case " $* " in
  *" install "*) [ -z "${INSTALL_WRITES:-}" ] || echo written > "$INSTALL_WRITES" ;;
esac
"""

pytestmark = [needs_root, pytest.mark.kernel,
              pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1)")]


def run_node(tmp_path: Path, *argv: str, **env: str) -> tuple[subprocess.CompletedProcess[str],
                                                              list[list[str]], Path]:
    """``capctl-node ARGV`` in its own mount namespace; its result, capctl's calls, the node."""
    node = tmp_path / "the node"
    (node / HOOKS_DIR).mkdir(parents=True, exist_ok=True)
    (node / "opt").mkdir(exist_ok=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "capctl").write_text(STUB)
    (bin_dir / "capctl").chmod(0o755)
    configmap = tmp_path / "capctl.toml"
    configmap.write_text("")
    calls = tmp_path / "calls"
    calls.unlink(missing_ok=True)
    script = ('set -e; mount --make-rprivate /; mount -t tmpfs -o mode=0755 none /opt; '
              'mkdir -p /opt/capctl/etc /opt/capctl/libexec /opt/capctl/bin; '
              'cp "$SCRIPT" /opt/capctl/bin/capctl-node; exec /opt/capctl/bin/capctl-node "$@"')
    res = subprocess.run(
        ["unshare", "-m", "sh", "-c", script, "sh", *argv], capture_output=True, text=True,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "SCRIPT": str(SCRIPT), "CALLS": str(calls),
             "CAPCTL_HOST": str(node), "CAPCTL_CONFIGMAP": str(configmap),
             "CAPCTL_HOOKS": "annotated", "CAPCTL_CONTAINERD": "", **env}, timeout=60)
    recorded: list[list[str]] = []
    for line in calls.read_text().splitlines() if calls.exists() else []:
        if line == "CALL":
            recorded.append([])
        else:
            recorded[-1].append(line)
    return res, recorded, node


@pytest.mark.parametrize("spelling", ["apart", "joined"])
def test_watch_uninstalls_the_cdi_spec_its_watcher_kept(tmp_path: Path, spelling: str) -> None:
    """A DaemonSet that names another --cdi-output for the watcher gets that spec removed when
    the pod goes, not the default one."""
    spec = "/var/run/cdi/other.json"
    cdi = ["--cdi-output", spec] if spelling == "apart" else [f"--cdi-output={spec}"]
    res, calls, node = run_node(tmp_path, "watch", *cdi, "--heartbeat", "/run/capctl/hb")
    assert res.returncode == 0, res.stderr
    hooks = str(node / HOOKS_DIR)
    assert calls == [
        ["--config", "/opt/capctl/etc/capctl.toml", "install", "--hooks-dir", hooks],
        ["watch", *cdi, "--heartbeat", "/run/capctl/hb"],
        ["uninstall", "--hooks-dir", hooks],
        ["uninstall", "--cdi-output", spec],
    ]
    assert not (node / "opt/capctl").exists()  # the node's copy went with the pod


def test_uninstall_alone_takes_the_default_spec(tmp_path: Path) -> None:
    res, calls, _node = run_node(tmp_path, "uninstall")
    assert res.returncode == 0, res.stderr
    assert calls[-1] == ["uninstall", "--cdi-output", "/var/run/cdi/capctl.io-mig.json"]


@pytest.mark.parametrize("root", ["/run/../etc", "/run/nvidia/..", "/./run", "/run/./driver"])
def test_a_driver_root_with_dot_components_is_refused(tmp_path: Path, root: str) -> None:
    res, calls, node = run_node(tmp_path, "install", CAPCTL_DRIVER_ROOT=root)
    assert res.returncode == 1
    assert "no . or .. components" in res.stderr
    assert calls == [] and not (node / "opt/capctl").exists()


def test_a_plain_driver_root_goes_into_the_config(tmp_path: Path) -> None:
    res, calls, node = run_node(tmp_path, "install", CAPCTL_DRIVER_ROOT="/run/nvidia/driver")
    assert res.returncode == 0, res.stderr
    assert calls == [["--config", "/opt/capctl/etc/capctl.toml", "install", "--hooks-dir",
                      str(node / HOOKS_DIR)]]
    copied = (node / "opt/capctl/etc/capctl.toml").read_text()
    assert 'driver_root = "/run/nvidia/driver"' in copied


def test_what_install_writes_beside_the_launchers_reaches_the_node(tmp_path: Path) -> None:
    """The start-up pack ``install`` writes into the pod's libexec is copied to the node for a
    hooks-only install too: the hooks.d definition loads it from the same path there."""
    pack = "/opt/capctl/libexec/capctl-modules.pack"
    res, calls, node = run_node(tmp_path, "install", INSTALL_WRITES=pack)
    assert res.returncode == 0, res.stderr
    assert [c[2] for c in calls] == ["install"]  # hooks only: no containerd
    assert (node / pack.lstrip("/")).read_text() == "written\n"

"""``capctl watch`` keeps grants true against nvidia-modprobe, for real users.

The driver resets a capability's ``DeviceFileModify`` to 1 when its instance is re-created,
with no event; nvidia-modprobe (run by every ``nvidia-smi``) then re-creates the node at the
driver's 0444 or chmods it (``docs/driver.md``).  Here a running ``capctl watch`` on a
simulated root sees the instance come back (poll) and the node change (inotify), and the
grant is back within the goal (100 ms), checked by the kernel: the outsider's ``open`` fails
again.  Also the change detector on its own (:mod:`capctl.watch.changes`).
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from capctl import simulated
from capctl.host import Host
from capctl.watch import changes

from .conftest import needs_root
from .test_grants_kernel import People, cli_ok, node, open_as, people

__all__ = ["people"]  # a fixture, used by name

GI7 = "gpu0/gi7/access"
#: Long enough that only a hung watcher fails a wait (the latency goal is bench_watch.py's).
HANG_S = 10.0
REPO = Path(__file__).resolve().parents[1]


def imitate_modprobe(path: Path, minor: int, *, recreate: bool) -> None:
    """What nvidia-modprobe does to a node whose DeviceFileModify is 1: make it 238:<minor>,
    root-owned, mode 0444, no ACL (re-created) or chmod 0444 (kept)."""
    if recreate:
        path.unlink()
        old = os.umask(0)
        try:
            os.mknod(path, stat.S_IFCHR | 0o444, os.makedev(238, minor))
        finally:
            os.umask(old)
    else:
        os.chmod(path, 0o444)


def wait_for(pred: object, timeout: float) -> float:
    """Seconds until ``pred()`` is true (polled every 0.2 ms); fails after ``timeout``."""
    assert callable(pred)
    t0 = time.perf_counter()
    while not pred():
        if time.perf_counter() - t0 > timeout:
            raise AssertionError("timed out")
        time.sleep(0.0002)
    return time.perf_counter() - t0


def granted(path: Path) -> bool:
    try:
        return stat.S_IMODE(os.lstat(path).st_mode) == 0o440
    except FileNotFoundError:
        return False


pytestmark = [needs_root, pytest.mark.kernel,
              pytest.mark.skipif(not shutil.which("useradd"), reason="needs useradd")]


@pytest.fixture
def open_root() -> Iterator[tuple[Host, Path]]:
    """A simulated root in its own directory that the test users may walk: not under pytest's
    shared, 0700 temporary base, whose mode other test runs on this machine change."""
    base = Path(tempfile.mkdtemp(prefix="capctl-watch-"))
    try:
        os.chmod(base, 0o711)
        simulated.build(base / "root")
        yield Host(root=base / "root", config=base / "capctl.toml"), base / "root"
    finally:
        shutil.rmtree(base)


@pytest.mark.parametrize("recreate", [True, False], ids=["recreate-0444", "chmod-0444"])
def test_grant_restored_after_instance_recreation(
    open_root: tuple[Host, Path], people: People, recreate: bool
) -> None:
    sim_host, sim_root = open_root
    cli_ok(sim_host, "grant", GI7, "--user", people.granted)
    proc = sim_root / "proc/driver/nvidia/capabilities/gpu0/mig/gi7"
    path, minor = node(sim_root, GI7), simulated.minor_of(GI7)
    assert open_as(people.outsider, path) == errno.EACCES
    w = subprocess.Popen(
        [sys.executable, "-m", "capctl", "--root", str(sim_root), "--config",
         str(sim_host.config), "watch", "--poll", "0.1"],
        stderr=subprocess.PIPE, cwd=REPO, bufsize=0)
    try:
        assert w.stderr is not None
        assert w.stderr.readline().startswith(b"watching")
        assert w.stderr.readline().startswith(b"sync:")
        # The instance is destroyed and created again: the driver's new file says
        # DeviceFileModify: 1 (no event); the watch's poll sees it come back and pins it.
        shutil.rmtree(proc)
        time.sleep(0.3)
        simulated.write_capability_file(sim_root, GI7, modify=1)
        wait_for(lambda: "DeviceFileModify: 0" in (proc / "access").read_text(), HANG_S)
        # nvidia-smi runs nvidia-modprobe, which saw DeviceFileModify: 1 just before.
        imitate_modprobe(path, minor, recreate=recreate)
        # Bounded waits that only catch a hang: how fast the grant comes back is
        # bench/bench_watch.py's to measure, not a test's (docs/contract.md).
        wait_for(lambda: granted(path), HANG_S)
        assert open_as(people.outsider, path) == errno.EACCES
        assert open_as(people.granted, path) == errno.ENXIO
        # Every time, not once.
        for again in (True, False, True):
            imitate_modprobe(path, minor, recreate=again)
            wait_for(lambda: granted(path), HANG_S)
        assert open_as(people.outsider, path) == errno.EACCES
    finally:
        w.terminate()
        assert w.wait(timeout=10) == 0


# --- the change detector on its own -----------------------------------------------------------


def test_detector_reports_node_and_instance_changes(sim_host: Host, sim_root: Path) -> None:
    nodes_seen: list[changes.NodeChange] = []
    instances_seen: list[changes.InstanceChange] = []
    caps = sim_root / "dev/nvidia-caps"
    with changes.ChangeDetector(sim_host, poll_interval=0.05) as det:
        det.subscribe_nodes(nodes_seen.append)
        det.subscribe_instances(instances_seen.append)
        assert GI7 in det.instances and "gpu0/gi7/ci0/access" in det.instances
        assert det.read_nodes() is None and det.poll() is None
        # No directory yet: watched for through dev/.
        caps.mkdir()
        change = det.read_nodes()
        assert change is not None and change.overflow
        (caps / "nvidia-cap66").write_text("")
        os.chmod(caps / "nvidia-cap66", 0o600)
        os.rename(caps / "nvidia-cap66", caps / "nvidia-cap67")
        change = det.read_nodes()
        assert change == changes.NodeChange(frozenset({"nvidia-cap66", "nvidia-cap67"}))
        (caps / "nvidia-cap67").unlink()
        assert det.read_nodes() == changes.NodeChange(frozenset({"nvidia-cap67"}))
        # The directory goes and comes back: watched again.
        shutil.rmtree(caps)
        assert det.read_nodes() == changes.NodeChange(frozenset(), True)
        caps.mkdir()
        assert det.read_nodes() == changes.NodeChange(frozenset(), True)
        (caps / "x").write_text("")
        assert det.read_nodes() == changes.NodeChange(frozenset({"x"}))
        # An instance destroyed, then another created.
        shutil.rmtree(sim_root / "proc/driver/nvidia/capabilities/gpu0/mig/gi7")
        simulated.write_capability_file(sim_root, "gpu4/gi1/access")
        simulated.write_capability_file(sim_root, "gpu4/gi1/ci0/access")
        change2 = det.poll()
        assert change2 is not None
        assert change2.removed == {GI7, "gpu0/gi7/ci0/access"}
        assert change2.added == {"gpu4/gi1/access", "gpu4/gi1/ci0/access"}
        assert change2.now == det.instances and GI7 not in det.instances
        assert det.poll() is None
    assert nodes_seen[-1] == changes.NodeChange(frozenset({"x"}))
    assert instances_seen == [change2]


def test_detector_run_loop_stops(sim_host: Host, sim_root: Path) -> None:
    seen: list[changes.InstanceChange] = []
    stop = threading.Event()
    with changes.ChangeDetector(sim_host, poll_interval=0.02) as det:
        det.subscribe_instances(seen.append)
        t = threading.Thread(target=det.run, args=(stop,))
        t.start()
        try:
            simulated.write_capability_file(sim_root, "gpu4/gi2/access")
            wait_for(lambda: bool(seen), 2.0)
        finally:
            stop.set()
            t.join(timeout=5)
    assert seen[0].added == {"gpu4/gi2/access"} and not t.is_alive()


def test_scan_instances_matches_the_simulated_host(sim_root: Path) -> None:
    found = changes.scan_instances(str(sim_root / "proc/driver/nvidia/capabilities"))
    assert found == set(simulated.mig_capability_names()) - {"config", "monitor"}
    assert changes.scan_instances(str(sim_root / "nowhere")) == frozenset()


def test_parse_events() -> None:
    import struct

    data = struct.pack("iIII", 1, changes.IN_CREATE, 0, 16) + b"nvidia-cap1\0\0\0\0\0"
    data += struct.pack("iIII", 2, changes.IN_Q_OVERFLOW, 0, 0)
    assert changes.parse_events(data) == [(1, changes.IN_CREATE, "nvidia-cap1"),
                                          (2, changes.IN_Q_OVERFLOW, "")]

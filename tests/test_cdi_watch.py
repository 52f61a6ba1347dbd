"""Keeping the CDI spec current: the change detector's settled reports, then ``capctl watch
--cdi-output`` following instances destroyed and created on a simulated host."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from capctl import simulated
from capctl.host import Host
from capctl.watch.changes import ChangeDetector, Settle, Settled, fingerprint
from tests.support.cdi_check import PODMAN_43, check_spec
from tests.support.clients import terminate

from .conftest import needs_root

REPO = Path(__file__).resolve().parents[1]
CAPS = "proc/driver/nvidia/capabilities"


# --- the detector (pure) ---------------------------------------------------------------------

A: Any = (("gpu0/mig/gi1/access", 1),)
B: Any = (("gpu0/mig/gi1/access", 1), ("gpu0/mig/gi2/access", 2))


@pytest.mark.parametrize(
    ("observations", "want"),
    [
        ([(A, 0.0), (A, 5.0)], [False, False]),
        ([(B, 0.0), (B, 0.4), (B, 0.6), (B, 5.0)], [False, False, True, False]),
        ([(B, 0.0), (A, 0.3), (A, 0.9)], [False, False, False]),  # back to what was reported
        ([(B, 0.0), (A, 0.3), (B, 0.6), (B, 1.0), (B, 1.2)], [False, False, False, False, True]),
    ],
    ids=["unchanged", "change-settles-once", "change-undone", "still-changing"],
)
def test_detector(observations: list[tuple[Any, float]], want: list[bool]) -> None:
    d = Settle(settle=0.5)
    d.start(A)
    assert [d.observe(fp, now) for fp, now in observations] == want


def test_detector_retry() -> None:
    d = Settle(settle=0.5)
    d.start(A)
    assert [d.observe(B, 0.0), d.observe(B, 1.0), d.observe(B, 1.5)] == [False, True, False]
    d.retry()
    assert d.observe(B, 2.0) is True
    assert d.observe(B, 2.5) is False


def test_fingerprint_sees_instances_reloads_and_the_snapshot(sim_host: Host,
                                                             sim_root: Path) -> None:
    snap = str(sim_root / "topology.json")
    fp = fingerprint(sim_host, (snap,))
    assert fingerprint(sim_host, (snap,)) == fp
    assert ("gpu7/mig/gi2/ci0/access" in dict(fp)) and ("gpu7/mig/gi2/access" in dict(fp))
    shutil.rmtree(sim_root / CAPS / "gpu7/mig/gi2/ci0")  # a compute instance destroyed
    fp2 = fingerprint(sim_host, (snap,))
    assert fp2 != fp and "gpu7/mig/gi2/ci0/access" not in dict(fp2)
    simulated.create_instance(sim_root, 0, 14, 3)  # a GPU instance and a compute instance created
    fp3 = fingerprint(sim_host, (snap,))
    assert "gpu0/mig/gi14/ci3/access" in dict(fp3)
    os.utime(snap, ns=(1, 1))  # the snapshot rewritten
    assert fingerprint(sim_host, (snap,)) != fp3
    # A driver reload: the same instances under new directories.
    fp4 = fingerprint(sim_host, (snap,))
    tree = sim_root / CAPS / "gpu1"
    shutil.copytree(tree, sim_root / "gpu1.new")
    shutil.rmtree(tree)
    os.rename(sim_root / "gpu1.new", tree)
    assert fingerprint(sim_host, (snap,)) != fp4
    shutil.rmtree(sim_root / CAPS)  # driver unloaded
    assert fingerprint(sim_host) == ()


class Clock:
    """A fake monotonic clock the detector reads: tests move it, nothing sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Poller:
    """A :class:`ChangeDetector` on a fake clock, polled at given seconds from its start: was a
    settled change reported by that poll?"""

    def __init__(self, det: ChangeDetector, clock: Clock):
        self.det, self.clock, self.t0 = det, clock, clock.now
        self.seen: list[Settled] = []
        det.subscribe_settled(self.seen.append)

    def poll(self, at: float) -> bool:
        self.clock.now = self.t0 + at
        before = len(self.seen)
        self.det.poll()
        return len(self.seen) > before


def test_poller(sim_host: Host, sim_root: Path) -> None:
    clock = Clock()
    with ChangeDetector(sim_host, settle=0.2, clock=clock) as det:
        p = Poller(det, clock)
        assert p.poll(0.0) is False
        simulated.create_instance(sim_root, 0, 14, 3)
        # Seen at 1.0, still at 1.1 (0.1 s), reported at 1.3 (0.3 s >= settle), once.
        assert [p.poll(1.0), p.poll(1.1), p.poll(1.3), p.poll(2.0)] == [False, False, True, False]


def test_settle_is_measured_from_the_last_change(sim_host: Host, sim_root: Path) -> None:
    """A change just before the settle time runs out starts it again (a burst of instance
    creations is one report, after the last of them)."""
    clock = Clock()
    with ChangeDetector(sim_host, settle=0.2, clock=clock) as det:
        p = Poller(det, clock)
        p.poll(0.0)
        simulated.create_instance(sim_root, 0, 14, 3)
        assert p.poll(1.0) is False
        simulated.create_instance(sim_root, 0, 14, 4)
        assert [p.poll(1.19), p.poll(1.3), p.poll(1.35), p.poll(1.45)] == [False, False, False, True]


def test_detector_settles_the_snapshot_and_retries(sim_host: Host, sim_root: Path) -> None:
    """Capability files changed, snapshot not yet: one report once both hold still; while a
    change settles the next poll comes after ``settle``, not ``poll_interval``; a retry
    reports the same state again."""
    snap = str(sim_root / "topology.json")
    seen: list[Settled] = []
    clock = Clock()
    with ChangeDetector(sim_host, poll_interval=5.0, files=(snap,), settle=0.1,
                        clock=clock) as det:
        det.subscribe_settled(seen.append)
        assert det.next_poll_at() == clock.now + 5.0
        simulated.create_instance(sim_root, 0, 14, 3)
        assert det.poll() is not None and seen == []  # instances: told at once
        assert det.next_poll_at() == clock.now + 0.1  # settling: polled sooner
        clock.now += 0.05
        os.utime(snap, ns=(1, 1))  # the snapshot rewritten: settle again
        det.poll()
        clock.now += 0.12
        det.poll()
        assert len(seen) == 1 and "gpu0/gi14/ci3/access" in seen[0].now
        det.poll()
        assert len(seen) == 1 and det.next_poll_at() == clock.now + 5.0
        det.retry()
        assert det.next_poll_at() == clock.now + 0.1
        det.poll()
        assert len(seen) == 2


# --- capctl watch --cdi-output -------------------------------------------------------------

def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.rename(tmp, path)


class Reader(threading.Thread):
    """Reads the spec over and over, as a runtime would, noting anything that is not JSON."""

    def __init__(self, path: Path):
        super().__init__(daemon=True)
        self.path = path
        self.stop = threading.Event()
        self.reads = 0
        self.missing = 0
        self.bad: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                text = self.path.read_text()
            except FileNotFoundError:
                self.missing += 1
                continue
            try:
                json.loads(text)
            except ValueError as err:
                self.bad.append(f"{err}: {text[:80]!r}")
            self.reads += 1


def _names(path: Path) -> list[str]:
    try:
        return [d["name"] for d in json.loads(path.read_text())["devices"]]
    except (FileNotFoundError, ValueError):
        return []


def _wait(pred: Any, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if pred():
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError("timed out")


def _start_watch(root: Path, config: Path, *extra: str) -> subprocess.Popen[str]:
    """``capctl watch`` on the simulated ``root`` (its snapshot), in a network namespace of its
    own (no real uevents reach it)."""
    cmd = ["unshare", "-n", sys.executable, "-m", "capctl", "--root", str(root),
           "--topology", str(root / "topology.json"), "--config", str(config), "watch", *extra]
    return subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, cwd=str(REPO),
                            env={**os.environ, "PYTHONPATH": str(REPO)})


@needs_root
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1)")
def test_watch_keeps_the_spec_current(sim_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "cdi" / "capctl.io-mig.json"
    snap = sim_root / "topology.json"
    proc = _start_watch(sim_root, tmp_path / "c.toml", "--cdi-output", str(out))
    reader = Reader(out)
    try:
        _wait(out.exists, 30)  # written at start
        first = json.loads(out.read_text())
        assert check_spec(first) == [] and check_spec(first, profile=PODMAN_43) == []
        reader.start()
        topo = json.loads(snap.read_text())

        # Destroy MIG device 1:3 (GPU 1, gi 2, ci 0): NVML stops listing it, then the driver
        # removes its capability files.
        gone = topo["gpus"][1]["mig_devices"].pop(3)
        _write_json(snap, topo)
        shutil.rmtree(sim_root / CAPS / f"gpu1/mig/gi{gone['gi']}")
        _wait(lambda: gone["uuid"] not in _names(out), 10)
        assert "1:3" not in _names(out)

        # Create gi 14 / ci 0 on GPU 0: the driver makes the capability files, then NVML
        # lists the new MIG device.
        simulated.create_instance(sim_root, 0, 14, 0)
        new = {"index": 7, "uuid": "MIG-" + "ab" * 4 + "-cdef-4012-8345-" + "67" * 6,
               "gi": 14, "ci": 0, "profile": "1g.5gb"}
        topo["gpus"][0]["mig_devices"].append(new)
        _write_json(snap, topo)
        _wait(lambda: new["uuid"] in _names(out), 10)
        spec = json.loads(out.read_text())
        assert check_spec(spec) == [] and check_spec(spec, profile=PODMAN_43) == []
        dev = {d["name"]: d for d in spec["devices"]}["0:7"]
        minors = [n["minor"] for n in dev["containerEdits"]["deviceNodes"] if n["major"] == 238]
        assert minors == [simulated.minor_of("gpu0/gi14/access"),
                          simulated.minor_of("gpu0/gi14/ci0/access")]
        # The new instance's node was made by the same run (watch also syncs).
        assert (sim_root / "dev/nvidia-caps" / f"nvidia-cap{minors[1]}").exists()
    finally:
        reader.stop.set()
        err = terminate(proc)
    if reader.is_alive():
        reader.join(5)
    assert proc.returncode == 0, err
    assert reader.bad == [] and reader.missing == 0
    assert reader.reads > 10
    assert [n for n in os.listdir(out.parent) if n != out.name] == []  # no temporary left


@needs_root
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1)")
@pytest.mark.parametrize("management", [False, True], ids=["management-off", "management-on"])
def test_watch_honours_management(sim_root: Path, tmp_path: Path, management: bool) -> None:
    """[cdi] management: the management devices in their own spec beside [cdi] output, kept
    current with it; off, the one capctl wrote earlier goes and the main spec is the same."""
    out = tmp_path / "cdi" / "capctl.io-mig.json"
    mgmt = tmp_path / "cdi" / "capctl.io-mig-management.json"
    snap = sim_root / "topology.json"
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[cdi]\noutput = "{out}"\nmanagement = true\n')
    os.chmod(cfg, 0o644)
    if not management:  # a spec capctl wrote while it was on
        sync = subprocess.run(
            [sys.executable, "-m", "capctl", "--root", str(sim_root), "--topology", str(snap),
             "--config", str(cfg), "sync"], capture_output=True, text=True, cwd=str(REPO))
        assert sync.returncode == 0 and mgmt.exists(), sync.stderr
        cfg.write_text(f'[cdi]\noutput = "{out}"\nmanagement = false\n')
    proc = _start_watch(sim_root, cfg)
    try:
        _wait(lambda: out.exists() and mgmt.exists() == management, 30)  # at start
        assert "mig-config" not in _names(out)
        assert _names(mgmt) == (["mig-config", "mig-monitor"] if management else [])
        topo = json.loads(snap.read_text())
        gone = topo["gpus"][1]["mig_devices"].pop(3)
        _write_json(snap, topo)
        shutil.rmtree(sim_root / CAPS / f"gpu1/mig/gi{gone['gi']}")
        _wait(lambda: gone["uuid"] not in _names(out), 10)
        for path in (out, mgmt) if management else (out,):
            spec = json.loads(path.read_text())
            assert check_spec(spec) == [] and check_spec(spec, profile=PODMAN_43) == []
        assert [d["name"] for d in json.loads(out.read_text())["devices"]][-1] == "all"
        assert mgmt.exists() == management
    finally:
        err = terminate(proc)
    assert proc.returncode == 0, err
    assert (f"cdi: {mgmt} removed" in err) == (not management), err


@needs_root
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1)")
def test_watch_follows_a_snapshot_change_and_a_failing_sync(sim_root: Path, tmp_path: Path) -> None:
    """Only the settled path sees a snapshot-only change (same capability files, a new UUID);
    and a sync that fails (here: the config became group-writable) must not leave the spec
    stale after an instance goes."""
    out = tmp_path / "cdi" / "capctl.io-mig.json"
    snap = sim_root / "topology.json"
    cfg = tmp_path / "c.toml"
    cfg.write_text("# no grants\n")
    os.chmod(cfg, 0o644)
    proc = _start_watch(sim_root, cfg, "--cdi-output", str(out))
    try:
        _wait(out.exists, 30)
        topo = json.loads(snap.read_text())
        old = topo["gpus"][2]["mig_devices"][0]["uuid"]
        renamed = "MIG-" + "cd" * 4 + "-1234-4123-8123-" + "ef" * 6
        topo["gpus"][2]["mig_devices"][0]["uuid"] = renamed
        _write_json(snap, topo)  # the driver's files do not change at all
        _wait(lambda: renamed in _names(out) and old not in _names(out), 10)

        os.chmod(cfg, 0o666)  # sync now refuses the config, every time
        gone = topo["gpus"][1]["mig_devices"].pop(3)
        _write_json(snap, topo)
        shutil.rmtree(sim_root / CAPS / f"gpu1/mig/gi{gone['gi']}")
        _wait(lambda: gone["uuid"] not in _names(out), 10)
    finally:
        os.chmod(cfg, 0o644)
        err = terminate(proc)
    assert proc.returncode == 0, err
    assert "writable" in err or "capctl: error" in err, err  # the failing sync was reported

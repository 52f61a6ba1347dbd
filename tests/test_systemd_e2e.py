"""The hook under a real systemd (252, PID 1 of systemd-nspawn), runc ``--systemd-cgroup``.

Each container is a transient scope whose ``DeviceAllow=`` systemd owns, and
``systemctl daemon-reload`` re-applies that list (tests/test_nspawn_smoke.py).  The hook adds
its grant to the scope over D-Bus too, so the grant survives the reload: the container's own
MIG nodes still open with ENXIO afterwards, and another MIG device's node bind-mounted in
still gives EPERM.  On cgroup v1 and v2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from capctl import simulated
from capctl.simulated import mig_minor
from tests.support.hostcg import skip_unless
from tests.support.nspawn import (
    GuestContainer,
    GuestRunc,
    SystemdContainer,
    ensure_rootfs,
)
from tests.support.source import HOOK_ARGS

from .conftest import needs_nspawn

pytestmark = needs_nspawn

TOPO = simulated.topology()
GPU0 = TOPO["gpus"][0]
CAPS_MAJOR = 238  # the simulated host's nvidia-caps major


class World:
    """A booted systemd with runc, and a synced simulated host root visible inside it."""

    def __init__(self, box: SystemdContainer):
        self.box = box
        self.root = box.state / "host"
        if not self.root.exists():
            simulated.build(self.root)
            subprocess.run(
                [sys.executable, "-m", "capctl", "--root", str(self.root), "sync", "--all"],
                check=True, capture_output=True,
            )  # fmt: skip
            self.config.write_text(f'[hook]\nlog_file = "{box.guest_path(self.log)}"\n')
            os.chmod(self.config, 0o644)
        self.python = box.python()

    @property
    def config(self) -> Path:
        return self.box.state / "capctl.toml"

    @property
    def log(self) -> Path:
        return self.box.state / "hook.log"

    def guest(self, path: Path) -> str:
        return self.box.guest_path(path)

    def hook_bundle(self, runc: GuestRunc, env: dict[str, str], others: list[int]) -> Path:
        mounts = [(self.root / "dev/nvidia-caps" / f"nvidia-cap{m}", f"/other/cap{m}")
                  for m in others]  # fmt: skip
        bundle = runc.bundle(mounts=mounts)
        config: dict[str, Any] = json.loads((bundle / "config.json").read_text())
        config["process"]["env"] += [f"{k}={v}" for k, v in env.items()]
        args = [
            self.python, *HOOK_ARGS, "--root", self.guest(self.root),
            "--topology", self.guest(self.root / "topology.json"),
            "--config", self.guest(self.config), "hook",
        ]  # fmt: skip
        hook = {"path": self.python, "args": args, "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]}
        config["hooks"] = {"createRuntime": [hook]}
        (bundle / "config.json").write_text(json.dumps(config, indent=2))
        return bundle


@pytest.fixture(scope="module", params=[False, True], ids=["v1", "v2"])
def world(request: pytest.FixtureRequest) -> Iterator[World]:
    skip_unless(v1=not request.param, v2=bool(request.param))
    rootfs = ensure_rootfs()
    with SystemdContainer(rootfs, cgroup2=request.param) as box:
        yield World(box)


@pytest.fixture
def runc(world: World) -> Iterator[GuestRunc]:
    with GuestRunc(world.box) as runc:
        yield runc


def device_allow(world: World, ctr: GuestContainer) -> str:
    return world.box.run(["systemctl", "show", "--property=DeviceAllow", ctr.unit]).stdout


def test_hook_grant_survives_daemon_reload(world: World, runc: GuestRunc) -> None:
    m, other = GPU0["mig_devices"][2], GPU0["mig_devices"][3]
    gi, ci = mig_minor(GPU0, m["gi"]), mig_minor(GPU0, m["gi"], m["ci"])
    other_gi, other_ci = mig_minor(GPU0, other["gi"]), mig_minor(GPU0, other["gi"], 0)
    bundle = world.hook_bundle(runc, {"NVIDIA_VISIBLE_DEVICES": m["uuid"]}, [other_gi, other_ci])
    ctr = runc.run_detached(bundle)
    assert f"systemd unit {ctr.unit}: DeviceAllow= added" in world.log.read_text()
    allow = device_allow(world, ctr)
    assert f"/dev/char/{CAPS_MAJOR}:{gi} r" in allow and f"/dev/char/{CAPS_MAJOR}:{ci} r" in allow

    def check() -> None:
        for node in (f"/dev/nvidia-caps/nvidia-cap{gi}", f"/dev/nvidia-caps/nvidia-cap{ci}"):
            assert runc.probe(ctr, node) == "ENXIO", node
        for node in ("/dev/nvidia0", "/dev/nvidiactl", "/dev/nvidia-uvm"):
            assert runc.probe(ctr, node, "rw") == "ENXIO", node
        assert runc.probe(ctr, f"/other/cap{other_gi}") == "EPERM"
        assert runc.probe(ctr, f"/other/cap{other_ci}") == "EPERM"

    check()
    world.box.run(["systemctl", "daemon-reload"])
    check()


ROLLBACK = """
import sys
from capctl.cgroup import systemd
from capctl.edits.rules import char
unit, minor = sys.argv[1], int(sys.argv[2])
undo = systemd.allow(unit, [char(238, minor, "r")])
print("granted")
sys.stdout.flush()
sys.stdin.readline()
undo.rollback()
print("rolled back")
"""


def test_rollback_restores_the_units_device_allow(world: World, runc: GuestRunc) -> None:
    ctr = runc.run_detached(runc.bundle(mounts=[(world.root / "dev/nvidia-caps", "/caps")]))
    minor = mig_minor(GPU0, GPU0["mig_devices"][0]["gi"])
    before = device_allow(world, ctr)
    assert f"{CAPS_MAJOR}:{minor}" not in before
    proc = subprocess.Popen(
        world.box.command([world.python, "-c", ROLLBACK, ctr.unit, str(minor)]),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == "granted"
        assert f"/dev/char/{CAPS_MAJOR}:{minor} r" in device_allow(world, ctr)
        world.box.run(["systemctl", "daemon-reload"])
        # v1: systemd rewrote devices.list from DeviceAllow=.  v2: systemd's program allows it,
        # but runc's program beside it, which no cgroup grant changed here, still denies.
        expected = "EPERM" if world.box.cgroup2 else "ENXIO"
        assert runc.probe(ctr, f"/caps/nvidia-cap{minor}") == expected
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "rolled back"
    finally:
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0
    after = device_allow(world, ctr)
    # Reset, then re-assigned: the same entries (systemd 252 lists them newest first, so the
    # order is reversed; DeviceAllow= entries only add access, so the order has no meaning).
    assert sorted(after.splitlines()) == sorted(before.splitlines())
    world.box.run(["systemctl", "daemon-reload"])
    time.sleep(0.1)
    assert runc.probe(ctr, f"/caps/nvidia-cap{minor}") == "EPERM"


# --- capctl-runtime: the devices go into the spec, runc hands them to systemd --------------------


def wrapper(world: World) -> str:
    """A capctl-runtime launcher inside the box, configured for the simulated host."""
    config = world.box.state / "wrapper.toml"
    if not config.exists():
        config.write_text(
            f'[hook]\nlog_file = "{world.guest(world.log)}"\n'
            f'[host]\ndriver_root = "{world.guest(world.root)}"\n'
            f'topology = "{world.guest(world.root / "topology.json")}"\n'
            '[runtime]\nruntime = "/usr/sbin/runc"\n'
        )
        os.chmod(config, 0o644)
        script = world.box.state / "capctl-runtime"
        script.write_text(
            f"#!/bin/sh\nexec {world.python} -I -c 'from capctl.runtime_main import main; main()'"
            f' --capctl-config {world.guest(config)} "$@"\n'
        )
        script.chmod(0o755)
    return world.guest(world.box.state / "capctl-runtime")


def test_wrapper_devices_survive_daemon_reload(world: World, runc: GuestRunc) -> None:
    m, other = GPU0["mig_devices"][2], GPU0["mig_devices"][3]
    gi, ci = mig_minor(GPU0, m["gi"]), mig_minor(GPU0, m["gi"], m["ci"])
    other_gi = mig_minor(GPU0, other["gi"])
    # runc passes a spec device to systemd only if /dev/char/M:m resolves where runc runs: on a
    # real host `capctl sync` makes these links; here the box's /dev gets links to the
    # simulated host's nodes.
    names = [f"{CAPS_MAJOR}:{gi}", f"{CAPS_MAJOR}:{ci}"] + [
        p.name for p in (world.root / "dev/char").iterdir() if not p.name.startswith("238:")
    ]
    char = world.guest(world.root / "dev/char")
    world.box.run(["sh", "-c", "mkdir -p /dev/char && for n in \"$@\"; do"
                   f" ln -sfn $(readlink -f {char}/$n) /dev/char/$n; done", "-", *names])
    try:
        mounts = [(world.root / "dev/nvidia-caps" / f"nvidia-cap{other_gi}", "/other/cap")]
        bundle = runc.bundle(mounts=mounts)
        config: dict[str, Any] = json.loads((bundle / "config.json").read_text())
        config["process"]["env"].append(f"NVIDIA_VISIBLE_DEVICES={m['uuid']}")
        ctr = GuestContainer(f"w{os.urandom(6).hex()}", bundle, "")
        ctr.unit = f"{runc.prefix}-{ctr.id}.scope"
        config["linux"]["cgroupsPath"] = f"{runc.slice}:{runc.prefix}:{ctr.id}"
        (bundle / "config.json").write_text(json.dumps(config, indent=2))
        log = f"{world.guest(bundle)}/runc.log"
        runc.containers.append(ctr)
        res = world.box.systemd_run(["sh", "-c", (
            f"exec {wrapper(world)} --systemd-cgroup --root {runc.root} run --detach"
            f" --bundle {world.guest(bundle)} {ctr.id} >{log} 2>&1 </dev/null")], check=False)
        ctr.log = (bundle / "runc.log").read_text()
        assert res.returncode == 0, ctr.log
        assert "skipping device" not in ctr.log
        ctr.pid = int(json.loads(runc.runc("state", ctr.id).stdout)["pid"])
        allow = device_allow(world, ctr)
        assert f"/dev/char/{CAPS_MAJOR}:{gi} r" in allow, allow

        def check() -> None:
            for node in (f"/dev/nvidia-caps/nvidia-cap{gi}", f"/dev/nvidia-caps/nvidia-cap{ci}"):
                assert runc.probe(ctr, node) == "ENXIO", node
            assert runc.probe(ctr, "/dev/nvidia0", "rw") == "ENXIO"
            assert runc.probe(ctr, "/other/cap") == "EPERM"

        check()
        world.box.run(["systemctl", "daemon-reload"])
        check()
    finally:
        world.box.run(["sh", "-c", 'cd /dev/char && rm -f "$@"', "-", *names])


def test_hook_failure_after_the_unit_grant_rolls_it_back(world: World, runc: GuestRunc) -> None:
    """A file bind-mounted at /dev/nvidia-caps makes the hook fail after it granted (cgroup and
    unit): it rolls both back.  Read from systemd afterwards, on a container that keeps running
    (the hook run by hand, as a runtime runs it, on the container's state): its unit's
    DeviceAllow= is what it was, and the kernel still refuses the capabilities."""
    blocker = world.box.state / "not-a-dir"
    blocker.write_text("")
    m = GPU0["mig_devices"][2]
    gi, ci = mig_minor(GPU0, m["gi"]), mig_minor(GPU0, m["gi"], m["ci"])
    bundle = world.hook_bundle(runc, {}, [gi, ci])  # asks for nothing: starts untouched
    config: dict[str, Any] = json.loads((bundle / "config.json").read_text())
    config["mounts"].append({"destination": "/dev/nvidia-caps", "type": "bind",
                             "source": world.guest(blocker), "options": ["rbind"]})
    (bundle / "config.json").write_text(json.dumps(config, indent=2))
    ctr = runc.run_detached(bundle)
    before = device_allow(world, ctr)
    # The same bundle now asks for M; the hook, run as the runtime would, fails after the
    # unit grant (it cannot make /dev/nvidia-caps/... in the container).
    config["process"]["env"].append(f"NVIDIA_VISIBLE_DEVICES={m['uuid']}")
    (bundle / "config.json").write_text(json.dumps(config, indent=2))
    hook = config["hooks"]["createRuntime"][0]
    state = {"ociVersion": "1.0.2", "id": ctr.id, "status": "created", "pid": ctr.pid,
             "bundle": world.guest(bundle)}
    res = world.box.run(hook["args"], input=json.dumps(state), check=False)
    assert res.returncode == 1 and "capctl: error:" in res.stderr, res
    log = world.log.read_text().splitlines()
    unit_line = max(i for i, line in enumerate(log) if ": DeviceAllow= added" in line)
    assert any("failed; rolled back the grant" in line for line in log[unit_line:]), log[-5:]
    # The same entries (reset and re-assigned, systemd lists them newest first: order has no
    # meaning for entries that only add access), none of M's.
    assert sorted(device_allow(world, ctr).splitlines()) == sorted(before.splitlines())
    assert f":{gi} " not in before and f":{ci} " not in before
    assert runc.probe(ctr, f"/other/cap{gi}") == runc.probe(ctr, f"/other/cap{ci}") == "EPERM"

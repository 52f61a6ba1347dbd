"""The OCI hook end to end: real runc containers, real device cgroups (v1 and v2), both stages.

On the simulated host the nvidia majors are unregistered, so inside the container opening a
node gives ENXIO when the device cgroup allows it and EPERM when it denies it: the kernel
itself checks capctl's grants.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from capctl import simulated
from capctl.simulated import mig_minor
from tests.support.hostcg import skip_unless
from tests.support.runc import BindMount, Bundle, RuncHarness
from tests.support.source import HOOK_ARGS

from .conftest import needs_runc

pytestmark = needs_runc

TOPO = simulated.topology()
GPU0 = TOPO["gpus"][0]
GPU6 = TOPO["gpus"][6]  # index 6, device minor 7


def mig(gpu: dict[str, Any], i: int) -> dict[str, Any]:
    return gpu["mig_devices"][i]  # type: ignore[no-any-return]


class World:
    """A synced simulated host plus a runc harness with the hook installed."""

    def __init__(self, tmp: Path, runc: RuncHarness, stage: str):
        self.root = tmp / "host"
        simulated.build(self.root)
        subprocess.run(
            [sys.executable, "-m", "capctl", "--root", str(self.root), "sync", "--all"],
            check=True,
            capture_output=True,
        )
        self.config = tmp / "capctl.toml"
        self.log = tmp / "hook.log"
        self.config.write_text(f'[hook]\nlog_file = "{self.log}"\n')
        os.chmod(self.config, 0o644)
        self.runc = runc
        self.stage = stage

    def hook(self, extra_env: list[str] | None = None) -> dict[str, list[dict[str, Any]]]:
        args = [
            sys.executable,
            *HOOK_ARGS,
            "--root",
            str(self.root),
            "--topology",
            str(self.root / "topology.json"),
            "--config",
            str(self.config),
            "hook",
        ]
        return {
            self.stage: [
                {
                    "path": sys.executable,
                    "args": args,
                    "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", *(extra_env or [])],
                }
            ]
        }

    def caps_node(self, minor: int) -> Path:
        return self.root / "dev/nvidia-caps" / f"nvidia-cap{minor}"

    def bundle(self, env: dict[str, str], *, others: list[int] = (), **kw: Any) -> Bundle:  # type: ignore[assignment]
        mounts = [BindMount(self.caps_node(m), f"/other/cap{m}") for m in others]
        return self.runc.bundle(env=env, hooks=kw.pop("hooks", self.hook()), mounts=mounts, **kw)


@pytest.fixture(params=["v1", "v2"])
def cgroup_version(request: pytest.FixtureRequest) -> str:
    skip_unless(v1=request.param == "v1", v2=request.param == "v2")
    return str(request.param)


@pytest.fixture(params=["createRuntime", "prestart"])
def world(tmp_path: Path, cgroup_version: str, request: pytest.FixtureRequest) -> Iterator[World]:
    with RuncHarness(tmp_path, cgroup2=cgroup_version == "v2") as runc:
        yield World(tmp_path, runc, str(request.param))


def test_one_mig_device(world: World) -> None:
    m = mig(GPU0, 2)  # gi 9, ci 0
    gi, ci = mig_minor(GPU0, m["gi"]), mig_minor(GPU0, m["gi"], m["ci"])
    other_gi = mig_minor(GPU0, mig(GPU0, 3)["gi"])
    other_ci = mig_minor(GPU0, mig(GPU0, 3)["gi"], 0)
    b = world.bundle({"NVIDIA_VISIBLE_DEVICES": m["uuid"]}, others=[other_gi, other_ci, 1])
    ctr = world.runc.run_detached(b)
    r = world.runc
    assert r.probe(ctr, f"/dev/nvidia-caps/nvidia-cap{gi}") == "ENXIO"
    assert r.probe(ctr, f"/dev/nvidia-caps/nvidia-cap{ci}") == "ENXIO"
    assert r.probe(ctr, "/dev/nvidia0", "rw") == "ENXIO"
    assert r.probe(ctr, "/dev/nvidiactl", "rw") == "ENXIO"
    assert r.probe(ctr, "/dev/nvidia-uvm", "rw") == "ENXIO"
    # Other MIG devices' capabilities and MIG config, bind-mounted in: the cgroup denies them.
    assert r.probe(ctr, f"/other/cap{other_gi}") == "EPERM"
    assert r.probe(ctr, f"/other/cap{other_ci}") == "EPERM"
    assert r.probe(ctr, "/other/cap1") == "EPERM"
    # Exactly those capability nodes, with the driver's modes.
    listing = r.exec(ctr, ["/bin/busybox", "ls", "/dev/nvidia-caps"]).stdout.split()
    assert sorted(listing) == sorted([f"nvidia-cap{gi}", f"nvidia-cap{ci}"])
    stat_out = r.exec(
        ctr, ["/bin/busybox", "stat", "-c", "%a %t:%T", f"/dev/nvidia-caps/nvidia-cap{gi}"]
    ).stdout
    assert stat_out.split() == ["444", f"ee:{gi:x}"]
    assert r.exec(ctr, ["/bin/busybox", "test", "-e", "/dev/nvidia1"]).returncode != 0
    assert "container" in world.log.read_text()


def test_minor_differs_from_index_and_multi_device(world: World) -> None:
    a = mig(GPU6, 0)
    b = mig(GPU0, 0)
    bundle = world.bundle({"NVIDIA_VISIBLE_DEVICES": f"6:0, {b['uuid']},{a['uuid']}"})
    ctr = world.runc.run_detached(bundle)
    r = world.runc
    assert r.probe(ctr, "/dev/nvidia7", "rw") == "ENXIO"  # GPU index 6 has device minor 7
    assert r.probe(ctr, "/dev/nvidia0", "rw") == "ENXIO"
    assert r.exec(ctr, ["/bin/busybox", "test", "-e", "/dev/nvidia6"]).returncode != 0
    for gpu, m in ((GPU6, a), (GPU0, b)):
        for minor in (mig_minor(gpu, m["gi"]), mig_minor(gpu, m["gi"], m["ci"])):
            assert r.probe(ctr, f"/dev/nvidia-caps/nvidia-cap{minor}") == "ENXIO"
    assert len(r.exec(ctr, ["/bin/busybox", "ls", "/dev/nvidia-caps"]).stdout.split()) == 4


def test_no_request(world: World) -> None:
    ctr = world.runc.run_detached(world.bundle({"NVIDIA_VISIBLE_DEVICES": "void"}))
    assert world.runc.exec(ctr, ["/bin/busybox", "test", "-e", "/dev/nvidia-caps"]).returncode != 0
    assert world.runc.exec(ctr, ["/bin/busybox", "test", "-e", "/dev/nvidia0"]).returncode != 0


def test_unknown_device_aborts_start(world: World) -> None:
    bad = "MIG-00000000-0000-0000-0000-000000000000"
    with pytest.raises(RuntimeError) as exc:
        world.runc.run_detached(world.bundle({"NVIDIA_VISIBLE_DEVICES": bad}))
    assert bad.lower() in str(exc.value).lower()
    assert "capctl: error:" in str(exc.value)


@pytest.mark.parametrize("which", ["CONFIG", "MONITOR"])
def test_mig_admin_needs_sys_admin(world: World, which: str) -> None:
    env = {"NVIDIA_VISIBLE_DEVICES": GPU0["uuid"], f"NVIDIA_MIG_{which}_DEVICES": "all"}
    with pytest.raises(RuntimeError, match="CAP_SYS_ADMIN"):
        world.runc.run_detached(world.bundle(env, capabilities=["CAP_KILL"]))
    ctr = world.runc.run_detached(world.bundle(env, capabilities=["CAP_SYS_ADMIN", "CAP_KILL"]))
    fixed = 1 if which == "CONFIG" else 2
    r = world.runc
    assert r.probe(ctr, f"/dev/nvidia-caps/nvidia-cap{fixed}") == "ENXIO"
    # Every possible capability of GPU 0, existing or not (instances created later).
    assert r.probe(ctr, f"/dev/nvidia-caps/nvidia-cap{mig_minor(GPU0, 0)}") == "ENXIO"
    assert r.probe(ctr, f"/dev/nvidia-caps/nvidia-cap{mig_minor(GPU0, 14, 7)}") == "ENXIO"
    assert (
        r.exec(
            ctr, ["/bin/busybox", "test", "-e", f"/dev/nvidia-caps/nvidia-cap{mig_minor(GPU6, 1)}"]
        ).returncode
        != 0
    )


@pytest.mark.parametrize("cgroup_version", ["v1", "v2"])
def test_sixteen_containers_at_once(tmp_path: Path, cgroup_version: str) -> None:
    skip_unless(v1=cgroup_version == "v1", v2=cgroup_version == "v2")
    with RuncHarness(tmp_path, cgroup2=cgroup_version == "v2") as runc:
        w = World(tmp_path, runc, "createRuntime")
        devs = [(g, m) for g in TOPO["gpus"] for m in g["mig_devices"]][:16]
        assert len(devs) == 16
        bundles = [w.bundle({"NVIDIA_VISIBLE_DEVICES": m["uuid"]}) for _g, m in devs]
        with ThreadPoolExecutor(16) as pool:
            ctrs = list(pool.map(runc.run_detached, bundles))
        for (g, m), ctr in zip(devs, ctrs, strict=True):
            want = sorted(
                [
                    f"nvidia-cap{mig_minor(g, m['gi'])}",
                    f"nvidia-cap{mig_minor(g, m['gi'], m['ci'])}",
                ]
            )
            assert (
                sorted(runc.exec(ctr, ["/bin/busybox", "ls", "/dev/nvidia-caps"]).stdout.split())
                == want
            )
            assert runc.probe(ctr, f"/dev/nvidia-caps/{want[0]}") == "ENXIO"
            assert runc.probe(ctr, f"/dev/nvidia{g['minor']}", "rw") == "ENXIO"


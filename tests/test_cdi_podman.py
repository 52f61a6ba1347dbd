"""capctl's CDI specs in a real podman 4.3 (cgroup v1 and v2): podman creates the nodes and the
device-cgroup rules from the specs alone, with no hook: the spec-wide nodes (control, UVM)
with any device, and the management devices from their own file of the same kind.

On the simulated host the nvidia majors are unregistered, so in the container a node opens
with ENXIO when the device cgroup allows it and EPERM when it denies it.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from capctl import simulated
from tests.support.clients import Container, classify, probe_argv, unique_name
from tests.support.hostcg import needs, skip_unless
from tests.support.podman import CDI_DIR, PodmanHarness

pytestmark = [pytest.mark.kernel, needs(tools=("runc", "podman", "busybox"))]

TOPO = simulated.topology()
GPU0 = TOPO["gpus"][0]
GPU6 = TOPO["gpus"][6]  # index 6, device minor 7


def probe(podman: PodmanHarness, ctr: Container, path: str, mode: str = "r") -> str:
    """:meth:`PodmanHarness.probe`; busybox says "can't create" for a failed ``<>`` open."""
    res = podman.exec(ctr, probe_argv(path, mode))
    res.stderr = (res.stderr or "").replace(f"can't create {path}:", f"can't open {path}:")
    return classify(res, path)


def capctl(root: Path, *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "capctl", "--root", str(root), "--topology",
         str(root / "topology.json"), *args],
        check=True, capture_output=True,
    )


class CdiWorld:
    """A synced simulated host whose CDI specs (kind capctl.io/mig) podman reads: the main
    spec, and with ``management`` the management spec beside it."""

    def __init__(self, tmp: Path, podman: PodmanHarness, management: bool = False):
        self.root = tmp / "host"
        simulated.build(self.root)
        capctl(self.root, "sync", "--all")
        self.spec = CDI_DIR / f"{unique_name()}.json"
        self.management = CDI_DIR / f"{self.spec.stem}-management.json"
        podman.cdi_specs += [self.spec, self.management]  # removed when the harness closes
        capctl(self.root, "--config", str(tmp / "none.toml"), "cdi", "generate", "--output",
               str(self.spec), "--management" if management else "--no-management")
        assert self.management.exists() == management
        self.podman = podman

    def node(self, minor: int) -> Path:
        return self.root / "dev/nvidia-caps" / f"nvidia-cap{minor}"

    def run(self, device: str, others: list[int]) -> Container:
        extra = ["--device", f"capctl.io/mig={device}"]
        for m in others:
            extra += ["-v", f"{self.node(m)}:/other/cap{m}"]
        return self.podman.run(extra=extra)


@pytest.fixture(params=[False, True], ids=["cgroup-v1", "cgroup-v2"])
def world(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[CdiWorld]:
    skip_unless(v1=not request.param, v2=bool(request.param))
    with PodmanHarness(tmp_path, cgroup2=bool(request.param)) as podman:
        yield CdiWorld(tmp_path, podman)


@pytest.fixture(params=[False, True], ids=["cgroup-v1", "cgroup-v2"])
def managed_world(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[CdiWorld]:
    skip_unless(v1=not request.param, v2=bool(request.param))
    with PodmanHarness(tmp_path, cgroup2=bool(request.param)) as podman:
        yield CdiWorld(tmp_path, podman, management=True)


@pytest.mark.parametrize("by", ["uuid", "index"])
def test_mig_device(world: CdiWorld, by: str) -> None:
    m = GPU6["mig_devices"][1]  # gpu minor 7, gi 2, ci 0
    device = m["uuid"] if by == "uuid" else f"6:{m['index']}"
    gi, ci = simulated.mig_minor(7, m["gi"]), simulated.mig_minor(7, m["gi"], m["ci"])
    other = GPU6["mig_devices"][0]
    others = [simulated.mig_minor(7, other["gi"]), simulated.mig_minor(7, other["gi"], other["ci"]), 1]
    p = world.podman
    ctr = world.run(device, others)
    assert probe(p, ctr, f"/dev/nvidia-caps/nvidia-cap{gi}") == "ENXIO"
    assert probe(p, ctr, f"/dev/nvidia-caps/nvidia-cap{ci}") == "ENXIO"
    for path in ("/dev/nvidia7", "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"):
        assert probe(p, ctr, path, "rw") == "ENXIO", path
    # Capabilities are read-only, as the hook grants them.
    assert probe(p, ctr, f"/dev/nvidia-caps/nvidia-cap{gi}", "rw") == "EPERM"
    # Another MIG device's capabilities and MIG config, bind-mounted in: denied.
    for minor in others:
        assert probe(p, ctr, f"/other/cap{minor}") == "EPERM"
    listing = p.exec(ctr, ["/bin/busybox", "ls", "/dev/nvidia-caps"]).stdout.split()
    assert sorted(listing) == sorted([f"nvidia-cap{gi}", f"nvidia-cap{ci}"])
    assert p.exec(ctr, ["/bin/busybox", "test", "-e", "/dev/nvidia6"]).returncode != 0


def test_whole_gpu(world: CdiWorld) -> None:
    m = GPU0["mig_devices"][0]
    others = [simulated.mig_minor(0, m["gi"]), simulated.mig_minor(0, m["gi"], m["ci"])]
    p = world.podman
    ctr = world.run(GPU0["uuid"], others)
    assert probe(p, ctr, "/dev/nvidia0", "rw") == "ENXIO"
    assert probe(p, ctr, "/dev/nvidiactl", "rw") == "ENXIO"
    # A whole GPU in MIG mode is its parent node only: no MIG device's capability.
    for minor in others:
        assert probe(p, ctr, f"/other/cap{minor}") == "EPERM"
    assert p.exec(ctr, ["/bin/busybox", "test", "-e", "/dev/nvidia-caps"]).returncode != 0


def test_management_devices_from_their_own_spec(managed_world: CdiWorld) -> None:
    p = managed_world.podman
    config, monitor = simulated.minor_of("config"), simulated.minor_of("monitor")
    later = simulated.minor_of("gpu0/gi14/ci7/access")  # an instance not created yet
    not_mig = simulated.minor_of("gpu4/gi0/access")  # GPU index 4 is not in MIG mode
    ctr = managed_world.run("mig-config", [monitor, not_mig])
    for minor in (config, later):
        assert probe(p, ctr, f"/dev/nvidia-caps/nvidia-cap{minor}") == "ENXIO", minor
    for path in ("/dev/nvidia0", "/dev/nvidiactl", "/dev/nvidia-uvm"):  # spec-wide and own
        assert probe(p, ctr, path, "rw") == "ENXIO", path
    for minor in (monitor, not_mig):
        assert probe(p, ctr, f"/other/cap{minor}") == "EPERM", minor
    # The main spec's devices, read beside it, give nothing of the management spec.
    m = GPU6["mig_devices"][1]
    ctr = managed_world.run(m["uuid"], [config])
    assert probe(p, ctr, f"/dev/nvidia-caps/nvidia-cap{simulated.mig_minor(7, m['gi'])}") \
        == "ENXIO"
    assert probe(p, ctr, f"/other/cap{config}") == "EPERM"


def test_the_spec_alone_decides(world: CdiWorld) -> None:
    """Each node carries its type and major, so podman never stats the host node: the device
    works with its host capability node gone (without ``type`` podman 4.3 would refuse to
    start: "failed to stat CDI host device")."""
    m = GPU6["mig_devices"][1]
    ci = simulated.mig_minor(7, m["gi"], m["ci"])
    world.node(ci).unlink()
    p = world.podman
    ctr = world.run(f"6:{m['index']}", [])
    assert probe(p, ctr, f"/dev/nvidia-caps/nvidia-cap{ci}") == "ENXIO"
    mode = p.exec(ctr, ["/bin/busybox", "stat", "-c", "%a", f"/dev/nvidia-caps/nvidia-cap{ci}"])
    assert mode.stdout.strip() == "444"  # the spec's fileMode, not runc's default 0666

"""Demo part 2: a real busybox container started by runc with the capctl hook, on the
simulated host built by demo.sh.  Shows what the container sees: its MIG device's nodes open
(ENXIO: the device cgroup allows them; the simulated driver is not loaded) and another MIG
device's capability, bind-mounted in, refused by the kernel (EPERM).

    python scripts/demo_container.py HOST_ROOT
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from capctl import simulated
from tests.support.runc import BindMount, RuncHarness
from tests.support.source import HOOK_ARGS


def main(root: Path) -> None:
    topo = simulated.topology()
    gpu = topo["gpus"][6]  # index 6, device minor 7
    mine, other = gpu["mig_devices"][0], topo["gpus"][0]["mig_devices"][0]
    other_gi = simulated.minor_of(f"gpu0/gi{other['gi']}/access")
    hook = [sys.executable, *HOOK_ARGS, "--root", str(root),
            "--topology", str(root / "topology.json"), "--config", "/nonexistent/capctl.toml", "hook"]
    with tempfile.TemporaryDirectory(prefix="capctl-demo-runc-") as work, RuncHarness(Path(work)) as runc:
        bundle = runc.bundle(
            env={"NVIDIA_VISIBLE_DEVICES": mine["uuid"]},
            hooks={"createRuntime": [{"path": sys.executable, "args": hook, "env": ["PATH=/usr/bin:/bin"]}]},
            mounts=[BindMount(root / f"dev/nvidia-caps/nvidia-cap{other_gi}", "/other-mig-gi")],
        )
        print(f"$ runc run -d  (NVIDIA_VISIBLE_DEVICES={mine['uuid']}: GPU index 6, minor 7, "
              f"GI {mine['gi']} CI {mine['ci']})")
        ctr = runc.run_detached(bundle)
        print("$ ls -ld /dev/nvidia*; ls -l /dev/nvidia-caps   (inside the container)")
        out = runc.exec(ctr, ["/bin/busybox", "sh", "-c", "ls -ld /dev/nvidia*; ls -l /dev/nvidia-caps"])
        print(out.stdout.rstrip())
        for path, mode in (("/dev/nvidia-caps/" + n, "r") for n in
                           runc.exec(ctr, ["/bin/busybox", "ls", "/dev/nvidia-caps"]).stdout.split()):
            print(f"open {path:<32} -> {runc.probe(ctr, path, mode)}   (allowed by the device cgroup)")
        print(f"open {'/dev/nvidia7':<32} -> {runc.probe(ctr, '/dev/nvidia7', 'rw')}   (allowed)")
        print(f"open {'/other-mig-gi (bind mount)':<32} -> {runc.probe(ctr, '/other-mig-gi')}   "
              "(another MIG device's capability: denied by the kernel)")
        version = "v2 (eBPF)" if runc.cgroup2 else "v1 (devices.list)"
        print(f"device cgroup: {version} at {runc.device_cgroup(bundle)}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))

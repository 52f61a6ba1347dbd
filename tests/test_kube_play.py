"""The DaemonSet's pod, for real: ``podman kube play`` of its pod template, with the image
built offline, on a simulated GPU node (``tests/support/kubeplay.py``).

Judged on the node's side, by the kernel where it can be: the capability nodes appear, the
CDI spec appears in the node's ``/var/run/cdi``, a container that a CDI-aware runtime starts
with that spec gets exactly its MIG device (ENXIO for its nodes, EPERM for another's), and so
do one that CRI-O's hooks.d path starts through the hook the init container installed and one
started through containerd's runtime entry (the launcher it installed); a
MIG instance re-created in the driver shows up in the spec within the watch's bound; the
probes' commands answer; and stopping the pod, as deleting the DaemonSet does, leaves the
node's runtime places as they were.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

import capctl
from capctl import simulated
from tests.support.clients import Container, classify, probe_argv, wait_for
from tests.support.hostcg import KUBE_PLAY_NEEDS_V1, LAYOUT, PODMAN_TOOLS, needs
from tests.support.kubeplay import DRIVER_ROOT, NVML, KubePlay, SimNode
from tests.support.podman import PodmanHarness

pytestmark = [
    pytest.mark.kernel,
    needs(tools=(*PODMAN_TOOLS, "debootstrap")),
    pytest.mark.skipif(LAYOUT.v1_devices is None, reason=KUBE_PLAY_NEEDS_V1),
]

COMPONENTS = ("crio-hooks", "containerd", "driver-container")
#: The simulated node has no NVML: the watcher and the hook take the topology snapshot.
CONFIG_EXTRA = f'[host]\ntopology = "{DRIVER_ROOT}/topology.json"\n'
#: How long the watcher may take to follow an instance change: its poll (1 s), the settle
#: time and a sync on this 2-core machine, with room.  A bound, not a speed goal
#: (bench/bench_fleet.py measures that).
WATCH_BOUND = 30.0
CAPS = "proc/driver/nvidia/capabilities"
HEARTBEAT = "/run/capctl/heartbeat"


def probe(podman: PodmanHarness, ctr: Container, path: str) -> str:
    return classify(podman.exec(ctr, probe_argv(path)), path)


def spec_devices(spec: Path) -> dict[str, Any]:
    try:
        return {d["name"]: d for d in json.loads(spec.read_text())["devices"]}
    except (FileNotFoundError, ValueError, KeyError):
        return {}


def cap_minors(device: dict[str, Any]) -> list[int]:
    return sorted(n["minor"] for n in device["containerEdits"]["deviceNodes"]
                  if "/nvidia-caps/" in n["path"])


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.rename(tmp, path)


def test_daemonset_pod_on_a_simulated_node(tmp_path: Path) -> None:
    node = SimNode(tmp_path)
    simulated.build(node.driver)
    (node.driver / NVML).parent.mkdir(parents=True, exist_ok=True)
    (node.driver / NVML).write_bytes(b"")  # the hostPath File must exist; never loaded
    topo = simulated.topology()
    gpu6 = topo["gpus"][6]  # index 6, device minor 7
    mine, other = gpu6["mig_devices"][1], gpu6["mig_devices"][0]
    mine_caps = [simulated.mig_minor(gpu6, mine["gi"]), simulated.mig_minor(gpu6, mine["gi"], 0)]
    other_caps = [simulated.mig_minor(gpu6, other["gi"]),
                  simulated.mig_minor(gpu6, other["gi"], 0)]
    nodes = node.driver / "dev" / "nvidia-caps"

    with KubePlay(tmp_path, node, COMPONENTS, CONFIG_EXTRA) as kube:
        pm = kube.podman
        try:
            # The watcher made the nodes and the spec, and says it is ready.
            wait_for(lambda: bool(spec_devices(node.spec)), 120, "the CDI spec")
            for minor in mine_caps + other_caps:
                assert (nodes / f"nvidia-cap{minor}").exists(), minor
            assert cap_minors(spec_devices(node.spec)[mine["uuid"]]) == mine_caps
            wait_for(lambda: kube.exec("watch", ["capctl", "health", "--heartbeat", HEARTBEAT,
                                                 "--ready"]).returncode == 0,
                     60, "readiness")
            assert kube.exec("watch", ["capctl", "health", "--heartbeat", HEARTBEAT]
                             ).returncode == 0

            # A CDI-aware runtime on the node: exactly the MIG device asked for.
            foreign = [f"{DRIVER_ROOT}/dev/nvidia-caps/nvidia-cap{m}" for m in other_caps]
            extra = ["--device", f"capctl.io/mig={mine['uuid']}"]
            for i, path in enumerate(foreign):
                extra += ["-v", f"{path}:/other/cap{i}"]
            ctr = pm.run(extra=extra)
            for minor in mine_caps:
                assert probe(pm, ctr, f"/dev/nvidia-caps/nvidia-cap{minor}") == "ENXIO"
            assert probe(pm, ctr, "/dev/nvidia7") == "ENXIO"
            for i in range(len(foreign)):
                assert probe(pm, ctr, f"/other/cap{i}") == "EPERM"
            pm.remove(ctr)

            # CRI-O's path: the hook the init container installed, run by the runtime on the
            # node from the tree it copied to /opt/capctl.
            hook = json.loads((node.hooks_d / "oci-capctl.json").read_text())
            assert hook["hook"]["path"] == "/opt/capctl/bin/python3"
            assert hook["hook"]["args"][-3:] == ["--config", "/opt/capctl/etc/capctl.toml", "hook"]
            config = node.opt / "capctl/etc/capctl.toml"
            assert config.stat().st_mode & 0o777 == 0o644
            assert config.parent.stat().st_mode & 0o777 == 0o755
            # The driver root, for every entry point on the node, in [host] of that copy.
            assert tomllib.loads(config.read_text())["host"] == {
                "driver_root": DRIVER_ROOT, "topology": f"{DRIVER_ROOT}/topology.json"}
            # The tree needs nothing from the image: it runs from anywhere on this host.
            res = subprocess.run([str(node.opt / "capctl/bin/python3"), "-I", "-m", "capctl",
                                  "--version"], capture_output=True, text=True)
            assert res.stdout.strip() == f"capctl, version {capctl.__version__}", res.stderr
            extra = ["--annotation", "capctl.io/nvidia=true",
                     "--env", f"NVIDIA_VISIBLE_DEVICES={mine['uuid']}"]
            for i, path in enumerate(foreign):
                extra += ["-v", f"{path}:/other/cap{i}"]
            ctr = pm.run(extra=extra)
            for minor in mine_caps:
                assert probe(pm, ctr, f"/dev/nvidia-caps/nvidia-cap{minor}") == "ENXIO"
            for i in range(len(foreign)):
                assert probe(pm, ctr, f"/other/cap{i}") == "EPERM"
            pm.remove(ctr)

            # containerd's path: its drop-in names the launcher the init container wrote into
            # the node's /opt/capctl, which runs capctl-runtime, then the node's runc.  Run by
            # podman here (containerd's CRI plugin calls it the same way: runc's command line).
            dropin = tomllib.loads((node.conf_d / "99-capctl.toml").read_text())
            runtime = dropin["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]
            launcher = runtime["capctl"]["options"]["BinaryName"]
            assert launcher == "/opt/capctl/libexec/capctl-runtime"
            extra = ["--env", f"NVIDIA_VISIBLE_DEVICES={mine['uuid']}"]
            for i, path in enumerate(foreign):
                extra += ["-v", f"{path}:/other/cap{i}"]
            pm.runtime = launcher
            try:
                ctr = pm.run(extra=extra)
            finally:
                pm.runtime = "runc"
            for minor in mine_caps:
                assert probe(pm, ctr, f"/dev/nvidia-caps/nvidia-cap{minor}") == "ENXIO"
            for i in range(len(foreign)):
                assert probe(pm, ctr, f"/other/cap{i}") == "EPERM"
            pm.remove(ctr)

            # Re-create the other MIG instance (destroyed, made again: a new UUID).
            snap = node.driver / "topology.json"
            shutil.rmtree(node.driver / CAPS / f"gpu7/mig/gi{other['gi']}")
            topo["gpus"][6]["mig_devices"] = [mine]
            write_json(snap, topo)
            wait_for(lambda: other["uuid"] not in spec_devices(node.spec), WATCH_BOUND,
                     "the destroyed instance to leave the spec")
            simulated.create_instance(node.driver, 7, other["gi"], 0)
            again = {**other, "uuid": "MIG-" + "5e" * 4 + "-cdef-4012-8345-" + "67" * 6}
            topo["gpus"][6]["mig_devices"] = [again, mine]
            write_json(snap, topo)
            wait_for(lambda: again["uuid"] in spec_devices(node.spec), WATCH_BOUND,
                     "the re-created instance in the spec")
            assert cap_minors(spec_devices(node.spec)[again["uuid"]]) == other_caps
            assert kube.running("watch")
        except BaseException:
            print(kube.logs())
            raise

        # Deleting the DaemonSet: SIGTERM, and the node's runtime places are as before.
        kube.stop()
        logs = kube.logs()
        assert not kube.running("watch"), logs
        assert node.leftovers() == [], logs

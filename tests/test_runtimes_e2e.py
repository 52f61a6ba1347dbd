"""Real clients run capctl from its shipped and installed definitions, as an admin would set
them up: the container's own nodes open with ENXIO (its device cgroup allows them on the
simulated host's unregistered majors) and another MIG device's node, bind-mounted in, gives
EPERM (denied)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from capctl import simulated
from capctl.simulated import mig_minor
from tests.support.containerd import ContainerdHarness
from tests.support.docker import DockerHarness
from tests.support.hostcg import CONTAINERD_TOOLS, DOCKER_TOOLS, PODMAN_TOOLS, needs, skip_unless
from tests.support.podman import PodmanHarness
from tests.support.source import moved_here

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
needs_podman = needs(tools=PODMAN_TOOLS)
pytestmark = pytest.mark.kernel

TOPO = simulated.topology()
GPU0 = TOPO["gpus"][0]
MIG = GPU0["mig_devices"][2]
OTHER = GPU0["mig_devices"][3]


OWN_GI, OWN_CI = mig_minor(GPU0, MIG["gi"]), mig_minor(GPU0, MIG["gi"], MIG["ci"])
OTHER_GI = mig_minor(GPU0, OTHER["gi"])


class Sim:
    """A synced simulated host with a root-owned config (its log file beside it)."""

    def __init__(self, tmp: Path):
        self.root = tmp / "host"
        simulated.build(self.root)
        subprocess.run([str(BIN / "capctl"), "--root", str(self.root), "sync", "--all"],
                       check=True, capture_output=True)
        self.config = tmp / "capctl.toml"
        self.log = tmp / "hook.log"
        self.config.write_text(f'[hook]\nlog_file = "{self.log}"\n')
        os.chmod(self.config, 0o644)
        self.topology = self.root / "topology.json"

    @property
    def options(self) -> list[str]:
        return ["--root", str(self.root), "--topology", str(self.topology),
                "--config", str(self.config)]

    def other(self) -> str:
        return f"{self.root}/dev/nvidia-caps/nvidia-cap{OTHER_GI}:/other/cap:ro"


@pytest.fixture
def sim(tmp_path: Path) -> Sim:
    return Sim(tmp_path)


@needs_podman
@pytest.mark.parametrize("name", ["oci-capctl.json", "oci-capctl-always.json"])
def test_podman_runs_the_shipped_definition(tmp_path: Path, name: str) -> None:
    """The shipped file as written, only the documented installation moved to this venv (its
    prefix and import paths): podman starts the hook and it imports capctl (a container
    asking for nothing starts)."""
    hooks = tmp_path / "hooks.d"
    hooks.mkdir()
    (hooks / name).write_text(moved_here((REPO / "hooks" / name).read_text()))
    with PodmanHarness(tmp_path, hooks_dir=hooks) as podman:
        res = podman.run_once(["/bin/busybox", "true"],
                              extra=["--annotation", "capctl.io/nvidia=true"])
        assert res.returncode == 0, res.stderr
        # A request the host cannot meet (no driver at /): the hook ran and refused the start.
        res = podman.run_once(
            ["/bin/busybox", "true"],
            extra=["--annotation", "capctl.io/nvidia=true", "--env",
                   f"NVIDIA_VISIBLE_DEVICES={MIG['uuid']}"],
        )
        assert res.returncode != 0 and "capctl: error:" in res.stderr, res.stderr


@needs_podman
@pytest.mark.parametrize("cgroup2", [False, True], ids=["cgroup1", "cgroup2"])
def test_podman_with_the_installed_definition(tmp_path: Path, sim: Sim, trusted_dir: Path, cgroup2: bool) -> None:
    skip_unless(v1=not cgroup2, v2=cgroup2)
    hooks = tmp_path / "hooks.d"
    subprocess.run([str(BIN / "capctl"), *sim.options, "install", "--hooks-dir", str(hooks),
                    "--docker-config", str(tmp_path / "unused.json"),
                    "--containerd-dir", str(tmp_path / "u1"), "--crio-dir", str(tmp_path / "u2"),
                    "--launcher-dir", str(trusted_dir / "libexec")],
                   check=True, capture_output=True)
    with PodmanHarness(tmp_path, cgroup2=cgroup2, hooks_dir=hooks) as podman:
        ctr = podman.run(extra=["--annotation", "capctl.io/nvidia=true",
                                "--env", f"NVIDIA_VISIBLE_DEVICES={MIG['uuid']}",
                                "-v", sim.other()])
        assert podman.probe(ctr, f"/dev/nvidia-caps/nvidia-cap{OWN_GI}") == "ENXIO"
        assert podman.probe(ctr, f"/dev/nvidia-caps/nvidia-cap{OWN_CI}") == "ENXIO"
        assert podman.probe(ctr, "/dev/nvidia0") == "ENXIO"
        assert podman.probe(ctr, "/other/cap") == "EPERM"
    assert MIG["uuid"] in sim.log.read_text()


# --- capctl-runtime: Docker --runtime, ctr run --runc-binary ----------------------------------

needs_docker = needs(tools=DOCKER_TOOLS)
needs_containerd = needs(tools=CONTAINERD_TOOLS)


#: A MIG device no GPU of the simulated host has.
UNKNOWN_MIG = "MIG-00000000-0000-4000-8000-000000000000"


def wrapper_config(sim: Sim, tmp: Path) -> Path:
    """A root-owned config naming the simulated host and the real runc, for the wrapper."""
    path = tmp / "wrapper.toml"
    path.write_text(
        f'[hook]\nlog_file = "{sim.log}"\n'
        f'[host]\ndriver_root = "{sim.root}"\ntopology = "{sim.topology}"\n'
        f'[runtime]\nruntime = "{shutil.which("runc")}"\n'
    )
    os.chmod(path, 0o644)
    return path


@needs_docker
def test_docker_runtime_capctl(tmp_path: Path, sim: Sim, trusted_dir: Path) -> None:
    config = wrapper_config(sim, tmp_path)
    daemon_json = tmp_path / "daemon.json"
    subprocess.run([str(BIN / "capctl"), "--config", str(config), "install", "--no-hooks",
                    "--docker-config", str(daemon_json), "--containerd-dir", str(tmp_path / "u1"),
                    "--crio-dir", str(tmp_path / "u2"), "--launcher-dir", str(trusted_dir / "libexec")],
                   check=True, capture_output=True)
    runtimes = json.loads(daemon_json.read_text())["runtimes"]
    with DockerHarness(tmp_path, runtimes=runtimes) as docker:
        ctr = docker.run(extra=["--runtime", "capctl", "-e", f"NVIDIA_VISIBLE_DEVICES={MIG['uuid']}",
                                "-v", sim.other()])
        assert docker.probe(ctr, f"/dev/nvidia-caps/nvidia-cap{OWN_GI}") == "ENXIO"
        assert docker.probe(ctr, f"/dev/nvidia-caps/nvidia-cap{OWN_CI}") == "ENXIO"
        assert docker.probe(ctr, "/dev/nvidia0") == "ENXIO"
        assert docker.probe(ctr, "/other/cap") == "EPERM"
        # A container asking for nothing gets nothing.
        plain = docker.run(extra=["--runtime", "capctl", "-v", sim.other()])
        assert docker.probe(plain, "/other/cap") == "EPERM"
        # A start capctl refuses shows its reason in the user's terminal: the wrapper writes
        # it to runc's --log, where containerd's shim looks (not only to its stderr).
        failed = docker.run_once(["/bin/busybox", "true"], extra=[
            "--runtime", "capctl", "-e", f"NVIDIA_VISIBLE_DEVICES={UNKNOWN_MIG}"])
        assert failed.returncode != 0
        assert f"capctl-runtime: error: '{UNKNOWN_MIG}': no such device in the topology" \
            in failed.stderr, failed.stderr
    assert "config.json: added c " in sim.log.read_text()


@needs_containerd
def test_ctr_run_with_the_wrapper(tmp_path: Path, sim: Sim) -> None:
    config = wrapper_config(sim, tmp_path)
    # --runc-binary takes no arguments: a one-line script names the config.
    runc = tmp_path / "capctl-runc"
    runc.write_text(f'#!/bin/sh\nexec {BIN}/capctl-runtime --capctl-config {config} "$@"\n')
    runc.chmod(0o755)
    other = sim.other().rsplit(":", 2)[0]
    with ContainerdHarness(tmp_path, runc_binary=str(runc)) as cd:
        ctr = cd.run(extra=["--env", f"NVIDIA_VISIBLE_DEVICES={MIG['uuid']}", "--mount",
                            f"type=bind,src={other},dst=/other/cap,options=rbind:ro"])
        assert cd.probe(ctr, f"/dev/nvidia-caps/nvidia-cap{OWN_GI}") == "ENXIO"
        assert cd.probe(ctr, f"/dev/nvidia-caps/nvidia-cap{OWN_CI}") == "ENXIO"
        assert cd.probe(ctr, "/dev/nvidia0") == "ENXIO"
        assert cd.probe(ctr, "/other/cap") == "EPERM"
        failed = cd.run_once(["/bin/busybox", "true"],
                             extra=["--env", f"NVIDIA_VISIBLE_DEVICES={UNKNOWN_MIG}"])
        assert failed.returncode != 0
        assert f"capctl-runtime: error: '{UNKNOWN_MIG}': no such device in the topology" \
            in failed.stderr, failed.stderr


# --- Docker --gpus: dockerd runs capctl-docker-hook as nvidia-container-runtime-hook ----------


def dockerd_with_config(tmp: Path, config_text: str) -> Path:
    """A dockerd launcher: dockerd in a private mount namespace whose /etc has capctl's default
    config (an overlay on the host's /etc), so its hooks read that config and the host's /etc
    is untouched."""
    upper, work = tmp / "etc-upper", tmp / "etc-work"
    (upper / "capctl").mkdir(parents=True)
    work.mkdir()
    (upper / "capctl/capctl.toml").write_text(config_text)
    os.chmod(upper / "capctl/capctl.toml", 0o644)
    launcher = tmp / "dockerd-ns"
    launcher.write_text(
        "#!/bin/sh\n"
        "exec unshare -m --propagation private -- sh -c '"
        f"mount -t overlay overlay -o lowerdir=/etc,upperdir={upper},workdir={work} /etc "
        f'&& exec {shutil.which("dockerd")} "$@"\' dockerd "$@"\n'
    )
    launcher.chmod(0o755)
    return launcher


@needs_docker
def test_docker_gpus_through_the_installed_link(tmp_path: Path, sim: Sim, trusted_dir: Path) -> None:
    bindir = tmp_path / "bin"
    subprocess.run([str(BIN / "capctl"), "install", "--no-hooks", "--docker-config",
                    str(tmp_path / "u0.json"), "--containerd-dir", str(tmp_path / "u1"),
                    "--crio-dir", str(tmp_path / "u2"), "--docker-hook-link", str(bindir),
                    "--launcher-dir", str(trusted_dir / "libexec")],
                   check=True, capture_output=True)
    # The link runs capctl's launcher (python -IS), not pip's console script.
    launcher = trusted_dir / "libexec/capctl-docker-hook"
    assert os.readlink(bindir / "nvidia-container-runtime-hook") == str(launcher)
    assert launcher.read_text().startswith(f"#!{sys.executable} -IS\n")
    launcher = dockerd_with_config(
        tmp_path,
        f'[hook]\nlog_file = "{sim.log}"\n'
        f'[host]\ndriver_root = "{sim.root}"\ntopology = "{sim.topology}"\n',
    )
    # dockerd's environment reaches the hook; capctl's hook drops it (this one is harmless).
    with DockerHarness(tmp_path, path_prepend=[bindir], dockerd=str(launcher),
                       env={"CAPCTL_ROOT": "/nonexistent"}) as docker:
        ctr = docker.run(extra=["--gpus", f'"device={MIG["uuid"]}"', "-v", sim.other()])
        assert docker.probe(ctr, f"/dev/nvidia-caps/nvidia-cap{OWN_GI}") == "ENXIO"
        assert docker.probe(ctr, f"/dev/nvidia-caps/nvidia-cap{OWN_CI}") == "ENXIO"
        assert docker.probe(ctr, "/dev/nvidia0") == "ENXIO"
        assert docker.probe(ctr, "/other/cap") == "EPERM"
    assert MIG["uuid"] in sim.log.read_text()

"""Smoke tests of the real-client harnesses (podman, Docker, containerd): a container sees a
bind-mounted node of an unregistered char major, and the kernel's answer to opening it tells
the device cgroup's verdict: EPERM with no rule for it, ENXIO once the client allows it.
Each harness must also leave no cgroup, state directory or daemon behind.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.clients import (
    TEST_MAJOR,
    cgroup_dirs,
    make_nodes,
)
from tests.support.containerd import ContainerdHarness
from tests.support.docker import DockerHarness
from tests.support.hostcg import (
    CONTAINERD_TOOLS,
    DOCKER_TOOLS,
    LAYOUT,
    PODMAN_TOOLS,
    needs,
    skip_unless,
)
from tests.support.podman import PodmanHarness

needs_podman = needs(tools=PODMAN_TOOLS)
needs_docker = needs(tools=DOCKER_TOOLS)
needs_containerd = needs(tools=CONTAINERD_TOOLS)
pytestmark = pytest.mark.kernel


@pytest.fixture
def nodes(tmp_path: Path) -> Path:
    """A directory with one node ``n1`` of the unregistered major (to bind-mount)."""
    make_nodes(tmp_path / "nodes", [1], major=TEST_MAJOR)
    return tmp_path / "nodes"


@needs_podman
@pytest.mark.parametrize("cgroup2", [False, True], ids=["cgroup1", "cgroup2"])
def test_podman_device_verdicts(tmp_path: Path, nodes: Path, cgroup2: bool) -> None:
    skip_unless(v1=not cgroup2, v2=cgroup2)
    with PodmanHarness(tmp_path, cgroup2=cgroup2) as podman:
        ctr = podman.run(extra=["-v", f"{nodes}:/nodes"])
        assert ctr.pid > 0
        assert podman.device_cgroup(ctr).is_dir()
        assert podman.probe(ctr, "/nodes/n1") == "EPERM"
        node = nodes / "n1"
        assert (
            podman.probe_once("/dev/capctl-n1", extra=["--device", f"{node}:/dev/capctl-n1"])
            == "ENXIO"
        )
        parent, state = podman.cgroup_parent, podman.state
    assert cgroup_dirs(parent) == []
    assert not state.exists()


@needs_docker
def test_docker_device_verdicts(tmp_path: Path, nodes: Path) -> None:
    with DockerHarness(tmp_path) as docker:
        ctr = docker.run(extra=["-v", f"{nodes}:/nodes"])
        assert ctr.pid > 0
        assert docker.device_cgroup(ctr).is_dir()
        assert docker.probe(ctr, "/nodes/n1") == "EPERM"
        node = nodes / "n1"
        assert (
            docker.probe_once("/dev/capctl-n1", extra=["--device", f"{node}:/dev/capctl-n1"])
            == "ENXIO"
        )
        parent, state, daemon = docker.cgroup_parent, docker.state, docker.daemon
    assert daemon is not None and daemon.returncode is not None
    assert cgroup_dirs(parent) == []
    assert not state.exists()


@needs_containerd
def test_containerd_device_verdicts(tmp_path: Path, nodes: Path) -> None:
    mount = f"type=bind,src={nodes},dst=/nodes,options=rbind:rw"
    with ContainerdHarness(tmp_path) as cd:
        ctr = cd.run(extra=["--mount", mount])
        assert ctr.pid > 0
        assert cd.device_cgroup(ctr).is_dir()
        assert cd.probe(ctr, "/nodes/n1") == "EPERM"
        node = str(nodes / "n1")
        assert cd.probe_once(node, extra=["--device", node]) == "ENXIO"
        parent, state, daemon = cd.cgroup_parent, cd.state, cd.daemon
    assert daemon is not None and daemon.returncode is not None
    assert cgroup_dirs(parent) == []
    assert not state.exists()


def _logging_script(path: Path, log: Path, then: str) -> Path:
    """An executable shell script that appends its arguments to *log*, then runs *then*."""
    path.write_text(f'#!/bin/sh\necho "$0 $*" >> {log}\n{then}\n')
    path.chmod(0o755)
    return path


@needs_podman
def test_podman_hooks_dir_and_runtime(tmp_path: Path) -> None:
    """The harness's plumbing: *hooks_dir* hooks run, *runtime* is the runtime podman calls."""
    log = tmp_path / "calls.log"
    hook = _logging_script(tmp_path / "hook", log, f"cat > {tmp_path}/state.json")
    runtime = _logging_script(tmp_path / "runc-wrap", log, 'exec runc "$@"')
    hooks = tmp_path / "hooks.d"
    hooks.mkdir()
    (hooks / "capctl-test.json").write_text(
        json.dumps(
            {
                "version": "1.0.0",
                "hook": {"path": str(hook), "args": ["hook", "prestart"]},
                "when": {"annotations": {"^capctl\\.test$": "^yes$"}},
                "stages": ["prestart"],
            }
        )
    )
    with PodmanHarness(tmp_path, hooks_dir=hooks, runtime=str(runtime)) as podman:
        res = podman.run_once(["/bin/busybox", "true"], extra=["--annotation", "capctl.test=yes"])
        assert res.returncode == 0, res.stderr
    calls = log.read_text()
    assert f"{hook} prestart" in calls
    assert f"{runtime} " in calls and " create " in calls
    assert json.loads((tmp_path / "state.json").read_text())["annotations"]["capctl.test"] == "yes"


@needs_docker
def test_docker_runtimes_and_gpus_hook(tmp_path: Path) -> None:
    """*runtimes* reach the daemon config; with the hook on *path_prepend*, ``--gpus`` works
    and dockerd adds ``nvidia-container-runtime-hook prestart`` (here a logging stand-in)."""
    log = tmp_path / "calls.log"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    _logging_script(bindir / "nvidia-container-runtime-hook", log, "cat > /dev/null")
    runtime = _logging_script(tmp_path / "runc-wrap", log, 'exec runc "$@"')
    runtimes = {"wrapped": {"path": str(runtime), "runtimeArgs": ["--debug"]}}
    with DockerHarness(tmp_path, runtimes=runtimes, path_prepend=[bindir]) as docker:
        res = docker.run_once(
            ["/bin/busybox", "sh", "-c", "echo $NVIDIA_VISIBLE_DEVICES"],
            extra=["--runtime", "wrapped", "--gpus", "all"],
        )
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == "all"
    calls = log.read_text()
    assert f"{runtime} --debug " in calls
    assert f"{bindir}/nvidia-container-runtime-hook prestart" in calls


@needs_containerd
def test_containerd_runc_binary_and_spec(tmp_path: Path, nodes: Path) -> None:
    """``runc_binary`` is the runtime the shim calls; ``spec=`` runs a full OCI spec (here
    with a device rule for the node, so opening it gives ENXIO)."""
    log = tmp_path / "calls.log"
    runtime = _logging_script(tmp_path / "runc-wrap", log, 'exec runc "$@"')
    with ContainerdHarness(tmp_path, runc_binary=str(runtime)) as cd:
        spec = cd.default_spec()
        spec["mounts"].append(
            {"destination": "/nodes", "type": "bind", "source": str(nodes), "options": ["rbind"]}
        )
        rule = {"allow": True, "type": "c", "major": TEST_MAJOR, "minor": 1, "access": "rwm"}
        spec["linux"]["resources"]["devices"].append(rule)
        ctr = cd.run(spec=spec)
        assert cd.probe(ctr, "/nodes/n1") == "ENXIO"
        if not LAYOUT.default_is_v2():  # v1 lists the rule too; cgroup2 has only runc's program
            assert f"c {TEST_MAJOR}:1 rwm" in (cd.device_cgroup(ctr) / "devices.list").read_text()
    assert f"{runtime} " in log.read_text()

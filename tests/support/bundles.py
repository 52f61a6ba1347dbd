"""OCI bundles and stand-in containers for tests that run the hook or the wrapper directly."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.cgroups import V1_DEVICES, V2_ROOT, attach_deny_all, child_cgroup
from tests.support.hostcg import LAYOUT


def make_bundle(tmp: Path, env: list[str], *, dev: bool = False) -> Path:
    """``tmp/bundle``: a ``config.json`` with ``process.env`` and an empty ``rootfs`` (with a
    ``dev`` directory when ``dev``)."""
    bundle = tmp / "bundle"
    (bundle / ("rootfs/dev" if dev else "rootfs")).mkdir(parents=True)
    cfg = {"ociVersion": "1.0.2", "root": {"path": "rootfs"}, "process": {"env": env}}
    (bundle / "config.json").write_text(json.dumps(cfg))
    return bundle


def container_sleeper(dev: Path) -> subprocess.Popen[bytes]:
    """A process standing in for a container: its own mount namespace with a tmpfs at ``dev``
    (the hook refuses to write into a ``/dev`` on a host file system)."""
    script = 'mount -t tmpfs tmpfs "$1" && echo ready && exec sleep 60'
    proc = subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", str(dev)],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    return proc


@contextmanager
def stand_in_container(bundle: Path, cid: str = "c1") -> Iterator[tuple[Path, dict[str, object]]]:
    """A stand-in container of ``bundle`` in a device cgroup that denies all (v1 devices where
    the host has it, else cgroup2 with a runc-like default-deny program): yields (its cgroup,
    the OCI state a runtime gives its hook); killed and removed afterwards.
    :func:`tests.support.cgroups.rules_text` reads what the hook granted, on either."""
    v1 = LAYOUT.v1_devices is not None
    with child_cgroup(V1_DEVICES if v1 else V2_ROOT) as cg:
        sleeper = container_sleeper(bundle / "rootfs/dev")
        try:
            (cg / "cgroup.procs").write_text(str(sleeper.pid))
            if v1:
                (cg / "devices.deny").write_text("a")
            else:
                attach_deny_all(cg)
            yield cg, {"ociVersion": "1.0.2", "id": cid, "status": "creating",
                       "pid": sleeper.pid, "bundle": str(bundle)}
        finally:
            sleeper.kill()
            sleeper.wait()

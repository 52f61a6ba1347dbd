"""The hook imports only what a container start needs (issue 5: "check python -X importtime").

A real hook run (cgroup v1 grant, nodes made) under ``-X importtime``: the modules it adds to
the interpreter's own start must not include the heavy ones capctl avoids on this path.  A
structural check, not a timing: timings live in ``bench/bench_hook.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from capctl import simulated
from tests.support.cgroups import V1_DEVICES, child_cgroup

from .conftest import needs_root

#: Never on the hook's v1 path: dataclasses/typing/inspect (records instead), logging
#: (failure paths only), ctypes/platform (bpf: cgroup v2 only), the CLI and its libraries,
#: NVML (a snapshot is given), tomllib (no config file), and capctl's other commands.
FORBIDDEN = frozenset({
    "dataclasses", "typing", "inspect", "ast", "logging", "ctypes", "platform", "threading",
    "subprocess", "tomllib", "click", "pynvml", "pyroute2", "cgroupspy",
    "capctl.cli", "capctl.nvml", "capctl.sync", "capctl.grants", "capctl.doctor",
    "capctl.cgroup.v2", "capctl.cgroup.bpf", "capctl.cgroup.asm",
})

ENV = {"PATH": "/usr/bin:/bin"}


def imported(argv: list[str], stdin: bytes = b"") -> set[str]:
    res = subprocess.run(
        [sys.executable, "-I", "-X", "importtime", *argv], input=stdin, capture_output=True,
        env=ENV,
    )
    err = res.stderr.decode()
    assert res.returncode == 0, err[-2000:]
    return {
        line.rsplit("|", 1)[1].strip()
        for line in err.splitlines()
        if line.startswith("import time:") and "|" in line
    }


@needs_root
@pytest.mark.skipif(not (V1_DEVICES / "devices.list").exists(), reason="needs cgroup v1 devices")
def test_hook_imports_only_what_it_uses(sim_root: Path, tmp_path: Path) -> None:
    mig = simulated.topology()["gpus"][0]["mig_devices"][0]["uuid"]
    bundle = tmp_path / "bundle"
    (bundle / "rootfs/dev").mkdir(parents=True)
    config = {"ociVersion": "1.0.2", "root": {"path": "rootfs"},
              "process": {"env": [f"NVIDIA_VISIBLE_DEVICES={mig}"]}}
    (bundle / "config.json").write_text(json.dumps(config))
    with child_cgroup(V1_DEVICES) as cg:
        sleeper = subprocess.Popen(["sleep", "60"])
        try:
            (cg / "cgroup.procs").write_text(str(sleeper.pid))
            (cg / "devices.deny").write_text("a")
            state = {"ociVersion": "1.0.2", "id": "imports", "status": "creating",
                     "pid": sleeper.pid, "bundle": str(bundle)}
            hook = imported(
                ["-m", "capctl", "--root", str(sim_root), "--topology",
                 str(sim_root / "topology.json"), "--config", str(tmp_path / "none.toml"),
                 "hook"],
                json.dumps(state).encode(),
            )
            assert "c 238:" in (cg / "devices.list").read_text()  # it did the whole job
        finally:
            sleeper.kill()
            sleeper.wait()
    assert (bundle / "rootfs/dev/nvidia-caps").is_dir()
    added = hook - imported(["-c", "pass"])
    assert "capctl.hook" in added and "capctl.cgroup.v1" in added
    assert sorted(added & FORBIDDEN) == []

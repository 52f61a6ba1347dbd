"""Benchmark: ``capctl hook`` wall time for one MIG device, next to the interpreter floor.

Goal: p50 within 2x of ``python -I -c pass`` measured in the same run, on cgroup v1 and on
cgroup v2.  Also the start time a runc container gains from the hook (``runc run --detach``
with and without it).  Needs root, cgroup v1 ``devices`` and a cgroup2 hierarchy, and (for
the last part) runc + busybox-static.

cgroup v2 is measured in a private mount namespace with cgroup2 mounted at ``/sys/fs/cgroup``
(as a v2 host has it): the hook decides the version from its own mount namespace.  Each run
there gets a child cgroup with a runc-like default-deny device program, which the hook
extends.

Each hook run is a fresh grant: a new child device cgroup (deny all) holding a sleeping
process, a rootfs without nodes, and a state on stdin naming that process, so the hook does
the full job (resolve with a topology snapshot, grant, verify, mknod) every time.

    python -m bench.bench_hook [--runs N] [--containers N] [--python PATH] [--cgroup v1|v2|both]

The floor depends on the interpreter: this repository's editable install makes ``site``
import pathlib, re and more at every start (about 20 ms), a regular install does not
(about 8 ms), so the same hook is a smaller multiple of the first.  ``--python`` measures
another interpreter, e.g. ``python3 -m venv /tmp/v && /tmp/v/bin/pip install --no-deps .``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from capctl import simulated
from capctl.main import HOOK_INTERPRETER_ARGS

V1 = Path("/sys/fs/cgroup/devices")
#: Inside the bench's private mount namespace, cgroup2 is mounted here (a v2 host's layout).
V2 = Path("/sys/fs/cgroup")


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def timed(argv: list[str], stdin: bytes | None = None, env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    res = subprocess.run(argv, input=stdin, capture_output=True, env=env)
    dt = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"{argv[:4]}... failed: {res.stderr.decode().strip()}")
    return dt


def bench_hook(base: Path, runs: int, python: str, version: str) -> None:
    host = base / "host"
    simulated.build(host)
    subprocess.run([sys.executable, "-m", "capctl", "--root", str(host), "sync"], check=True, capture_output=True)
    mig = simulated.topology()["gpus"][0]["mig_devices"][0]["uuid"]
    bundle = base / "bundle"
    (bundle / "rootfs/dev").mkdir(parents=True)
    config = {"ociVersion": "1.0.2", "root": {"path": "rootfs"},
              "process": {"env": [f"NVIDIA_VISIBLE_DEVICES={mig}"], "capabilities": {"bounding": []}}}
    (bundle / "config.json").write_text(json.dumps(config))
    env = {"PATH": "/usr/bin:/bin"}
    floor = [timed([python, "-I", "-c", "pass"], env=env) for _ in range(runs)]
    f50 = statistics.median(floor)
    print(f"cgroup {version}: {python} -I -c pass:  p50 {f50 * 1e3:6.1f} ms  p99 {pct(floor, 99) * 1e3:6.1f} ms  ({runs} runs)")
    # Without a config file, then with one holding grants and [hook] log_file (tomllib).
    config_file = base / "capctl.toml"
    config_file.write_text(f'[hook]\nlog_file = "{base}/hook.log"\n\n[grants.config]\n'
                      'users = [{ name = "root", uid = 0 }]\n')
    config_file.chmod(0o644)
    variants = (("capctl hook (1 MIG dev):", base / "none.toml"),
                ("  ... with a config file:", config_file))
    for label, cfg in variants:
        hook = [python, *HOOK_INTERPRETER_ARGS, "--root", str(host), "--topology",
                str(host / "topology.json"), "--config", str(cfg), "hook"]
        times = hook_times(hook, bundle, env, runs, version)
        h50 = statistics.median(times)
        print(f"{label:25s} p50 {h50 * 1e3:6.1f} ms  p99 {pct(times, 99) * 1e3:6.1f} ms  "
              f"({h50 / f50:.2f}x the floor; goal <= 2x)")


def hook_times(
    hook: list[str], bundle: Path, env: dict[str, str], runs: int, version: str
) -> list[float]:
    times: list[float] = []
    for _ in range(runs):
        cg = (V1 if version == "v1" else V2) / f"capctl-bench-{uuid.uuid4().hex[:8]}"
        cg.mkdir()
        sleeper = subprocess.Popen(["sleep", "60"])
        try:
            (cg / "cgroup.procs").write_text(str(sleeper.pid))
            if version == "v1":
                (cg / "devices.deny").write_text("a")
            else:
                _attach_deny_all(cg)
            shutil.rmtree(bundle / "rootfs/dev")
            (bundle / "rootfs/dev").mkdir()
            state = json.dumps({"ociVersion": "1.0.2", "id": "bench", "status": "creating",
                                "pid": sleeper.pid, "bundle": str(bundle)}).encode()
            times.append(timed(hook, state, env))
            if version == "v1":
                assert "c 238:" in (cg / "devices.list").read_text()
            else:
                from capctl.cgroup.v2 import V2Devices

                assert any(r.major == 238 for r in V2Devices(str(cg)).allowed())
        finally:
            sleeper.kill()
            sleeper.wait()
            cg.rmdir()
    return times


def _attach_deny_all(cg: Path) -> None:
    """A default-deny device program, attached as runc attaches its own."""
    from capctl.cgroup import asm, devfilter
    from capctl.cgroup.bpf import BPF_F_ALLOW_MULTI, Bpf
    from capctl.edits.rules import DENY_ALL

    assert cg.parent == V2 and cg.name.startswith("capctl-bench-")  # never the root cgroup
    bpf = Bpf()
    prog = bpf.prog_load(asm.encode(devfilter.full_filter([DENY_ALL])), name="bench_deny")
    fd = os.open(cg, os.O_RDONLY | os.O_DIRECTORY)
    try:
        bpf.prog_attach(prog, fd, flags=BPF_F_ALLOW_MULTI)
    finally:
        os.close(fd)
        os.close(prog)


def run_v2(args: argparse.Namespace) -> None:
    """This benchmark's v2 part, re-run in a private mount namespace with cgroup2 at V2."""
    inner = [sys.executable, "-m", "bench.bench_hook", "--cgroup", "v2-inner",
             "--runs", str(args.runs), "--containers", "0", "--python", args.python]
    script = 'mount --make-rprivate / && mount -t cgroup2 none /sys/fs/cgroup && exec "$@"'
    subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", *inner], check=True,
                   cwd=Path(__file__).resolve().parent.parent)


def bench_runc(base: Path, n: int) -> None:
    if n <= 0:
        return
    if not (shutil.which("runc") and Path("/bin/busybox").exists()):
        print("runc or busybox-static missing: container start time not measured")
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.support.runc import RuncHarness
    from tests.test_hook_e2e import World

    with RuncHarness(base / "runc") as runc:
        world = World(base / "runc", runc, "createRuntime")
        mig = simulated.topology()["gpus"][0]["mig_devices"][0]["uuid"]
        result: dict[str, list[float]] = {"without hook": [], "with hook": []}
        for _ in range(n):
            for label, hooks in (("without hook", {}), ("with hook", world.hook())):
                b = runc.bundle(env={"NVIDIA_VISIBLE_DEVICES": mig}, hooks=hooks or None)
                t0 = time.perf_counter()
                ctr = runc.run_detached(b)
                result[label].append(time.perf_counter() - t0)
                runc.delete(ctr)
        a, b2 = statistics.median(result["without hook"]), statistics.median(result["with hook"])
        print(f"runc run --detach:        p50 {a * 1e3:6.1f} ms without the hook, {b2 * 1e3:6.1f} ms with it "
              f"(+{(b2 - a) * 1e3:.1f} ms, {n} runs each)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--containers", type=int, default=10)
    ap.add_argument("--python", default=sys.executable,
                    help="interpreter for the hook and the floor; e.g. a venv with a regular "
                         "(non-editable) install, whose start imports far less")
    ap.add_argument("--cgroup", choices=("v1", "v2", "both", "v2-inner"), default="both")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_hook needs root")
    base = Path(tempfile.mkdtemp(prefix="capctl-bench-"))
    try:
        if args.cgroup in ("v1", "both"):
            bench_hook(base / "v1", args.runs, args.python, "v1")
        if args.cgroup in ("v2", "both"):
            run_v2(args)
        if args.cgroup == "v2-inner":
            bench_hook(base / "v2", args.runs, args.python, "v2")
        bench_runc(base, args.containers)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()

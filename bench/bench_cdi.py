"""Benchmark: what capctl's CDI spec costs a podman container start, and what keeping it
current costs while idle.

1. ``podman run --rm`` of a busybox ``true`` with ``--device capctl.io/mig=<MIG uuid>`` against
   the same container without it, interleaved in one run, median of ``--runs`` each (>= 10),
   for both specs capctl writes: with the management devices ``mig-config`` / ``mig-monitor``
   (the default) and without them (``--no-management``).  Goal: at most +3 ms.  The spec is
   ``capctl cdi generate`` of the simulated 8-GPU host (``--root`` a simulated root, so nodes
   carry ``hostPath``), put in ``/etc/cdi`` under a unique name before each run that uses it
   (one spec at a time: two with the same kind would conflict), removed afterwards.  cgroup
   v1 by default (``--cgroup v2``: a private cgroup2 mount).  Each spec is also run in the
   form ``--root /`` writes (the same spec less ``hostPath``: podman then makes the nodes
   itself from type, major and minor), and the cost per KB is fitted over the four.
2. ``capctl watch --cdi-output`` idle: its CPU time (utime + stime from ``/proc/PID/stat``)
   over ``--idle`` seconds, after start-up, as a share of one core.  Goal: below 0.1 %.

    python -m bench.bench_cdi [--runs N] [--idle SECONDS] [--cgroup v1|v2]

Needs root, podman 4.3+, runc, busybox-static and unshare(1).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from capctl import simulated
from tests.support.podman import CDI_DIR, PodmanHarness

REPO = Path(__file__).resolve().parents[1]
TRUE = ["/bin/busybox", "true"]


def capctl(root: Path, *args: str) -> bytes:
    return subprocess.run([sys.executable, "-m", "capctl", "--root", str(root), "--topology",
                           str(root / "topology.json"), "--config", str(root / "none.toml"),
                           *args], check=True, capture_output=True).stdout


def _without_host_path(data: bytes) -> bytes:
    """The same spec as ``--root /`` writes it: every node without ``hostPath``."""
    from capctl.deliver.cdifile import dumps

    spec = json.loads(data)
    for dev in spec["devices"]:
        for node in dev["containerEdits"]["deviceNodes"]:
            node.pop("hostPath")
    return dumps(spec)


def bench_podman(base: Path, runs: int, cgroup2: bool) -> None:
    root = base / "host"
    simulated.build(root)
    capctl(root, "sync", "--all")
    device = simulated.topology()["gpus"][0]["mig_devices"][0]["uuid"]
    full = capctl(root, "cdi", "generate", "--output", "-")
    small = capctl(root, "cdi", "generate", "--output", "-", "--no-management")
    variants = {"with mig-config/mig-monitor, driver root": full,
                "without (--no-management), driver root": small,
                "with mig-config/mig-monitor, --root /": _without_host_path(full),
                "without (--no-management), --root /": _without_host_path(small)}
    with PodmanHarness(base, cgroup2=cgroup2) as podman:
        spec = CDI_DIR / f"capctl-bench-{os.getpid()}.json"
        tmp = CDI_DIR / f".capctl-bench-{os.getpid()}.tmp"
        podman.cdi_specs += [spec, tmp]
        CDI_DIR.mkdir(parents=True, exist_ok=True)

        def install(data: bytes) -> None:  # outside the timed region; atomic, as capctl's
            tmp.write_bytes(data)
            os.replace(tmp, spec)

        with_dev = ["--device", f"capctl.io/mig={device}"]
        podman.run_once(TRUE)  # warm the caches: first runs set up storage
        for data in variants.values():
            install(data)
            res = podman.run_once(TRUE, extra=with_dev)
            if res.returncode != 0:
                raise SystemExit(f"podman run with the CDI device failed: {res.stderr.strip()}")
        times: dict[str, list[float]] = {"plain": [], **{v: [] for v in variants}}
        for _ in range(runs):
            for name in times:
                if name != "plain":
                    install(variants[name])
                t0 = time.perf_counter()
                res = podman.run_once(TRUE, extra=[] if name == "plain" else with_dev)
                times[name].append((time.perf_counter() - t0) * 1000)
                if res.returncode != 0:
                    raise SystemExit(f"podman run failed: {res.stderr.strip()}")
    p = statistics.median(times["plain"])
    print(f"podman run --rm ({'cgroup v2' if cgroup2 else 'cgroup v1'}, {runs} runs each, "
          f"median): without a CDI device {p:.1f} ms")
    sizes: list[float] = []
    added: list[float] = []
    for name, data in variants.items():
        c = statistics.median(times[name])
        sizes.append(len(data) / 1000)
        added.append(c - p)
        print(f"  --device capctl.io/mig=MIG-..., spec {name}, {len(data)} bytes: {c:.1f} ms, "
              f"{c - p:+.1f} ms (goal <= +3 ms)")
    slope, intercept = statistics.linear_regression(sizes, added)
    print(f"  cost of the spec's size (least squares): {slope:.3f} ms per KB, "
          f"{intercept:+.1f} ms at 0 KB")


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)


def bench_idle(base: Path, seconds: float, poll: float) -> None:
    root = base / "idle"
    simulated.build(root)
    out = base / "cdi" / "capctl.io-mig.json"
    proc = subprocess.Popen(
        ["unshare", "-n", sys.executable, "-m", "capctl", "--root", str(root), "--topology",
         str(root / "topology.json"), "--config", str(base / "none.toml"), "watch",
         "--cdi-output", str(out), "--poll", str(poll)],
        stderr=subprocess.DEVNULL, cwd=str(REPO), env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + 30
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(2)  # start-up done
        hz = os.sysconf("SC_CLK_TCK")
        t0, c0 = time.monotonic(), _cpu_ticks(proc.pid)
        time.sleep(seconds)
        t1, c1 = time.monotonic(), _cpu_ticks(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    share = (c1 - c0) / hz / (t1 - t0) * 100
    print(f"capctl watch --cdi-output idle, poll {poll} s: {(c1 - c0) / hz * 1000:.0f} ms CPU in "
          f"{t1 - t0:.0f} s = {share:.3f} % of a core (goal < 0.1 %)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--idle", type=float, default=60.0)
    ap.add_argument("--poll", type=float, default=0.5)
    ap.add_argument("--cgroup", choices=["v1", "v2"], default="v1")
    ap.add_argument("--skip-podman", action="store_true")
    args = ap.parse_args()
    if args.runs < 10:
        ap.error("--runs must be at least 10")
    with tempfile.TemporaryDirectory(prefix="capctl-bench-cdi.") as tmp:
        if not args.skip_podman:
            bench_podman(Path(tmp), args.runs, args.cgroup == "v2")
        if args.idle > 0:
            bench_idle(Path(tmp), args.idle, args.poll)


if __name__ == "__main__":
    main()

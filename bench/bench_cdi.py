"""Benchmark: what capctl's CDI spec costs a podman container start, and what keeping it
current costs while idle.

1. ``podman run --rm`` of a busybox ``true`` with ``--device capctl.io/mig=<MIG uuid>`` against
   the same container without it, interleaved in one run, median of ``--runs`` each (>= 10).
   Goal: at most +3 ms.  The spec is ``capctl cdi generate`` of the simulated 8-GPU host
   (``--root`` a simulated root, so nodes carry ``hostPath``), in ``/etc/cdi`` under a unique
   name, removed afterwards.  cgroup v1 by default (``--cgroup v2``: a private cgroup2 mount).
2. ``capctl watch --cdi-output`` idle: its CPU time (utime + stime from ``/proc/PID/stat``)
   over ``--idle`` seconds, after start-up, as a share of one core.  Goal: below 0.1 %.

    python -m bench.bench_cdi [--runs N] [--idle SECONDS] [--cgroup v1|v2]

Needs root, podman 4.3+, runc, busybox-static and unshare(1).
"""

from __future__ import annotations

import argparse
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


def capctl(root: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "capctl", "--root", str(root), "--topology",
                    str(root / "topology.json"), *args], check=True, capture_output=True)


def bench_podman(base: Path, runs: int, cgroup2: bool) -> None:
    root = base / "host"
    simulated.build(root)
    capctl(root, "sync", "--all")
    device = simulated.topology()["gpus"][0]["mig_devices"][0]["uuid"]
    with PodmanHarness(base, cgroup2=cgroup2) as podman:
        spec = CDI_DIR / f"capctl-bench-{os.getpid()}.json"
        podman.cdi_specs.append(spec)
        capctl(root, "cdi", "generate", "--output", str(spec))
        with_dev = ["--device", f"capctl.io/mig={device}"]
        podman.run_once(TRUE)  # warm the caches: first runs set up storage
        res = podman.run_once(TRUE, extra=with_dev)
        if res.returncode != 0:
            raise SystemExit(f"podman run with the CDI device failed: {res.stderr.strip()}")
        plain: list[float] = []
        cdi: list[float] = []
        for _ in range(runs):
            for extra, into in (((), plain), (with_dev, cdi)):
                t0 = time.perf_counter()
                res = podman.run_once(TRUE, extra=list(extra))
                into.append((time.perf_counter() - t0) * 1000)
                if res.returncode != 0:
                    raise SystemExit(f"podman run failed: {res.stderr.strip()}")
        size = spec.stat().st_size
    p, c = statistics.median(plain), statistics.median(cdi)
    print(f"podman run --rm ({'cgroup v2' if cgroup2 else 'cgroup v1'}, spec {size} bytes, "
          f"{runs} runs each): without {p:.1f} ms, with --device capctl.io/mig=MIG-... "
          f"{c:.1f} ms: {c - p:+.1f} ms (goal <= +3 ms)")


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

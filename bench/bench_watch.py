"""Benchmark: how long a grant stays lost under ``capctl watch``, and what the watch costs idle.

Goal: a grant back within 100 ms of nvidia-modprobe resetting its node; idle CPU below 0.1%
of a core.  Needs root (mknod).  Runs ``capctl watch`` on a simulated root on tmpfs, grants
``gpu0/gi7/access`` to uid 65534, then N times imitates nvidia-modprobe (alternately: the node
unlinked and re-created 0444 root-owned without ACL, or chmod 0444) and times the exposure
window: from the imitation's end to the node being the grant's (mode 0440) again, seen by an
``lstat`` loop.  Idle CPU: the watch process's CPU time (``/proc/<pid>/schedstat``, in ns)
over a quiet period, with the default instance poll interval; ``--cdi`` also keeps a CDI spec
current (``watch --cdi-output``, with the simulated host's topology snapshot).

    python -m bench.bench_watch [--rounds N] [--idle S] [--poll S] [--cdi]
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.report import Rows, cpu_ns
from capctl import simulated

GI7 = "gpu0/gi7/access"
REPO = Path(__file__).resolve().parents[1]


def imitate(path: Path, minor: int, recreate: bool) -> None:
    if recreate:
        path.unlink()
        os.mknod(path, stat.S_IFCHR | 0o444, os.makedev(simulated.CAPS_MAJOR, minor))
    else:
        os.chmod(path, 0o444)


def restored(path: Path) -> bool:
    try:
        return stat.S_IMODE(os.lstat(path).st_mode) == 0o440
    except FileNotFoundError:
        return False


def measure(args: argparse.Namespace, cdi_output: bool) -> tuple[list[float], float]:
    """The exposure windows (ms, sorted) and the idle CPU (% of a core) of one watch."""
    base = Path(tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    old_umask = os.umask(0)
    try:
        root, config = base / "root", base / "capctl.toml"
        simulated.build(root, dev_nodes=False)
        capctl = [sys.executable, "-m", "capctl", "--root", str(root), "--config", str(config)]
        subprocess.run([*capctl, "grant", GI7, "--user", "65534"], check=True,
                       capture_output=True, cwd=REPO)
        cdi = ["--cdi-output", str(base / "cdi/capctl.io-mig.json")] if cdi_output else []
        if cdi_output:
            capctl[-2:-2] = ["--topology", str(root / "topology.json")]
        w = subprocess.Popen([*capctl, "watch", "--poll", str(args.poll), *cdi],
                             stderr=subprocess.PIPE, cwd=REPO, bufsize=0)
        try:
            assert w.stderr is not None
            w.stderr.readline()
            w.stderr.readline()
            time.sleep(0.5)
            path = root / "dev/nvidia-caps" / f"nvidia-cap{simulated.minor_of(GI7)}"
            minor = simulated.minor_of(GI7)
            windows: list[float] = []
            for i in range(args.rounds):
                imitate(path, minor, recreate=i % 2 == 0)
                t0 = time.perf_counter()
                while not restored(path):
                    if time.perf_counter() - t0 > 5:
                        raise SystemExit("grant not restored within 5 s")
                windows.append(time.perf_counter() - t0)
                time.sleep(0.05)
            time.sleep(0.5)  # let the watch's own follow-up sync finish
            c0, t0 = cpu_ns(w.pid), time.monotonic()
            time.sleep(args.idle)
            c1, t1 = cpu_ns(w.pid), time.monotonic()
        finally:
            w.terminate()
            w.wait(timeout=10)
        return sorted(x * 1e3 for x in windows), (c1 - c0) / ((t1 - t0) * 1e9) * 100
    finally:
        os.umask(old_umask)
        shutil.rmtree(base)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--idle", type=float, default=10.0, help="seconds of idle measurement")
    ap.add_argument("--poll", type=float, default=1.0, help="watch --poll (instances)")
    ap.add_argument("--cdi", choices=("without", "with", "both"), default="both",
                    help="watch with --cdi-output, without it, or both (default)")
    args = ap.parse_args()
    rows = Rows(f"bench_watch (tmpfs, {args.rounds} imitations, --poll {args.poll:g})")
    for cdi_output in {"without": [False], "with": [True], "both": [False, True]}[args.cdi]:
        ms, idle = measure(args, cdi_output)
        mode = " --cdi-output" if cdi_output else ""
        p90 = ms[int(len(ms) * 0.9) - 1]
        late = "" if ms[-1] < 100 else ": **missed**"
        rows.note(f"| `capctl watch{mode}`: grant back after nvidia-modprobe resets its node "
                  f"(re-create 0444 / chmod 0444, alternately), p50 / p90 / max | - | "
                  f"{statistics.median(ms):.1f} / {p90:.1f} / {ms[-1]:.1f} ms | - | "
                  f"< 100 ms{late} |")
        rows.note(f"| `capctl watch{mode}`, idle, --poll {args.poll:g} s ({args.idle:g} s "
                  f"measured) | - | {idle:.3f}% of a core | - | < 0.1%"
                  f"{'' if idle < 0.1 else ': **missed**'} |")
    rows.print()


if __name__ == "__main__":
    main()

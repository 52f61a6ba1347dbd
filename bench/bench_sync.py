"""Benchmark: ``sync --all`` (4324 nodes + /dev/char links) against a raw ``os.mknod`` loop.

Goals (issue 2): first run within 2x of the raw mknod floor; a no-change re-run at least 3x
faster than the first run.  Runs on tmpfs (/dev/shm, like a real /dev).  Needs root.

    python -m bench.bench_sync [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from capctl import driver, simulated, sync
from capctl.host import Host


def raw_mknod(dirpath: Path, minors: list[int], major: int) -> float:
    dirpath.mkdir()
    d = str(dirpath)
    t0 = time.perf_counter()
    for m in minors:
        os.mknod(f"{d}/nvidia-cap{m}", 0o020444, os.makedev(major, m))
    return time.perf_counter() - t0


def capctl_sync(host: Host) -> float:
    t0 = time.perf_counter()
    state = driver.load(host)
    sync.apply(host, state, sync.plan(state, everything=True))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    try:
        raw, first, again = [], [], []
        for i in range(args.rounds):
            root = base / f"r{i}"
            simulated.build(root, dev_nodes=False)
            host = Host(root=root)
            minors = [c.minor for c in driver.load(host).table]
            raw.append(raw_mknod(base / f"raw{i}", minors, simulated.CAPS_MAJOR))
            first.append(capctl_sync(host))
            again.append(capctl_sync(host))
        n = len(minors)
        r, f, a = statistics.median(raw), statistics.median(first), statistics.median(again)
        print(f"nodes: {n} (median of {args.rounds} rounds, on {base.parent})")
        print(f"raw os.mknod loop:          {r * 1e3:8.1f} ms  ({r / n * 1e6:.1f} us/node)")
        print(
            f"capctl sync --all (first):  {f * 1e3:8.1f} ms  ({f / r:.2f}x the floor; goal <= 2x;"
            " includes parsing, /dev/char links, lock)"
        )
        print(
            f"capctl sync --all (again):  {a * 1e3:8.1f} ms  ({f / a:.1f}x faster than first; goal >= 3x)"
        )
    finally:
        shutil.rmtree(base)


if __name__ == "__main__":
    main()

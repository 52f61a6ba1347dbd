"""Benchmark: ``sync --all`` (4324 nodes + /dev/char links) against a raw ``os.mknod`` loop.

Goals (docs/contract.md, "Speed goals"): first run within 2x of the raw mknod floor; a no-change re-run at least 3x
faster than the first run.  Runs on tmpfs (/dev/shm, like a real /dev).  Needs root.

    python -m bench.bench_sync [--rounds N]

A second case is nvidia-modprobe's anchor: every capability present (a proc file for each of
the 4322 ``mig-minors`` lines, as with every instance of 32 GPUs created) and
``/dev/nvidia-caps`` empty, ``capctl sync`` (no ``--all``: they all exist) against the bare
loops it cannot go below: read each proc file (``os.open`` + ``os.read`` + ``os.close``),
then ``mknod`` + ``symlink``.  The goal is half of nvidia-modprobe's time for the same work
(measured at 184 ms on tmpfs, 256 ``-f`` per exec; not installed here, so the bare loops are
the reference printed).

Prints the medians of N rounds: the raw ``os.mknod`` loop (the floor of the goal), then
``capctl sync --all`` run first and again (parsing, plan, lock, nodes and /dev/char links),
then, for scale, the bare system calls each run cannot do without, as Python loops under
directory fds: ``mknod`` + ``symlink`` per capability for the first run, ``lstat`` +
``readlink`` for the re-run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from capctl import simulated
from capctl.devfs import sync
from capctl.driver import procfs
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
    state = procfs.load(host)
    sync.apply(host, state, sync.plan(state, everything=True))
    return time.perf_counter() - t0


def bare_syscalls(base: Path, minors: list[int], major: int) -> tuple[float, float]:
    """Seconds for the first run's mknod+symlink and the re-run's lstat+readlink, bare."""
    (base / "nvidia-caps").mkdir()
    (base / "char").mkdir()
    nodes_fd = os.open(base / "nvidia-caps", os.O_RDONLY | os.O_DIRECTORY)
    links_fd = os.open(base / "char", os.O_RDONLY | os.O_DIRECTORY)
    names = [f"nvidia-cap{m}" for m in minors]
    links = [b"%d:%d" % (major, m) for m in minors]
    targets = [b"../nvidia-caps/nvidia-cap%d" % m for m in minors]
    try:
        t0 = time.perf_counter()
        for name, m in zip(names, minors, strict=True):
            os.mknod(name, 0o020444, os.makedev(major, m), dir_fd=nodes_fd)
        for link, target in zip(links, targets, strict=True):
            os.symlink(target, link, dir_fd=links_fd)
        t1 = time.perf_counter()
        for name in names:
            os.lstat(name, dir_fd=nodes_fd)
        for link in links:
            os.readlink(link, dir_fd=links_fd)
        return t1 - t0, time.perf_counter() - t1
    finally:
        os.close(nodes_fd)
        os.close(links_fd)


def all_present(root: Path) -> list[Path]:
    """Give every mig-minors capability a proc file; returns their paths."""
    names = simulated.mig_minors_text().split()[0::2]
    return [simulated.write_capability_file(root, name) for name in names]


def bare_all_present(base: Path, files: list[Path], minors: list[int], major: int) -> float:
    """Seconds for the bare loops of the all-present case: read every proc file, then
    mknod + symlink for each."""
    (base / "nvidia-caps").mkdir()
    (base / "char").mkdir()
    nodes_fd = os.open(base / "nvidia-caps", os.O_RDONLY | os.O_DIRECTORY)
    links_fd = os.open(base / "char", os.O_RDONLY | os.O_DIRECTORY)
    paths = [str(p) for p in files]
    try:
        t0 = time.perf_counter()
        for path in paths:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            os.read(fd, 4097)
            os.close(fd)
        for m in minors:
            os.mknod(f"nvidia-cap{m}", 0o020444, os.makedev(major, m), dir_fd=nodes_fd)
        for m in minors:
            os.symlink(b"../nvidia-caps/nvidia-cap%d" % m, b"%d:%d" % (major, m),
                       dir_fd=links_fd)
        return time.perf_counter() - t0
    finally:
        os.close(nodes_fd)
        os.close(links_fd)


def capctl_sync_host(host: Host) -> float:
    t0 = time.perf_counter()
    sync.sync_host(host)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    try:
        raw, first, again, bare_first, bare_again = [], [], [], [], []
        for i in range(args.rounds):
            root = base / f"r{i}"
            simulated.build(root, dev_nodes=False)
            host = Host(root=root)
            minors = [c.minor for c in procfs.load(host).table]
            raw.append(raw_mknod(base / f"raw{i}", minors, simulated.CAPS_MAJOR))
            first.append(capctl_sync(host))
            again.append(capctl_sync(host))
            (base / f"bare{i}").mkdir()
            b1, b2 = bare_syscalls(base / f"bare{i}", minors, simulated.CAPS_MAJOR)
            bare_first.append(b1)
            bare_again.append(b2)
        n = len(minors)
        r, f, a = statistics.median(raw), statistics.median(first), statistics.median(again)
        bf, ba = statistics.median(bare_first), statistics.median(bare_again)
        print(f"nodes: {n} (median of {args.rounds} rounds, on {base.parent})")
        print(f"raw os.mknod loop:          {r * 1e3:8.1f} ms  ({r / n * 1e6:.1f} us/node)")
        print(
            f"capctl sync --all (first):  {f * 1e3:8.1f} ms  ({f / r:.2f}x the floor; goal <= 2x;"
            " includes parsing, /dev/char links, lock)"
        )
        print(
            f"capctl sync --all (again):  {a * 1e3:8.1f} ms  ({f / a:.1f}x faster than first; goal >= 3x)"
        )
        print(
            f"bare mknod+symlink loops:   {bf * 1e3:8.1f} ms  ({bf / r:.2f}x the floor: what a first run"
            " cannot go below)"
        )
        print(
            f"bare lstat+readlink loops:  {ba * 1e3:8.1f} ms  ({bf / ba:.1f}x faster than the bare"
            " first run: what a re-run cannot go below)"
        )
        present, bare_present = [], []
        for i in range(args.rounds):
            root = base / f"p{i}"
            simulated.build(root, dev_nodes=False)
            files = all_present(root)
            host = Host(root=root, config=base / f"p{i}.toml")
            mig = [c.minor for c in procfs.load(host).table if c.source.value == "mig-minors"]
            present.append(capctl_sync_host(host))
            (base / f"pb{i}").mkdir()
            bare_present.append(bare_all_present(base / f"pb{i}", files, mig, simulated.CAPS_MAJOR))
        p, bp = statistics.median(present), statistics.median(bare_present)
        print("every capability present (4322 proc files + 2 fabric), /dev/nvidia-caps empty:")
        print(
            f"capctl sync:                {p * 1e3:8.1f} ms  ({p / bp:.2f}x the bare loops; "
            f"{p / 0.184:.2f}x nvidia-modprobe's 184 ms anchor, goal <= 0.5x)"
        )
        print(
            f"bare read+mknod+symlink:    {bp * 1e3:8.1f} ms  (os.open+os.read per proc file, then"
            " mknod and symlink per capability)"
        )
    finally:
        shutil.rmtree(base)


if __name__ == "__main__":
    main()

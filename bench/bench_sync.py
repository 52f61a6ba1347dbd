"""Benchmark: ``capctl sync`` as users run it, beside NVIDIA's nvidia-modprobe, and the library
against the bare system calls it cannot go below.

1. **As a process, against nvidia-modprobe.** Every capability present (a proc file for each
   of the 4322 ``mig-minors`` lines, as with every instance of 32 GPUs created, plus the two
   fabric capabilities) and ``/dev/nvidia-caps`` empty, on tmpfs: ``capctl sync`` through
   ``capctl``'s launcher as ``capctl install`` (of ``--python``'s installation) writes it, a
   whole process with its start, imports and output, against nvidia-modprobe making the
   same nodes and ``/dev/char`` links from the same proc files, ``-f`` 256 at a time (the most
   one run takes: ``cap_files[256]`` in ``nvidia-modprobe.c``), 17 runs.  Interleaved, in one
   private mount namespace where the simulated root's ``/proc/devices`` and ``/proc/driver``
   are bound over the real ones, ``/sys/module/nvidia/initstate`` exists (nvidia-modprobe's
   "module loaded" test) and ``/dev`` is a fresh tmpfs (nvidia-modprobe writes
   ``/dev/nvidia-caps`` and ``/dev/char``, paths it hard-codes).  Goal: at most 0.5x.
   nvidia-modprobe is built from NVIDIA's source: ``git clone`` of ``--nvidia-modprobe-src``
   (default github.com/NVIDIA/nvidia-modprobe) into ``~/.cache/capctl-bench``, then ``make``;
   without network or a compiler the row says why it was skipped.
2. **The library, in-process** (no process start): ``sync --all`` (4324 nodes and links)
   first and again, against a raw ``os.mknod`` loop and the bare ``mknod`` + ``symlink`` /
   ``lstat`` + ``readlink`` loops under directory fds.

    python -m bench.bench_sync [--runs N] [--python PATH] [--nvidia-modprobe-src URL|DIR]

Needs root, unshare(1), and for row 1 git, make and a C compiler.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.report import Rows, interleaved, run_timed, trusted_tmpdir
from capctl import simulated

REPO = Path(__file__).resolve().parent.parent
CACHE = Path.home() / ".cache/capctl-bench"
NVIDIA_MODPROBE_SRC = "https://github.com/NVIDIA/nvidia-modprobe"
#: How many ``-f`` one nvidia-modprobe run takes (``char *cap_files[256]``).
PER_EXEC = 256


# --- nvidia-modprobe, built from source -------------------------------------------------------


def build_nvidia_modprobe(src: str) -> tuple[Path | None, str]:
    """(the binary, its version) or (None, why not): cloned once into the cache, built there."""
    checkout = CACHE / "nvidia-modprobe"
    binary = checkout / "out/nvidia-modprobe"
    if not binary.exists():
        for tool in ("git", "make", "cc"):
            if shutil.which(tool) is None:
                return None, f"no {tool} to build nvidia-modprobe"
        if not checkout.exists():
            CACHE.mkdir(parents=True, exist_ok=True)
            res = subprocess.run(["git", "clone", "-q", "--depth", "1", src, str(checkout)],
                                 capture_output=True, text=True, timeout=300)
            if res.returncode != 0:
                shutil.rmtree(checkout, ignore_errors=True)
                last = res.stderr.strip().splitlines()[-1:] or [f"exit status {res.returncode}"]
                return None, f"cannot clone {src}: {last[0]}"
        out = checkout / "out"
        res = subprocess.run(["make", "-j2", f"OUTPUTDIR={out}", str(binary)], cwd=checkout,
                             capture_output=True, text=True, timeout=600)
        if res.returncode != 0 or not binary.exists():
            return None, f"cannot build nvidia-modprobe: {res.stderr.strip()[-300:]}"
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True)
    words = version.stdout.split()
    return binary, words[words.index("version") + 1] if "version" in words else "?"


def capability_files(root: Path) -> list[str]:
    """Every capability proc file of the simulated root, as nvidia-modprobe names it."""
    found = []
    for base in sorted((root / "proc/driver").glob("nvidia*")):
        for dirpath, _dirs, files in os.walk(base):
            found += [os.path.join(dirpath, f) for f in sorted(files)
                      if "capabilities" in Path(dirpath).relative_to(root).parts]
    return ["/" + os.path.relpath(f, root) for f in found]


def clear_nodes(dev: Path) -> None:
    """Remove what a run made: the capability nodes and the /dev/char links."""
    shutil.rmtree(dev / "nvidia-caps", ignore_errors=True)
    char = dev / "char"
    if char.exists():
        for link in os.listdir(char):
            os.unlink(char / link)


def all_present(root: Path) -> None:
    """Give every mig-minors capability its proc file."""
    for name in simulated.mig_minors_text().split()[0::2]:
        simulated.write_capability_file(root, name)


# --- 1: as a process ---------------------------------------------------------------------------


def process_rows(rows: Rows, args: argparse.Namespace) -> None:
    """Row 1, run outside: builds nvidia-modprobe, then re-runs this module inside a private
    mount namespace (``--inner``) and takes its rows."""
    binary, version = build_nvidia_modprobe(args.nvidia_modprobe_src)
    if binary is None:
        print(f"bench_sync: nvidia-modprobe not measured: {version}", file=sys.stderr)
        rows.note(f"| `capctl sync` creating 4324 nodes, as a process, vs nvidia-modprobe | "
                  f"skipped | skipped | - | <= 0.5x: not measured ({version}) |")
        return
    base = Path(trusted_tmpdir("capctl-bench-sync."))
    try:
        inner = [sys.executable, "-m", "bench.bench_sync", "--inner", str(base), "--runs",
                 str(args.runs), "--python", args.python, "--nvidia-modprobe", str(binary),
                 "--nvidia-modprobe-version", version]
        # A tmpfs for the roots, the simulated driver bound over /proc's, a fresh /dev: all
        # gone with the namespace.
        script = (
            'set -e; mount --make-rprivate /; mount -t tmpfs -o mode=0755 none "$BASE"; '
            'exec "$@"'
        )
        res = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", *inner], cwd=REPO,
                             env={**os.environ, "BASE": str(base)}, stdout=subprocess.PIPE,
                             text=True)
        if res.returncode != 0:
            raise SystemExit(f"bench_sync --inner failed ({res.returncode})")
        for line in res.stdout.splitlines():
            if line.startswith("| ") and not line.startswith("| what "):
                rows.note(line)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def inner(args: argparse.Namespace) -> None:
    """Inside the private mount namespace, with a tmpfs at ``args.inner``."""
    base = Path(args.inner)
    root = base / "root"
    simulated.build(root, dev_nodes=False)
    all_present(root)
    subprocess.run([args.python, "-m", "capctl", "--config", str(base / "none.toml"), "install",
                    "--hooks-dir", str(base / "hooks.d"), "--launcher-dir", str(base / "libexec")],
                   check=True, capture_output=True, cwd=base)
    capctl = [str(base / "libexec/capctl"), "--root", str(root), "--config",
              str(base / "none.toml"), "sync"]
    files = capability_files(root)
    # The simulated driver where nvidia-modprobe looks (it hard-codes /proc, /sys and /dev).
    module = base / "module"
    (module / "nvidia").mkdir(parents=True)
    (module / "nvidia/initstate").write_text("live\n")
    for argv in (["mount", "--bind", str(root / "proc/devices"), "/proc/devices"],
                 ["mount", "--bind", str(root / "proc/driver"), "/proc/driver"],
                 ["mount", "--bind", str(module), "/sys/module"],
                 ["mount", "-t", "tmpfs", "-o", "mode=0755", "none", "/dev"],
                 ["mknod", "-m", "0666", "/dev/null", "c", "1", "3"],
                 ["mkdir", "/dev/char"]):  # as udev has made it on a host
        subprocess.run(argv, check=True)
    batches = [[str(args.nvidia_modprobe), *(x for f in files[i:i + PER_EXEC] for x in ("-f", f))]
               for i in range(0, len(files), PER_EXEC)]

    def modprobe() -> float:
        clear_nodes(Path("/dev"))
        t0 = time.perf_counter()
        for argv in batches:
            if subprocess.run(argv, close_fds=False).returncode != 0:
                raise SystemExit(f"nvidia-modprobe failed ({len(argv) // 2} -f from {argv[2]})")
        dt = time.perf_counter() - t0
        assert len(os.listdir("/dev/nvidia-caps")) == len(files)
        return dt

    def sync() -> float:
        clear_nodes(root / "dev")
        dt = run_timed(capctl)
        assert len(os.listdir(root / "dev/nvidia-caps")) == len(files)
        return dt

    def library() -> float:
        from capctl.devfs import sync as devfs_sync
        from capctl.host import Host

        clear_nodes(root / "dev")
        t0 = time.perf_counter()
        devfs_sync.sync_host(Host(root=root, config=base / "none.toml"))
        return time.perf_counter() - t0

    def floor() -> float:
        return run_timed([args.python, "-I", "-c", "pass"])

    proc_files = [str(root) + f for f in files]

    def bare() -> float:
        """The system calls any sync makes, bare: open, read and close each proc file, then
        mknod each node and symlink each /dev/char link (no walk, no parsing, no checks)."""
        clear_nodes(root / "dev")
        nodes_fd, links_fd = open_node_dirs(root / "dev")
        try:
            t0 = time.perf_counter()
            minors = []
            for path in proc_files:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                minors.append(int(os.read(fd, 4097).split(b"\n", 1)[0][17:]))
                os.close(fd)
            read = time.perf_counter() - t0
            return read + make_nodes_and_links(nodes_fd, links_fd, minors, simulated.CAPS_MAJOR)
        finally:
            os.close(nodes_fd)
            os.close(links_fd)

    base_t, own = interleaved(modprobe, sync, args.runs)
    rows = Rows("bench_sync inner")
    rows.add(f"`capctl sync` creating {len(files)} nodes and `/dev/char` links, as a process "
             f"(capctl's launcher) vs nvidia-modprobe {args.nvidia_modprobe_version} "
             f"(`-f` x {len(files)}, {PER_EXEC} per run, {len(batches)} runs), tmpfs",
             base_t, own, goal="<= 0.5x", ratio=True, limit=0.5)
    # Where the process's time goes: the library's own work in-process (same nodes, no start,
    # no imports, no output), and the interpreter's floor.
    base_t, own = interleaved(modprobe, library, args.runs)
    rows.add("(cause) the same sync in-process (`sync_host`, no start, imports or output) vs "
             "nvidia-modprobe", base_t, own, goal="(the work alone)", ratio=True)
    base_t, own = interleaved(modprobe, floor, args.runs)
    rows.add("(cause) `python -I -c pass` vs nvidia-modprobe", base_t, own,
             goal="(the start alone)", ratio=True)
    base_t, own = interleaved(modprobe, bare, args.runs)
    rows.add(f"(floor) the bare system calls, in-process: open + read + close of the {len(files)} "
             "proc files, mknod of each node, symlink of each link, vs nvidia-modprobe",
             base_t, own, goal="(no sync is faster)", ratio=True)
    rows.print()


# --- 2: the library, in-process ---------------------------------------------------------------


def library_rows(rows: Rows, runs: int) -> None:
    from capctl.devfs import sync
    from capctl.driver import procfs
    from capctl.host import Host

    base = Path(tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    try:
        raw: list[float] = []
        first: list[float] = []
        again: list[float] = []
        bare_first: list[float] = []
        bare_again: list[float] = []
        minors: list[int] = []
        for i in range(runs):
            root = base / f"r{i}"
            simulated.build(root, dev_nodes=False)
            host = Host(root=root)
            minors = [c.minor for c in procfs.load(host).table]
            raw.append(raw_mknod(base / f"raw{i}", minors, simulated.CAPS_MAJOR))
            for out in (first, again):
                t0 = time.perf_counter()
                state = procfs.load(host)
                sync.apply(host, state, sync.plan(state, everything=True))
                out.append(time.perf_counter() - t0)
            (base / f"bare{i}").mkdir()
            b1, b2 = bare_syscalls(base / f"bare{i}", minors, simulated.CAPS_MAJOR)
            bare_first.append(b1)
            bare_again.append(b2)
        n = len(minors)
        rows.add(f"library `sync --all` ({n} nodes and links), first run, in-process vs a raw "
                 "`os.mknod` loop", raw, first, goal="<= 2x", ratio=True, limit=2.0)
        rows.add("bare `mknod` + `symlink` loops (what a first run cannot beat) vs the raw "
                 "`os.mknod` loop", raw, bare_first, goal="(floor)", ratio=True)
        rows.add("library `sync --all`, nothing to do, vs its first run", first, again,
                 goal="<= 0.33x", ratio=True, limit=1 / 3)
        rows.add("bare `lstat` + `readlink` loops vs bare `mknod` + `symlink` loops",
                 bare_first, bare_again, goal="(floor)", ratio=True)
    finally:
        shutil.rmtree(base)


def raw_mknod(dirpath: Path, minors: list[int], major: int) -> float:
    dirpath.mkdir()
    d = str(dirpath)
    t0 = time.perf_counter()
    for m in minors:
        os.mknod(f"{d}/nvidia-cap{m}", 0o020444, os.makedev(major, m))
    return time.perf_counter() - t0


def open_node_dirs(dev: Path) -> tuple[int, int]:
    """Descriptors of ``dev/nvidia-caps`` and ``dev/char``, made if missing."""
    for name in ("nvidia-caps", "char"):
        (dev / name).mkdir(parents=True, exist_ok=True)
    return (os.open(dev / "nvidia-caps", os.O_RDONLY | os.O_DIRECTORY),
            os.open(dev / "char", os.O_RDONLY | os.O_DIRECTORY))


def make_nodes_and_links(nodes_fd: int, links_fd: int, minors: list[int], major: int) -> float:
    """Seconds to ``mknod`` each node and ``symlink`` its ``/dev/char`` link, bare (the names
    are made first, untimed)."""
    names = [f"nvidia-cap{m}" for m in minors]
    links = [b"%d:%d" % (major, m) for m in minors]
    targets = [b"../nvidia-caps/nvidia-cap%d" % m for m in minors]
    t0 = time.perf_counter()
    for name, m in zip(names, minors, strict=True):
        os.mknod(name, 0o020444, os.makedev(major, m), dir_fd=nodes_fd)
    for link, target in zip(links, targets, strict=True):
        os.symlink(target, link, dir_fd=links_fd)
    return time.perf_counter() - t0


def bare_syscalls(base: Path, minors: list[int], major: int) -> tuple[float, float]:
    """Seconds for the first run's mknod+symlink and the re-run's lstat+readlink, bare."""
    nodes_fd, links_fd = open_node_dirs(base)
    names = [f"nvidia-cap{m}" for m in minors]
    links = [b"%d:%d" % (major, m) for m in minors]
    try:
        first = make_nodes_and_links(nodes_fd, links_fd, minors, major)
        t0 = time.perf_counter()
        for name in names:
            os.lstat(name, dir_fd=nodes_fd)
        for link in links:
            os.readlink(link, dir_fd=links_fd)
        return first, time.perf_counter() - t0
    finally:
        os.close(nodes_fd)
        os.close(links_fd)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--python", default=sys.executable,
                    help="the capctl installation to measure (its interpreter)")
    ap.add_argument("--nvidia-modprobe-src", default=NVIDIA_MODPROBE_SRC,
                    help="where to git clone nvidia-modprobe from (a URL or a local clone)")
    ap.add_argument("--inner", help=argparse.SUPPRESS)
    ap.add_argument("--nvidia-modprobe", help=argparse.SUPPRESS)
    ap.add_argument("--nvidia-modprobe-version", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_sync needs root")
    if args.inner:
        inner(args)
        return
    rows = Rows(f"bench_sync ({args.python}, {args.runs} runs each, interleaved)")
    process_rows(rows, args)
    library_rows(rows, args.runs)
    rows.print()


if __name__ == "__main__":
    main()

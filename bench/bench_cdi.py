"""Benchmark: capctl's CDI spec beside the layout NVIDIA's toolkit writes for the same devices,
in bytes and in what a podman container start pays; and what keeping it current costs idle.

1. **Bytes.**  ``capctl cdi generate`` of the simulated 8-GPU host (21 MIG devices) beside
   :func:`toolkit_layout`, the layout ``nvidia-ctk cdi generate`` (1.19 and later) writes for
   the same devices and names, built here from the same topology snapshot, the same driver
   tables and the host nodes.  Goal: capctl's spec at most 1.1x the toolkit layout's bytes.
   Both under a driver root (``--root`` a simulated root: nodes carry ``hostPath``) and as
   ``--root /`` writes them (the same specs less ``hostPath``), both as compact JSON.
2. **podman start.**  ``podman run --rm`` of a busybox ``true`` with ``--device
   capctl.io/mig=<MIG uuid>``, with capctl's spec against the same run with the toolkit
   layout's spec, interleaved in one run, median of ``--runs`` each (>= 10).  Goal: at most
   1.05x.  Beside it, for information: the start with no device at all, and with the
   management spec installed too (``[cdi] management = true``).  One spec of the kind is in
   ``/etc/cdi`` at a time (two with the same names would conflict), put there (atomically,
   as capctl writes) before each run, outside the timed region, and removed afterwards.
   cgroup v1 by default (``--cgroup v2``: a private cgroup2 mount).
3. ``capctl watch --cdi-output`` idle: its CPU time (utime + stime from ``/proc/PID/stat``)
   over ``--idle`` seconds, after start-up, as a share of one core.  Goal: below 0.1 %.

    python -m bench.bench_cdi [--runs N] [--idle SECONDS] [--cgroup v1|v2]

Needs root, podman 4.3+, runc, busybox-static and unshare(1).  Prints Markdown rows
(:mod:`bench.report`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.report import Rows, interleaved
from capctl import simulated
from tests.support.podman import CDI_DIR, PodmanHarness

REPO = Path(__file__).resolve().parents[1]
TRUE = ["/bin/busybox", "true"]
KIND = "capctl.io/mig"


def capctl(root: Path, *args: str) -> bytes:
    return subprocess.run([sys.executable, "-m", "capctl", "--root", str(root), "--topology",
                           str(root / "topology.json"), "--config", str(root / "none.toml"),
                           *args], check=True, capture_output=True).stdout


def dumps(spec: dict[str, Any]) -> bytes:
    """Compact JSON, as capctl writes its specs: the comparison is of layouts, not of
    formatting (nvidia-ctk itself writes YAML or indented JSON)."""
    return (json.dumps(spec, separators=(",", ":")) + "\n").encode()


def _toolkit_node(root: Path, path: str, path_only: bool) -> dict[str, Any]:
    """One node as the toolkit writes it (internal/edits/device.go ``toSpec`` and
    ``fromPathOrDefault``): ``hostPath`` only when it differs from ``path``; since 1.19, from
    the host node, ``major``, ``minor``, ``fileMode`` (if non-zero) and ``permissions`` "rwm"
    (and a ``gid``, none here: the nodes are root's); no ``type``."""
    host_path = str(root) + path if str(root) != "/" else path
    node: dict[str, Any] = {"path": path}
    if host_path != path:
        node["hostPath"] = host_path
    if path_only:
        return node
    st = os.lstat(host_path)
    node.update(major=os.major(st.st_rdev), minor=os.minor(st.st_rdev))
    if stat.S_IMODE(st.st_mode):
        node["fileMode"] = stat.S_IMODE(st.st_mode)
    node["permissions"] = "rwm"
    return node


def toolkit_layout(root: Path, *, path_only: bool = False) -> dict[str, Any]:
    """The toolkit's layout for the simulated host: its control and UVM nodes once, in the
    spec-wide ``containerEdits`` (pkg/nvcdi/transform/simplify.go); per MIG device the parent
    GPU node plus the GI and CI capability nodes, per GPU its node, ``all`` every one of them
    (pkg/nvcdi/mig-device-nvml.go, full-gpu-nvml.go); each device by index and by UUID, the
    default ``--device-name-strategy``.  Written from the topology snapshot, the driver's
    ``mig-minors`` and the host nodes, without capctl's code.  ``path_only``: toolkit 1.18
    and earlier, nodes with ``path`` (and ``hostPath``) alone."""
    topo = json.loads((root / "topology.json").read_text())
    minors = dict(line.split() for line in
                  (root / "proc/driver/nvidia-caps/mig-minors").read_text().splitlines())

    def node(path: str) -> dict[str, Any]:
        return _toolkit_node(root, path, path_only)

    def cap(name: str) -> dict[str, Any]:
        return node(f"/dev/nvidia-caps/nvidia-cap{minors[name]}")

    devices: list[dict[str, Any]] = []
    every: list[dict[str, Any]] = []

    def add(names: list[str], nodes: list[dict[str, Any]]) -> None:
        devices.extend({"name": n, "containerEdits": {"deviceNodes": nodes}} for n in names)
        every.extend(x for x in nodes if x not in every)

    gpu_nodes = {g["index"]: node(f"/dev/nvidia{g['minor']}") for g in topo["gpus"]}
    for g in topo["gpus"]:
        for m in g["mig_devices"]:
            gi = f"gpu{g['minor']}/gi{m['gi']}"
            add([m["uuid"], f"{g['index']}:{m['index']}"],
                [gpu_nodes[g["index"]], cap(f"{gi}/access"), cap(f"{gi}/ci{m['ci']}/access")])
    for g in topo["gpus"]:
        add([g["uuid"], str(g["index"])], [gpu_nodes[g["index"]]])
    devices.append({"name": "all", "containerEdits": {"deviceNodes": every}})
    common = [node(p) for p in ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools")
              if os.path.lexists(str(root) + p)]
    # The lowest version for names starting with a digit and hostPath (the toolkit asks the
    # CDI library's MinimumRequiredVersion).
    return {"cdiVersion": "0.5.0", "kind": KIND, "containerEdits": {"deviceNodes": common},
            "devices": devices}


def without_host_path(data: bytes) -> bytes:
    """The same spec as ``--root /`` writes it: every node without ``hostPath``."""
    spec = json.loads(data)
    for edits in (spec.get("containerEdits", {}), *(d["containerEdits"] for d in spec["devices"])):
        for node in edits.get("deviceNodes", []):
            node.pop("hostPath", None)
    return dumps(spec)


def _bytes_row(what: str, toolkit: bytes, own: bytes, goal: str = "",
               limit: float | None = None) -> str:
    ratio = len(own) / len(toolkit)
    if limit is not None and ratio > limit:
        goal = f"{goal}: **missed**"
    return f"| {what} | {len(toolkit)} B | {len(own)} B | {ratio:.2f}x | {goal} |"


def bench_bytes(rows: Rows, root: Path, main: bytes, management: bytes) -> None:
    toolkit = dumps(toolkit_layout(root))
    old = dumps(toolkit_layout(root, path_only=True))
    rows.note(_bytes_row("spec bytes, driver root (`hostPath`): toolkit layout vs capctl",
                         toolkit, main, "<= 1.1x", 1.1))
    rows.note(_bytes_row("spec bytes, `--root /`: toolkit layout vs capctl",
                         without_host_path(toolkit), without_host_path(main), "<= 1.1x", 1.1))
    rows.note(_bytes_row("spec bytes, driver root: toolkit <= 1.18 layout (path only) vs capctl",
                         old, main))
    rows.note(f"| management spec (`mig-config`, `mig-monitor`), only with `[cdi] management = "
              f"true`, driver root | | {len(management)} B | | |")


def bench_podman(rows: Rows, base: Path, root: Path, main: bytes, management: bytes,
                 runs: int, cgroup2: bool) -> None:
    toolkit = dumps(toolkit_layout(root))
    device = simulated.topology()["gpus"][0]["mig_devices"][0]["uuid"]
    cg = "cgroup v2" if cgroup2 else "cgroup v1"
    with PodmanHarness(base, cgroup2=cgroup2) as podman:
        spec = CDI_DIR / f"capctl-bench-{os.getpid()}.json"
        mgmt = CDI_DIR / f"capctl-bench-{os.getpid()}-management.json"
        tmp = CDI_DIR / f".capctl-bench-{os.getpid()}.tmp"
        podman.cdi_specs += [spec, mgmt, tmp]
        CDI_DIR.mkdir(parents=True, exist_ok=True)

        def put(path: Path, data: bytes | None) -> None:
            if data is None:
                path.unlink(missing_ok=True)
                return
            tmp.write_bytes(data)
            os.replace(tmp, path)

        ours = {spec.name, mgmt.name}
        crowded: list[list[str]] = []  # per run that found other spec files: their names

        def start(data: bytes | None, extra_spec: bytes | None = None) -> Callable[[], float]:
            """A timed ``podman run`` with these specs in place (none: no CDI device)."""
            def run() -> float:
                put(spec, data)
                put(mgmt, extra_spec)
                others = _other_specs(ours)
                if others:
                    crowded.append(others)
                extra = [] if data is None else ["--device", f"{KIND}={device}"]
                t0 = time.perf_counter()
                res = podman.run_once(TRUE, extra=extra)
                took = time.perf_counter() - t0
                if res.returncode != 0:
                    also = f" (other CDI specs present: {', '.join(others)})" if others else ""
                    raise SystemExit(f"podman run failed: {res.stderr.strip()}{also}")
                return took
            return run

        start(None)()  # the first runs set up storage
        a, b = interleaved(start(toolkit), start(main), runs)
        rows.add(f"`podman run` one MIG device, {cg}: toolkit-layout spec vs capctl's", a, b,
                 goal="<= 1.05x", ratio=True, limit=1.05)
        a, b = interleaved(start(None), start(main), runs)
        rows.add(f"`podman run`, {cg}: no device vs one MIG device from capctl's spec", a, b)
        a, b = interleaved(start(toolkit), start(main, management), runs)
        rows.add(f"`podman run` one MIG device, {cg}: toolkit-layout spec vs capctl's with "
                 f"the management spec beside it", a, b, ratio=True)
    if crowded:  # podman parsed them too: every figure above is diluted
        rows.note(f"| **other CDI spec files were present** during {len(crowded)} runs "
                  f"({', '.join(sorted({n for c in crowded for n in c}))}): rerun on a quiet "
                  f"machine | | | | |")


def _other_specs(ours: set[str]) -> list[str]:
    """Spec files in podman's CDI directories that are not this bench's."""
    return [str(d / n) for d in (CDI_DIR, Path("/var/run/cdi")) if d.is_dir()
            for n in os.listdir(d) if n.endswith((".json", ".yaml")) and n not in ours]


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)


def bench_idle(rows: Rows, base: Path, seconds: float, poll: float) -> None:
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
    goal = "< 0.1 %" if share < 0.1 else "< 0.1 %: **missed**"
    rows.note(f"| `capctl watch --cdi-output` idle, poll {poll} s | | "
              f"{(c1 - c0) / hz * 1000:.0f} ms CPU in {t1 - t0:.0f} s | {share:.3f} % of a core "
              f"| {goal} |")


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
    rows = Rows("bench_cdi")
    with tempfile.TemporaryDirectory(prefix="capctl-bench-cdi.") as tmp:
        base = Path(tmp)
        root = base / "host"
        simulated.build(root)
        capctl(root, "sync", "--all")
        out = base / "cdi" / "capctl.io-mig.json"
        capctl(root, "cdi", "generate", "--output", str(out), "--management")
        main_spec = out.read_bytes()
        management = Path(str(out).removesuffix(".json") + "-management.json").read_bytes()
        bench_bytes(rows, root, main_spec, management)
        if not args.skip_podman:
            bench_podman(rows, base, root, main_spec, management, args.runs,
                         args.cgroup == "v2")
        if args.idle > 0:
            bench_idle(rows, base, args.idle, args.poll)
    rows.print()


if __name__ == "__main__":
    main()

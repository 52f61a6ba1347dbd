"""Benchmark: what capctl costs one Kubernetes node, as the DaemonSet runs it.

The watcher as deploy/kubernetes starts it (the installed ``capctl`` entry point, ``watch
--cdi-output F --heartbeat H``, default ``--poll``) runs beside its peer without the heartbeat,
each on its own simulated 8-GPU A100 host (``capctl.simulated``) on tmpfs, in the same run:

- **idle**: CPU (``/proc/<pid>/task/*/schedstat``) over a quiet period, and memory (RSS and
  PSS from ``/proc/<pid>/smaps_rollup``) once settled;
- **per MIG reconfiguration**: a MIG instance destroyed, then made again (its capability
  files and the topology snapshot, as the driver and NVML change them), N times: the
  watcher's CPU time per reconfiguration above its idle rate, and the wall time from the
  change to the CDI spec showing it (the poll, the settle time and the sync);
- **probes**: one ``capctl health --ready`` (the readiness and liveness probes' command, a
  whole process) beside the floor of any Python command, ``python3 -c pass``, interleaved.

    python -m bench.bench_fleet [--idle S] [--rounds N] [--probes N]

Needs root only for what the simulated host needs (nothing here makes nodes as another user).
Prints Markdown rows (bench/report.py) for docs/kubernetes.md, "Scale".
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
from pathlib import Path
from typing import Any

from bench.report import Rows, cpu_ns, interleaved, run_timed
from capctl import simulated

REPO = Path(__file__).resolve().parents[1]
CAPCTL = str(Path(sys.executable).parent / "capctl")  # the installed entry point
CAPS = "proc/driver/nvidia/capabilities"


def memory_kib(pid: int) -> tuple[int, int]:
    """RSS and PSS of ``pid`` in KiB."""
    values: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _sep, rest = line.partition(":")
            if key in ("Rss", "Pss"):
                values[key] = int(rest.split()[0])
    return values["Rss"], values["Pss"]


def spec_uuids(path: Path) -> set[str]:
    try:
        return {d["name"] for d in json.loads(path.read_text())["devices"]}
    except (FileNotFoundError, ValueError, KeyError):
        return set()


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.rename(tmp, path)


class Watcher:
    """One ``capctl watch`` on its own simulated host under ``base``."""

    def __init__(self, base: Path, name: str, heartbeat: bool):
        self.dir = base / name
        self.root = self.dir / "root"
        self.topo = simulated.build(self.root, dev_nodes=False)
        self.spec = self.dir / "cdi" / "capctl.io-mig.json"
        config = self.dir / "capctl.toml"
        config.write_text("")
        os.chmod(config, 0o644)
        argv = [CAPCTL, "--root", str(self.root), "--topology", str(self.root / "topology.json"),
                "--config", str(config), "watch", "--cdi-output", str(self.spec)]
        if heartbeat:
            argv += ["--heartbeat", str(self.dir / "heartbeat")]
        self.proc = subprocess.Popen(argv, stderr=subprocess.DEVNULL, cwd=REPO)

    def wait(self, pred: Any, what: str, timeout: float = 30.0) -> float:
        t0 = time.monotonic()
        while not pred():
            if time.monotonic() - t0 > timeout:
                raise SystemExit(f"bench_fleet: {what} not within {timeout:g} s")
            time.sleep(0.005)
        return time.monotonic() - t0

    def reconfigure(self, present: bool) -> float:
        """Destroy (``present`` False) or re-create GPU 1's GI 2: the wall seconds until the
        spec shows it."""
        gpu = self.topo["gpus"][1]
        dev = next(m for m in simulated.topology()["gpus"][1]["mig_devices"] if m["gi"] == 2)
        gi = self.root / CAPS / f"gpu{gpu['minor']}/mig/gi2"
        kept = self.dir / "gi2"
        if present:
            kept.rename(gi)
            gpu["mig_devices"] = [*gpu["mig_devices"], dev]
        else:
            gi.rename(kept)
            gpu["mig_devices"] = [m for m in gpu["mig_devices"] if m["gi"] != 2]
        write_json(self.root / "topology.json", self.topo)
        t0 = time.monotonic()
        self.wait(lambda: (dev["uuid"] in spec_uuids(self.spec)) == present, "the spec")
        return time.monotonic() - t0

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--idle", type=float, default=10.0, help="seconds of idle measurement")
    ap.add_argument("--rounds", type=int, default=10, help="MIG reconfigurations")
    ap.add_argument("--probes", type=int, default=20, help="health probe runs")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    rows = Rows("bench_fleet")
    try:
        peer = Watcher(base, "peer", heartbeat=False)
        node = Watcher(base, "node", heartbeat=True)
        try:
            for w in (peer, node):
                w.wait(lambda w=w: bool(spec_uuids(w.spec)), "the first spec")
            node.wait(lambda: (node.dir / "heartbeat").exists(), "the heartbeat")
            time.sleep(2.0)  # the first syncs' follow-ups
            c0 = {w: cpu_ns(w.proc.pid) for w in (peer, node)}
            t0 = time.monotonic()
            time.sleep(args.idle)
            elapsed = time.monotonic() - t0
            idle = {w: (cpu_ns(w.proc.pid) - c0[w]) / (elapsed * 1e9) for w in (peer, node)}
            mem = {w: memory_kib(w.proc.pid) for w in (peer, node)}

            cpu_ms: list[float] = []
            lag: list[float] = []
            for i in range(args.rounds):
                c, t = cpu_ns(node.proc.pid), time.monotonic()
                lag.append(node.reconfigure(present=i % 2 == 1))
                time.sleep(1.0)  # its follow-up sync, and a poll with nothing new
                spent = (cpu_ns(node.proc.pid) - c) / 1e6
                cpu_ms.append(spent - idle[node] * (time.monotonic() - t) * 1e3)
            if args.rounds % 2 == 1:
                node.reconfigure(present=True)

            hb = str(node.dir / "heartbeat")
            probe_base, probe_own = interleaved(
                lambda: run_timed([sys.executable, "-c", "pass"]),
                lambda: run_timed([CAPCTL, "--config", str(node.dir / "capctl.toml"), "health",
                                   "--heartbeat", hb, "--ready"]),
                runs=args.probes)
        finally:
            for w in (peer, node):
                w.stop()

        rows.note(f"| idle CPU, watch --cdi-output | | {idle[peer] * 100:.3f}% of a core | | |")
        rows.note(f"| idle CPU, + --heartbeat (the DaemonSet's) | {idle[peer] * 100:.3f}% | "
                  f"{idle[node] * 100:.3f}% of a core | "
                  f"{(idle[node] - idle[peer]) * 100:+.3f}% | < 0.1% |")
        rows.note(f"| memory (RSS / PSS), watch --cdi-output --heartbeat | | "
                  f"{mem[node][0] / 1024:.1f} / {mem[node][1] / 1024:.1f} MiB | | < 48 MiB "
                  "(the pod's request) |")
        rows.note(f"| CPU per MIG reconfiguration ({args.rounds}, 8-GPU host) | | "
                  f"{statistics.median(cpu_ms):.1f} ms | | |")
        rows.note(f"| change to CDI spec current (poll 1 s, settle 0.5 s) | | "
                  f"{statistics.median(lag) * 1e3:.0f} ms (max {max(lag) * 1e3:.0f}) | | "
                  "< 30 s (the test's bound) |")
        rows.add("probe: capctl health --ready vs python3 -c pass", probe_base, probe_own)
        rows.print()
    finally:
        shutil.rmtree(base)


if __name__ == "__main__":
    main()

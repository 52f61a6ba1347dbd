"""Benchmark: what the hooks and the CLI cost as installed, beside the interpreter's floor.

Every figure is a whole process started exactly as ``capctl install`` (run from ``--python``'s
installation) writes it, interleaved with the floor ``python -I -c pass`` of the same
interpreter in the same run (``bench/report.py``):

- ``capctl hook`` from the hooks.d definition (``python -I -S -c "<paths>; <pack>; <entry>"``),
  one MIG device of a simulated host, a fresh grant each run: a new child device cgroup (deny
  all) holding a sleeping process in its own mount namespace with a fresh tmpfs at the
  rootfs' ``/dev``, as runc's containers have, a state on stdin naming it; on
  cgroup v1 and on cgroup v2 (a private mount namespace with cgroup2 at ``/sys/fs/cgroup``,
  a runc-like default-deny program the hook extends).  Goal: at most 1.6x the floor;
- the same hook for a container asking for nothing (no goal: the share of the start alone);
- the Docker hook through ``nvidia-container-runtime-hook``, the link ``capctl install
  --docker-hook-link`` makes, for a container asking for nothing (what dockerd runs for every
  container once the link exists).  Goal: at most 1.4x the floor;
- ``capctl --version`` through ``capctl``'s launcher (what ``/usr/local/bin/capctl`` links
  to).  Goal: at most 3x the floor; for scale, pip's console script and ``capctl --help``
  (click and the command table, no command imported).

    python -m bench.bench_hook [--runs N] [--python PATH] [--cgroup v1|v2|both]

Measure a regular install, as users have it: this checkout's editable install makes ``site``
import an import finder at every start, which inflates the floor and not the hook (the hook
runs without ``site``):

    python3 -m venv /tmp/v && /tmp/v/bin/pip install -c constraints.txt .
    python -m bench.bench_hook --python /tmp/v/bin/python

Needs root, cgroup v1 ``devices`` and unshare(1).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from bench.report import Rows, interleaved, run_timed, trusted_tmpdir
from capctl import simulated
from tests.support.bundles import container_sleeper

REPO = Path(__file__).resolve().parent.parent
V1 = Path("/sys/fs/cgroup/devices")
#: Inside the bench's private mount namespace, cgroup2 is mounted here (a v2 host's layout).
V2 = Path("/sys/fs/cgroup")
ENV = {"PATH": "/usr/bin:/bin"}


class Installed:
    """A simulated host and what ``capctl install`` of ``python``'s installation writes."""

    def __init__(self, base: Path, python: str):
        self.base = base
        self.python = python
        self.host = base / "host"
        simulated.build(self.host)
        subprocess.run([python, "-m", "capctl", "--root", str(self.host), "sync"],
                       check=True, capture_output=True, cwd=base)
        self.hooks: dict[str, list[str]] = {}
        config = base / "capctl.toml"
        config.write_text(f'[hook]\nlog_file = "{base}/hook.log"\n\n[grants.config]\n'
                          'users = [{ name = "root", uid = 0 }]\n')
        config.chmod(0o644)
        for name, cfg in (("none", base / "none.toml"), ("config", config)):
            out = base / f"install-{name}"
            # cwd: not this checkout, whose capctl ``python -m`` would find first.
            subprocess.run(
                [python, "-m", "capctl", "--root", str(self.host), "--topology",
                 str(self.host / "topology.json"), "--config", str(cfg), "install",
                 "--hooks-dir", str(out / "hooks.d"), "--launcher-dir", str(out / "libexec"),
                 "--docker-hook-link", str(out / "bin")],
                check=True, capture_output=True, cwd=base)  # fmt: skip
            hook = json.loads((out / "hooks.d/oci-capctl.json").read_text())["hook"]
            assert hook["path"] == hook["args"][0] and "-S" in hook["args"]
            self.hooks[name] = hook["args"]
        self.docker_hook = str(base / "install-none/bin/nvidia-container-runtime-hook")
        self.cli = str(base / "install-none/libexec/capctl")
        self.console = str(Path(python).parent / "capctl")

    def floor(self) -> float:
        return run_timed([self.python, "-I", "-c", "pass"])


def without_pack(args: list[str]) -> list[str]:
    """A hook definition's arguments with its ``-c`` code's start-up pack left out."""
    from capctl import install

    code = args[4]
    setup = install.entry_setup(code)
    assert setup is not None
    paths, pack = install.split_pack(setup)
    assert pack is not None, "the definition loads no start-up pack"
    return [*args[:4], code.replace(setup, paths, 1), *args[5:]]


def bundle_for(base: Path, env: list[str]) -> Path:
    bundle = base / f"bundle-{uuid.uuid4().hex[:8]}"
    (bundle / "rootfs/dev").mkdir(parents=True)
    config = {"ociVersion": "1.0.2", "root": {"path": "rootfs"},
              "process": {"env": env, "capabilities": {"bounding": []}}}
    (bundle / "config.json").write_text(json.dumps(config))
    return bundle


def grant_once(argv: list[str], bundle: Path, version: str,
               run: Callable[[list[str], bytes], None] | None = None) -> float:
    """Seconds of one hook process doing a whole grant in a fresh device cgroup (``run``:
    how to run it instead, untimed)."""
    # capctl-test-: tests.support.cgroups' guard, which attach_deny_all applies (a direct
    # child of the hierarchy, never its root).
    cg = (V1 if version == "v1" else V2) / f"capctl-test-bench-{uuid.uuid4().hex[:8]}"
    cg.mkdir()
    # As runc starts one: a process in its own mount namespace, with a fresh tmpfs at the
    # rootfs' /dev (the hook makes its nodes there, not on the disk under the bundle).
    sleeper = container_sleeper(bundle / "rootfs/dev")
    try:
        (cg / "cgroup.procs").write_text(str(sleeper.pid))
        if version == "v1":
            (cg / "devices.deny").write_text("a")
        else:
            from tests.support.cgroups import attach_deny_all

            attach_deny_all(cg)
        state = json.dumps({"ociVersion": "1.0.2", "id": "bench", "status": "creating",
                            "pid": sleeper.pid, "bundle": str(bundle)}).encode()
        t0 = time.perf_counter()
        if run is not None:
            run(argv, state)
        else:
            res = subprocess.run(argv, input=state, capture_output=True, env=ENV)
            if res.returncode != 0:
                raise SystemExit(f"hook failed: {res.stderr.decode().strip()}")
        dt = time.perf_counter() - t0
        if version == "v1":
            assert "c 238:" in (cg / "devices.list").read_text()
        else:
            from capctl.cgroup.v2 import V2Devices

            assert any(r.major == 238 for r in V2Devices(str(cg)).allowed())
        return dt
    finally:
        sleeper.kill()
        sleeper.wait()
        cg.rmdir()


def nothing_once(argv: list[str], state: bytes) -> float:
    """Seconds of one hook process for a container that asks for no device."""
    t0 = time.perf_counter()
    res = subprocess.run(argv, input=state, capture_output=True, env=ENV)
    dt = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"{argv[0]} failed: {res.stderr.decode().strip()}")
    return dt


def hook_modules(argv: list[str], bundle: Path, version: str) -> list[str]:
    """capctl's modules one whole grant imports (``-X importtime``, not timed)."""
    traced = [argv[0], "-X", "importtime", *argv[1:]]
    out = inst_stderr(traced, bundle, version)
    names = {line.rsplit("|", 1)[1].strip() for line in out.splitlines()
             if line.startswith("import time:") and "|" in line}
    return sorted(n for n in names if n == "capctl" or n.startswith("capctl."))


def inst_stderr(argv: list[str], bundle: Path, version: str) -> str:
    err: list[str] = []

    def run(a: list[str], state: bytes) -> None:
        res = subprocess.run(a, input=state, capture_output=True, env=ENV)
        err.append(res.stderr.decode())

    grant_once(argv, bundle, version, run=run)
    return err[0]


def bench_hooks(rows: Rows, inst: Installed, runs: int, version: str) -> None:
    mig = simulated.topology()["gpus"][0]["mig_devices"][0]["uuid"]
    bundle = bundle_for(inst.base, [f"NVIDIA_VISIBLE_DEVICES={mig}"])
    floor = "`python -I -c pass`"
    for name, label in (("none", ""), ("config", ", with a config file (settings cache)")):
        argv = inst.hooks[name]
        base, own = interleaved(inst.floor, lambda a=argv: grant_once(a, bundle, version), runs)
        rows.add(f"`capctl hook` as installed, one MIG device, cgroup {version}{label} vs "
                 f"{floor}", base, own, goal="<= 1.6x", ratio=True, limit=1.6)
    # Where the hook's time goes: the same hook without its start-up pack, the interpreter
    # without site, then with the hook's modules imported and nothing run.
    args = inst.hooks["none"]
    unpacked = without_pack(args)
    base, own = interleaved(lambda: grant_once(unpacked, bundle, version),
                            lambda: grant_once(args, bundle, version), runs)
    rows.add(f"(cause) `capctl hook`, cgroup {version}: without / with its start-up pack",
             base, own, goal="(the pack's share)")
    python, setup = args[0], args[4].rsplit(";", 2)[0]
    modules = hook_modules(args, bundle, version)
    bare = [python, "-I", "-S", "-c", "pass"]
    base, own = interleaved(inst.floor, lambda: run_timed(bare), runs)
    rows.add(f"(cause) `python -I -S -c pass` vs {floor}", base, own, goal="(floor of -S)",
             ratio=True)
    imports = [python, "-I", "-S", "-c", f"{setup}; import {', '.join(modules)}"]
    base, own = interleaved(inst.floor, lambda: run_timed(imports), runs)
    rows.add(f"(cause) the {len(modules)} capctl modules of one grant (cgroup {version}), "
             f"imported under `-I -S`, nothing run, vs {floor}", base, own,
             goal="(imports alone)", ratio=True)
    if version != "v1":
        return
    sleeper = subprocess.Popen(["sleep", "600"])
    try:
        empty = bundle_for(inst.base, [])
        state = json.dumps({"ociVersion": "1.0.2", "id": "bench", "status": "creating",
                            "pid": sleeper.pid, "bundle": str(empty)}).encode()
        base, own = interleaved(inst.floor, lambda: nothing_once(inst.hooks["none"], state), runs)
        rows.add(f"`capctl hook` as installed, container asking for nothing vs {floor}",
                 base, own, goal="(no goal)", ratio=True)
        docker = [inst.docker_hook, "prestart"]
        base, own = interleaved(inst.floor, lambda: nothing_once(docker, state), runs)
        rows.add("Docker hook as installed (`nvidia-container-runtime-hook` -> launcher), "
                 f"container asking for nothing vs {floor}", base, own, goal="<= 1.4x",
                 ratio=True, limit=1.4)
    finally:
        sleeper.kill()
        sleeper.wait()


def bench_cli(rows: Rows, inst: Installed, runs: int) -> None:
    floor = "`python -I -c pass`"
    for argv, what, goal, limit in (
        ([inst.cli, "--version"], "`capctl --version`, capctl's launcher", "<= 3x", 3.0),
        ([inst.console, "--version"], "`capctl --version`, pip's console script",
         "(no goal)", None),
        ([inst.cli, "--help"], "`capctl --help` (click, the command table), capctl's launcher",
         "(no goal)", None),
    ):
        base, own = interleaved(inst.floor, lambda a=argv: run_timed(a), runs)
        rows.add(f"{what} vs {floor}", base, own, goal=goal, ratio=True, limit=limit)


def run_v2(args: argparse.Namespace) -> list[str]:
    """This benchmark's v2 part, re-run in a private mount namespace with cgroup2 at V2; its
    rows."""
    inner = [sys.executable, "-m", "bench.bench_hook", "--cgroup", "v2-inner",
             "--runs", str(args.runs), "--python", args.python]
    script = 'mount --make-rprivate / && mount -t cgroup2 none /sys/fs/cgroup && exec "$@"'
    res = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", *inner], check=True,
                         cwd=REPO, stdout=subprocess.PIPE, text=True)
    return [line for line in res.stdout.splitlines() if line.startswith("| ")
            and not line.startswith("| what ")]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--python", default=sys.executable,
                    help="the capctl installation to measure (its interpreter): a regular "
                         "install, whose start imports far less than this checkout's")
    ap.add_argument("--cgroup", choices=("v1", "v2", "both", "v2-inner"), default="both")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_hook needs root")
    rows = Rows(f"bench_hook ({args.python}, {args.runs} runs each, interleaved)")
    base = Path(trusted_tmpdir("capctl-bench-"))
    try:
        inst = Installed(base, args.python)
        if args.cgroup in ("v1", "both"):
            bench_hooks(rows, inst, args.runs, "v1")
        if args.cgroup in ("v2", "both"):
            for row in run_v2(args):
                rows.note(row)
        if args.cgroup == "v2-inner":
            bench_hooks(rows, inst, args.runs, "v2")
        else:
            bench_cli(rows, inst, args.runs)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    rows.print()


if __name__ == "__main__":
    main()

"""Benchmark: the start time each client gains from capctl, with and without it in one run.

Each figure is a median over ``--runs`` containers, the variants interleaved, printed as
Markdown rows (``bench/report.py``):

- runc: ``runc run --detach`` without and with the installed hook (goal: at most +10 ms), and
  with a ``/bin/sleep`` createRuntime hook of 0, 5, 12, 20, 30 and 60 ms: what any hook of that
  duration costs a runc start (README, "Benchmarks");
- the runtime wrapper: a container's whole life, ``create``, ``start``, ``state``, ``kill``,
  ``delete``, through plain runc, through the launcher ``capctl install`` writes, and through
  pip's console script ``capctl-runtime`` (goal: at most +15 ms for the launcher); and, for
  the cause, plain runc handed the spec with the wrapper's devices already in it (runc's own
  share) and the interpreter's bare start beside ``/bin/true``;
- podman with the installed hooks.d definition: ``podman run -d``, not annotated / annotated;
- Docker: ``docker run -d`` with the default runtime / ``--runtime capctl``.

The container asks for one MIG device of a simulated host, so capctl does its whole job.
Every capctl program runs from ``--python``'s installation, whose definitions and launcher are
written by its own ``capctl install``: measure a regular install, as users have it, with
``python3 -m venv /tmp/v && /tmp/v/bin/pip install . && python -m bench.bench_runtimes
--python /tmp/v/bin/python``.  Needs root, runc and busybox-static; podman and docker.io are
measured when present.

    python -m bench.bench_runtimes [--runs N] [--python PATH] [--clients runc,wrapper,podman,docker]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.report import Rows, trusted_tmpdir

REPO = Path(__file__).resolve().parent.parent
LIFE = ("create", "start", "state", "kill", "delete")
#: Durations of the ``/bin/sleep`` hooks that show what a hook's own time costs runc.
SLEEPS_MS = (0, 5, 12, 20, 30, 60)
ROWS = Rows("bench_runtimes")


def report(label: str, peer: str, base: list[float], own: str, with_: list[float],
           goal: float | None) -> None:
    what = f"{label}: {peer} / {own} ({len(base)} runs)"
    ROWS.add(what, base, with_, goal="(no goal)" if goal is None else f"<= +{goal:g} ms",
             limit=goal)
    print(ROWS.rows[-1], flush=True)


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


class Setup:
    """A simulated host, a wrapper config and ``capctl install``'s files, from ``python``."""

    def __init__(self, tmp: Path, python: str):
        from tests.test_runtimes_e2e import MIG, Sim, wrapper_config

        self.tmp = tmp
        self.python = python
        self.sim = Sim(tmp)
        self.mig = str(MIG["uuid"])
        self.config = wrapper_config(self.sim, tmp)  # [host] of the sim, [runtime] runc
        self.hooks = tmp / "hooks.d"
        self.daemon_json = tmp / "daemon.json"
        self.launcher = tmp / "libexec/capctl-runtime"
        subprocess.run(
            [python, "-m", "capctl", "--root", str(self.sim.root), "--topology",
             str(self.sim.topology), "--config", str(self.config), "install",
             "--hooks-dir", str(self.hooks), "--docker-config", str(self.daemon_json),
             "--containerd-dir", str(tmp / "containerd"), "--crio-dir", str(tmp / "crio"),
             "--launcher-dir", str(tmp / "libexec")],
            check=True, capture_output=True,
        )  # fmt: skip
        self.hook_def = json.loads((self.hooks / "oci-capctl.json").read_text())["hook"]
        self.console = Path(python).parent / "capctl-runtime"


def bench_runc_hook(s: Setup, runs: int) -> None:
    from tests.support.runc import RuncHarness

    with RuncHarness(s.tmp / "runc-hook") as runc:
        hooks = {"createRuntime": [s.hook_def]}
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(runs):
            for with_hook in (False, True):
                b = runc.bundle(env={"NVIDIA_VISIBLE_DEVICES": s.mig},
                                hooks=hooks if with_hook else None)
                t0 = time.perf_counter()
                ctr = runc.run_detached(b)
                times[with_hook].append(time.perf_counter() - t0)
                runc.delete(ctr)
        report("runc run --detach, hooks.d hook", "without", times[False], "with",
               times[True], 10)


def bench_runc_sleep(s: Setup, runs: int) -> None:
    """``runc run --detach`` with a ``/bin/sleep`` createRuntime hook of each duration, beside
    the same start without a hook, all interleaved: what a hook's own time costs runc."""
    from tests.support.runc import RuncHarness

    sleep = shutil.which("sleep") or "/bin/sleep"
    variants: dict[str, dict[str, list[dict[str, object]]] | None] = {"none": None}
    for ms in SLEEPS_MS:
        variants[f"{ms}"] = {"createRuntime": [
            {"path": sleep, "args": ["sleep", f"{ms / 1000:g}"], "env": ["PATH=/usr/bin:/bin"]}]}
    with RuncHarness(s.tmp / "runc-sleep") as runc:
        times: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(runs):
            for name, hooks in variants.items():
                b = runc.bundle(hooks=hooks)
                t0 = time.perf_counter()
                ctr = runc.run_detached(b)
                times[name].append(time.perf_counter() - t0)
                runc.delete(ctr)
    for ms in SLEEPS_MS:
        report(f"runc run --detach, `/bin/sleep` hook of {ms} ms", "no hook", times["none"],
               "with it", times[f"{ms}"], None)


def life(runc: object, prefix: Sequence[str], bundle: object,
         calls: dict[str, list[float]] | None = None) -> float:
    """create, start, state, kill, delete of one container through *prefix*; seconds (each
    call's also appended to ``calls[verb]``)."""
    from tests.support.runc import Bundle, RuncHarness

    assert isinstance(runc, RuncHarness) and isinstance(bundle, Bundle)
    cid = bundle.path.name
    root = ["--root", str(runc.state_root)]
    log = bundle.path / "runtime.log"
    total = 0.0
    with log.open("w") as out:
        for verb in LIFE:
            args = {"create": ["create", "--bundle", str(bundle.path), cid],
                    "kill": ["kill", cid, "KILL"], "delete": ["delete", "--force", cid]}.get(
                        verb, [verb, cid])
            t0 = time.perf_counter()
            res = subprocess.run([*prefix, *root, *args], stdin=subprocess.DEVNULL,
                                 stdout=out, stderr=out)
            total += time.perf_counter() - t0
            if calls is not None:
                calls.setdefault(verb, []).append(time.perf_counter() - t0)
            if os.environ.get("BENCH_VERBOSE"):
                print(f"  {prefix[0]} {verb}: {(time.perf_counter() - t0) * 1e3:.1f} ms")
            if res.returncode != 0:
                raise SystemExit(f"{' '.join(prefix)} {verb} failed: {log.read_text().strip()}")
    return total


def with_devices(s: Setup, bundle: Path) -> None:
    """Write into ``bundle``'s spec the devices the wrapper's ``create`` would (in-process,
    untimed): what runc is then handed."""
    from capctl.deliver.runtime import main as add_devices

    code = add_devices(str(s.config), s.config.read_bytes(),
                       ["--bundle", str(bundle), bundle.name])
    if code:
        raise SystemExit(f"bench_runtimes: could not add the devices to {bundle}")


def bench_wrapper(s: Setup, runs: int) -> None:
    from tests.support.runc import RuncHarness

    plain = [shutil.which("runc") or "runc"]
    variants = {
        "runc": plain,
        # Plain runc, handed the spec with the devices already in it: runc's own share.
        "runc-devices": plain,
        "launcher": [str(s.launcher), "--capctl-config", str(s.config)],
        "console": [str(s.console), "--capctl-config", str(s.config)],
    }
    with RuncHarness(s.tmp / "runc-wrapper") as runc:
        times: dict[str, list[float]] = {k: [] for k in variants}
        calls: dict[str, dict[str, list[float]]] = {k: {} for k in variants}
        for _ in range(runs):
            for name, prefix in variants.items():
                b = runc.bundle(env={"NVIDIA_VISIBLE_DEVICES": s.mig})
                if name == "runc-devices":
                    with_devices(s, b.path)
                times[name].append(life(runc, prefix, b, calls[name]))
    report("wrapper, create..delete (launcher)", "runc", times["runc"], "launcher",
           times["launcher"], 15)
    for verb in LIFE:  # where the launcher's time goes
        report(f"wrapper, `{verb}` alone (launcher)", "runc", calls["runc"][verb], "launcher",
               calls["launcher"][verb], None)
    # The launcher's create is Python, then runc making the devices it was handed.
    report("(cause) create..delete, runc's own share: plain runc, spec without / with the "
           "wrapper's devices", "runc", times["runc"], "runc with the devices",
           times["runc-devices"], None)
    report("(cause) `create`, Python's share: runc with the devices / the launcher", "runc",
           calls["runc-devices"]["create"], "launcher", calls["launcher"]["create"], None)
    floor = [timed(lambda: subprocess.run([s.python, "-I", "-S", "-c", "pass"], check=True))
             for _ in range(max(runs, 20))]
    no_op = [timed(lambda: subprocess.run(["/bin/true"], check=True))
             for _ in range(max(runs, 20))]
    report("(cause) the interpreter's floor: `/bin/true` / `python -I -S -c pass`", "true",
           no_op, "python", floor, None)
    report("wrapper, create..delete (pip script)", "runc", times["runc"], "console",
           times["console"], 15)
    # Per call, without a container: the start-up alone.
    one: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(max(runs, 20)):
        for name, prefix in variants.items():
            one[name].append(timed(lambda p=prefix: subprocess.run(
                [*p, "--version"], capture_output=True, check=True)))
    report("runtime --version (launcher)", "runc", one["runc"], "launcher", one["launcher"], None)
    report("runtime --version (pip script)", "runc", one["runc"], "console", one["console"], None)



def bench_podman(s: Setup, runs: int) -> None:
    from tests.support.podman import PodmanHarness

    with PodmanHarness(s.tmp, hooks_dir=s.hooks) as podman:
        env = ["--env", f"NVIDIA_VISIBLE_DEVICES={s.mig}"]
        variants = {False: env, True: [*env, "--annotation", "capctl.io/nvidia=true"]}
        times: dict[bool, list[float]] = {False: [], True: []}
        podman.remove(podman.run(extra=env))  # first run: storage set-up, not measured
        for _ in range(runs):
            for hooked, extra in variants.items():
                t0 = time.perf_counter()
                ctr = podman.run(extra=extra)
                times[hooked].append(time.perf_counter() - t0)
                podman.remove(ctr)
        report("podman run -d, hooks.d hook", "without", times[False], "with", times[True], 10)


def bench_docker(s: Setup, runs: int) -> None:
    from tests.support.docker import DockerHarness

    runtimes = json.loads(s.daemon_json.read_text())["runtimes"]
    with DockerHarness(s.tmp, runtimes=runtimes) as docker:
        env = ["-e", f"NVIDIA_VISIBLE_DEVICES={s.mig}"]
        variants = {False: env, True: [*env, "--runtime", "capctl"]}
        times: dict[bool, list[float]] = {False: [], True: []}
        docker.remove(docker.run(extra=env))
        for _ in range(runs):
            for wrapped, extra in variants.items():
                t0 = time.perf_counter()
                ctr = docker.run(extra=extra)
                times[wrapped].append(time.perf_counter() - t0)
                docker.remove(ctr)
        report("docker run -d, --runtime capctl", "runc", times[False], "capctl",
               times[True], 15)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--python", default=sys.executable,
                    help="the capctl installation to measure (its interpreter)")
    ap.add_argument("--clients", default="runc,sleep,wrapper,podman,docker")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_runtimes needs root")
    if not shutil.which("runc"):
        raise SystemExit("bench_runtimes needs runc")
    sys.path.insert(0, str(REPO))
    clients = set(args.clients.split(","))
    tmp = Path(trusted_tmpdir("capctl-bench-rt-"))
    try:
        s = Setup(tmp, args.python)
        print(f"capctl from {args.python}; medians of {args.runs}", flush=True)
        if "runc" in clients:
            bench_runc_hook(s, args.runs)
        if "sleep" in clients:
            bench_runc_sleep(s, args.runs)
        if "wrapper" in clients:
            bench_wrapper(s, args.runs)
        if "podman" in clients:
            if shutil.which("podman"):
                bench_podman(s, args.runs)
            else:
                print("podman missing: not measured")
        if "docker" in clients:
            if shutil.which("dockerd"):
                bench_docker(s, args.runs)
            else:
                print("dockerd missing: not measured")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ROWS.print()


if __name__ == "__main__":
    main()

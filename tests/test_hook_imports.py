"""The hook's entry points import only what a container start needs (docs/hook-startup.md).

Each of the three is started as ``capctl install`` writes it, under ``-X importtime``: the hook
(``python -I -S -c "<paths>; <pack>; <entry>"``, a real cgroup v1 grant with nodes made, and
through runc on v2), the Docker hook's launcher (``#!python -IS``) and the runtime wrapper's
launcher (``create``), each with a start-up pack (:mod:`capctl.modpack`), which must hold every
capctl module they import.  Every module one adds must be capctl's own or on the short list
below: ``re``, ``enum``, ``pathlib``, ``json``, ``contextlib``, ``collections``, ``typing`` and
the like cost the hook most of its time budget (see ``bench/bench_hook.py``).  A structural
check, not a timing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from capctl import install, modpack, simulated
from tests.support.bundles import make_bundle, stand_in_container
from tests.support.cgroups import rules_text
from tests.support.hostcg import LAYOUT
from tests.support.runc import RuncHarness

from .conftest import needs_root, needs_runc

#: What ``site`` imports in a regular install (the interpreter floor pays for these too).
SITE = frozenset({
    "site", "_sitebuiltins", "os", "os.path", "posixpath", "genericpath", "stat", "_stat",
    "_collections_abc", "_distutils_hack", "sitecustomize", "encodings.latin_1",
})
#: The standard modules the hook may import: C modules and small pure ones.
HOOK_STDLIB = frozenset({"__future__", "errno", "fcntl", "gc", "syslog", "_json", "_operator"})

ENV = {"PATH": "/usr/bin:/bin"}


def _importtime(code: str, argv: list[str], stdin: bytes) -> set[str]:
    return _importtime_of([sys.executable, "-I", "-S", "-X", "importtime", "-c", code, *argv],
                          stdin)


def _importtime_of(argv: list[str], stdin: bytes) -> set[str]:
    res = subprocess.run(argv, input=stdin, capture_output=True, env=ENV)
    err = res.stderr.decode()
    assert res.returncode == 0, err[-2000:]
    return {
        line.rsplit("|", 1)[1].strip()
        for line in err.splitlines()
        if line.startswith("import time:") and "|" in line
    } - {"imported package"}  # the header line


@pytest.fixture(scope="module")
def pack(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A start-up pack of the capctl under test, as ``capctl install`` writes it."""
    path = tmp_path_factory.mktemp("libexec") / install.PACK
    path.write_bytes(modpack.build())
    path.chmod(0o644)
    return str(path)


def hook_args(pack: str) -> list[str]:
    """The interpreter's arguments of the hook definition ``capctl install`` writes."""
    return install.interpreter_args(install.import_paths(), pack=pack)


#: What every entry point imports before its pack is in use.
BEFORE_PACK = frozenset({"capctl", "capctl.modpack"})


def unpacked(mods: set[str]) -> list[str]:
    """capctl's modules among ``mods`` that the start-up pack does not hold."""
    return sorted(m for m in mods if m.split(".")[0] == "capctl"
                  and m not in BEFORE_PACK and m not in modpack.MODULES)


def imported(argv: list[str], pack: str, stdin: bytes = b"") -> set[str]:
    """Modules a hook run adds to the interpreter's start, started as ``capctl install``'s
    definitions start it (``-I -S``, capctl's paths, the pack)."""
    args = hook_args(pack)
    assert args[:3] == ["-I", "-S", "-c"]
    return (_importtime_of([sys.executable, "-X", "importtime", *args, *argv], stdin)
            - _importtime("pass", [], b""))


def not_allowed(modules: set[str]) -> list[str]:
    return sorted(
        m for m in modules if m != "capctl" and not m.startswith("capctl.")
        and m not in SITE | HOOK_STDLIB
    )


def run_hook(sim_root: Path, tmp_path: Path, config: Path, env: list[str], pack: str,
             ) -> set[str]:
    shutil.rmtree(tmp_path / "bundle", ignore_errors=True)
    bundle = make_bundle(tmp_path, env, dev=True)
    with stand_in_container(bundle, "imports") as (cg, state):
        mods = imported(
            ["--root", str(sim_root), "--topology", str(sim_root / "topology.json"),
             "--config", str(config), "hook"],
            pack, json.dumps(state).encode(),
        )
        if env:
            assert "c 238:" in rules_text(cg)  # it did the whole job
            caps = Path(f"/proc/{state['pid']}/root{bundle}/rootfs/dev/nvidia-caps")
            assert caps.is_dir()  # in the container's own /dev, not the host directory
            assert not (bundle / "rootfs/dev/nvidia-caps").exists()
    assert unpacked(mods) == []
    return mods


#: The stand-in container's device cgroup: v1 where the host has it, else cgroup2.
ON_V1 = LAYOUT.v1_devices is not None
BACKEND, OTHER_BACKEND = ("capctl.cgroup.v1", "capctl.cgroup.v2")[:: 1 if ON_V1 else -1]


def outside(mods: set[str]) -> list[str]:
    """:func:`not_allowed`, with cgroup2's few extra modules allowed where it is the backend."""
    return [m for m in not_allowed(mods) if ON_V1 or m not in V2_STDLIB]


@needs_root
def test_hook_imports_only_what_it_uses(sim_root: Path, tmp_path: Path, pack: str) -> None:
    mig = simulated.topology()["gpus"][0]["mig_devices"][0]["uuid"]
    mods = run_hook(sim_root, tmp_path, tmp_path / "none.toml", [f"NVIDIA_VISIBLE_DEVICES={mig}"],
                    pack)
    assert {"capctl.deliver.hook", "capctl.request.resolve", BACKEND} <= mods
    assert outside(mods) == []
    assert not {"capctl.cli", "capctl.devfs.sync", "capctl.request.nvml", OTHER_BACKEND} & mods
    assert "capctl.devfs.nodes" not in mods  # file_kind is safefs's


@needs_root
def test_hook_with_config_file_parses_it_once(sim_root: Path, tmp_path: Path, pack: str) -> None:
    """The first run parses the config (tomllib); later runs read the settings cache."""
    config = tmp_path / "capctl.toml"
    config.write_text(f'[hook]\nlog_file = "{tmp_path}/hook.log"\n')
    config.chmod(0o644)
    mig = simulated.topology()["gpus"][0]["mig_devices"][0]["uuid"]
    env = [f"NVIDIA_VISIBLE_DEVICES={mig}"]
    first = run_hook(sim_root, tmp_path, config, env, pack)
    assert "tomllib" in first
    extra = set(outside(first))
    assert all(m.startswith("tomllib") or m in TOMLLIB_DEPS for m in extra), extra
    second = run_hook(sim_root, tmp_path, config, env, pack)
    assert outside(second) == []
    assert (tmp_path / "hook.log").read_text().count("devices MIG-") == 2


#: What ``tomllib`` itself imports (only when a config file exists).
TOMLLIB_DEPS = frozenset({
    "re", "re._casefix", "re._compiler", "re._constants", "re._parser", "_sre", "enum",
    "functools", "_functools", "collections", "_collections", "itertools", "keyword",
    "operator", "reprlib", "types", "copyreg", "string", "_string", "typing", "_typing",
    "collections.abc", "contextlib", "datetime", "_datetime", "math", "warnings",
})


@needs_root
def test_no_request_imports_little(sim_root: Path, tmp_path: Path, pack: str) -> None:
    mods = run_hook(sim_root, tmp_path, tmp_path / "none.toml", [], pack)
    assert outside(mods) == []
    assert not {"capctl.request.resolve", "capctl.driver.procfs", "capctl.cgroup"} & mods


def test_allow_list_catches_heavy_modules() -> None:
    assert not_allowed({"capctl.deliver.hook", "os", "_json", "re", "pathlib", "enum", "json"}) == [
        "enum", "json", "pathlib", "re"
    ]


#: What the v2 backend may add: _ctypes for bpf(2) (capctl.cgroup.libc), resource for
#: RLIMIT_MEMLOCK (kernels before 5.11), _struct for instruction encoding; the ctypes package
#: is listed, but asserted absent below.  Still no re, enum, contextlib, ...
V2_STDLIB = frozenset({
    "ctypes", "_ctypes", "types", "struct", "_struct", "ctypes._endian", "resource",
})


def _parse_importtime(text: str) -> set[str]:
    return {
        line.rsplit("|", 1)[1].strip()
        for line in text.splitlines()
        if line.startswith("import time:") and "|" in line
    } - {"imported package"}


@needs_runc
@pytest.mark.parametrize("stage", ["createRuntime", "prestart"])
def test_hook_imports_on_cgroup_v2(sim_root: Path, tmp_path: Path, stage: str, pack: str,
                                   ) -> None:
    """The same allow-list on cgroup v2, with the hook run by runc as a real hook (the v2
    grant extends the container's eBPF program), in a private cgroup2 mount namespace."""
    out = tmp_path / "importtime.txt"
    mig = simulated.topology()["gpus"][0]["mig_devices"][0]["uuid"]
    hook_argv = [
        sys.executable, "-X", "importtime", *hook_args(pack),
        "--root", str(sim_root), "--topology", str(sim_root / "topology.json"),
        "--config", str(tmp_path / "none.toml"), "hook",
    ]
    script = 'exec "$@" 2>"$OUT"'
    hook = {"path": "/bin/sh", "args": ["sh", "-c", script, "sh", *hook_argv],
            "env": [f"OUT={out}", "PATH=/usr/bin:/bin"]}
    with RuncHarness(tmp_path / "runc", cgroup2=True) as runc:
        bundle = runc.bundle(env={"NVIDIA_VISIBLE_DEVICES": mig}, hooks={stage: [hook]})
        ctr = runc.run_detached(bundle)
        assert runc.probe(ctr, f"/dev/nvidia-caps/nvidia-cap{simulated.minor_of('gpu0/gi7/access')}") \
            == "ENXIO"
    mods = _parse_importtime(out.read_text()) - _importtime("pass", [], b"")
    assert {"capctl.deliver.hook", "capctl.cgroup.v2", "capctl.cgroup.bpf"} <= mods
    assert sorted(m for m in not_allowed(mods) if m not in V2_STDLIB) == []
    assert unpacked(mods) == []
    assert not {"capctl.cli", "capctl.devfs.sync", "capctl.cgroup.v1"} & mods
    # bpf(2) and statfs through ctypes' C core (capctl.cgroup.libc), not the ctypes package
    # (about 1 ms); the emulator only rebuilds unreadable programs; resource: kernels < 5.11.
    assert not {"ctypes", "ctypes._endian", "capctl.devfs.nodes", "capctl.cgroup.emulator"} & mods


# --- the runtime wrapper's create: the same contract, through capctl install's launcher ------------


def wrapper_create(sim_root: Path, tmp_path: Path, config: Path, trusted: Path, pack: str,
                   ) -> set[str]:
    """Modules one ``create`` through the launcher adds to the interpreter's start.

    The launcher is :func:`capctl.install.launcher_text`'s, for an interpreter that is this
    one under ``-X importtime`` (it runs ``python -IS -c ENTRY``) and a runtime that only
    checks that the spec it gets has the container's device."""
    mig = simulated.topology()["gpus"][0]["mig_devices"][0]["uuid"]
    bundle = tmp_path / "bundle"
    shutil.rmtree(bundle, ignore_errors=True)
    (bundle / "rootfs").mkdir(parents=True)
    doc = {"ociVersion": "1.0.2", "root": {"path": "rootfs"},
           "process": {"env": [f"NVIDIA_VISIBLE_DEVICES={mig}"]}}
    (bundle / "config.json").write_text(json.dumps(doc))
    python, runtime = tmp_path / "python", trusted / "runtime"
    python.write_text(f'#!/bin/sh\nexec {sys.executable} -X importtime "$@"\n')
    runtime.write_text(f"#!/bin/sh\ngrep -q '\"major\": 238' {bundle}/config.json\n")
    python.chmod(0o755)
    runtime.chmod(0o755)
    launcher = tmp_path / "capctl-runtime"
    launcher.write_text(install.launcher_text(str(python), install.import_paths(), str(runtime),
                                           str(config), pack))
    launcher.chmod(0o755)
    res = subprocess.run(
        [str(launcher), "--capctl-config", str(config), "create", "--bundle", str(bundle), "c1"],
        capture_output=True, env=ENV,
    )
    err = res.stderr.decode()
    assert res.returncode == 0, err[-2000:]
    mods = {
        line.rsplit("|", 1)[1].strip()
        for line in err.splitlines()
        if line.startswith("import time:") and "|" in line
    } - {"imported package"}
    assert unpacked(mods) == []
    return mods - _importtime("pass", [], b"")


@needs_root
def test_wrapper_create_imports_only_what_it_uses(sim_root: Path, tmp_path: Path,
                                                  trusted_dir: Path, pack: str) -> None:
    """create parses the config once (tomllib), then reads the settings cache: no json, re,
    typing or TOML on the path every container takes."""
    config = tmp_path / "capctl.toml"
    config.write_text(
        f'[hook]\nlog_file = "{tmp_path}/hook.log"\n'
        f'[host]\ndriver_root = "{sim_root}"\ntopology = "{sim_root}/topology.json"\n'
    )
    config.chmod(0o644)
    first = wrapper_create(sim_root, tmp_path, config, trusted_dir, pack)
    assert "tomllib" in first
    extra = set(outside(first))
    assert all(m.startswith("tomllib") or m in TOMLLIB_DEPS for m in extra), extra
    second = wrapper_create(sim_root, tmp_path, config, trusted_dir, pack)
    assert {"capctl.deliver.runtime", "capctl.request.resolve", "capctl._lite.jsondump"} <= second
    assert outside(second) == []
    assert not {"capctl.cli", "capctl.cgroup", "capctl.request.nvml", "json"} & second
    assert (tmp_path / "hook.log").read_text().count("config.json: added c 195:0 rw") == 2


# --- the Docker hook: the same contract, through capctl install's launcher ------------------------


def docker_hook_launcher(tmp_path: Path, pack: str) -> Path:
    """``capctl-docker-hook``'s launcher as ``capctl install`` writes it, for an interpreter
    that is this one under ``-X importtime`` (Linux runs a ``#!`` interpreter that is itself
    a script)."""
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\nexec {sys.executable} -X importtime "$@"\n')
    python.chmod(0o755)
    launcher = tmp_path / "libexec" / install.DOCKER_HOOK_LAUNCHER
    launcher.parent.mkdir()
    launcher.write_text(install.python_launcher_text(
        str(python), install.import_paths(), install.DOCKER_HOOK_LAUNCHER,
        install.DOCKER_HOOK_ENTRY, pack))
    launcher.chmod(0o755)
    return launcher


@needs_root
def test_docker_hook_imports_only_what_it_uses(tmp_path: Path, pack: str) -> None:
    """A container that asks for nothing, as dockerd runs the hook for every ``--gpus``-less
    container once the link exists: only capctl's modules and the short list, no ``re`` (pip's
    console script imports it), no ``site``."""
    launcher = docker_hook_launcher(tmp_path, pack)
    bundle = make_bundle(tmp_path, [], dev=True)
    with stand_in_container(bundle, "docker-imports") as (_cg, state):
        mods = _importtime_of([str(launcher), "prestart"], json.dumps(state).encode())
    mods -= _importtime("pass", [], b"")
    assert "capctl.docker_hook" in mods and "capctl.deliver.hook" in mods
    assert not_allowed(mods) == [] and unpacked(mods) == []
    assert not {"site", "re", "capctl.request.resolve", "capctl.cgroup", "capctl.cli"} & mods

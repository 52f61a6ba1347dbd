"""``capctl sync`` and ``capctl health`` without click (:mod:`capctl.main`,
:mod:`capctl.commands.fast`).

The udev rules and ``capctl-sync.service`` run ``capctl sync`` when the driver loads, and the
DaemonSet's probes run ``capctl health`` every few seconds, so their common command lines skip
click.  Each case here runs a sequence of command lines twice on the same fresh world, once
through the launcher's entry (the fast path) and once through click, and wants the same
output, exit status and nodes from both.  The time is ``bench/bench_sync.py``'s and
``bench/bench_fleet.py``'s.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from capctl import install, simulated
from capctl.main import fast_command
from capctl.watch import heartbeat
from tests.support.hostcg import IS_ROOT

SETUP = install.path_setup(install.import_paths())
#: The launcher's way in (``capctl install``), and a report of ``sys.modules`` on stderr at
#: the end (the fast path ends the process with ``os._exit``: no ``atexit``).
FAST = f"""{SETUP}
import capctl.main as m
fast_exit = m.exit_now
def report(entry):
    def run():
        try:
            entry()
        finally:
            sys.stderr.write("\\nMODULES " + " ".join(sys.modules))
    fast_exit(run)
m.exit_now = report
m.main()
"""
CLICK = f"{SETUP}; from capctl.cli import main; main()"

Parsed = tuple[dict[str, str], list[str], dict[str, str]] | None
COMMAND_LINES: list[tuple[str, str, list[str], Parsed]] = [
    ("sync", "bare", ["sync"], ({}, [], {})),
    ("sync", "flags", ["--root", "/r", "sync", "--all", "-v", "--dry-run", "--verbose"],
     ({"--root": "/r"}, ["--all", "-v", "--dry-run", "--verbose"], {})),
    ("sync", "repeated-flag", ["sync", "-v", "-v"], ({}, ["-v", "-v"], {})),
    ("sync", "json-goes-to-click", ["sync", "--json"], None),
    ("sync", "unknown-flag", ["sync", "--force"], None),
    ("sync", "help", ["sync", "--help"], None),
    ("sync", "combined-short", ["sync", "-vv"], None),
    ("sync", "argument", ["sync", "extra"], None),
    ("sync", "option-after", ["sync", "--root", "/r"], None),
    ("sync", "hook-is-not-sync", ["hook"], None),
    ("sync", "empty-value", ["--config=", "sync"], None),
    ("health", "probe", ["health", "--heartbeat", "/h", "--ready"],
     ({}, ["--ready"], {"--heartbeat": "/h"})),
    ("health", "eq-forms", ["--config=/c", "health", "--max-age=5", "--heartbeat=/h"],
     ({"--config": "/c"}, [], {"--max-age": "5", "--heartbeat": "/h"})),
    ("health", "value-looks-like-a-flag", ["health", "--heartbeat", "--ready"],
     ({}, [], {"--heartbeat": "--ready"})),
    ("health", "repeated-option", ["health", "--heartbeat", "/a", "--heartbeat", "/b"], None),
    ("health", "missing-value", ["health", "--heartbeat"], None),
    ("health", "empty-value", ["health", "--heartbeat="], None),
    ("health", "unknown-option", ["health", "--heartbeat", "/h", "--json"], None),
    ("health", "global-option-after", ["health", "--root", "/r"], None),
]


@pytest.mark.parametrize(("command", "argv", "want"), [c[:1] + c[2:] for c in COMMAND_LINES],
                         ids=[f"{c[0]}-{c[1]}" for c in COMMAND_LINES])
def test_which_command_lines_take_the_fast_path(command: str, argv: list[str],
                                                want: Parsed) -> None:
    assert fast_command(argv, command) == want


# --- the same as click, as processes ----------------------------------------------------------


class World:
    """A simulated root (rebuilt for each of the two runs) and a config beside it."""

    def __init__(self, base: Path):
        self.base = base
        self.root = base / "root"
        self.config = base / "etc/capctl.toml"
        self.env = {"PATH": "/usr/bin:/bin", "COLUMNS": "80"}

    def reset(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)
        simulated.build(self.root, dev_nodes=IS_ROOT)
        self.config.parent.mkdir(parents=True)

    def write_config(self, text: str) -> None:
        self.config.write_text(text)
        self.config.chmod(0o644)

    def run(self, entry: str, argv: list[str]) -> tuple[int, str, str, set[str]]:
        res = subprocess.run([sys.executable, "-I", "-S", "-c", entry, *argv], text=True,
                             capture_output=True, env=self.env, cwd=self.base)
        err, _, modules = res.stderr.partition("\nMODULES ")
        return res.returncode, res.stdout, err, set(modules.split())

    def nodes(self) -> list[tuple[str, int, int, int, int]]:
        """Every node and link under ``dev`` with its mode, owner and device."""
        out = []
        for dirpath, _dirs, files in os.walk(self.root / "dev"):
            for name in files:
                st = os.lstat(os.path.join(dirpath, name))
                out.append((os.path.relpath(os.path.join(dirpath, name), self.root),
                            st.st_mode, st.st_uid, st.st_gid,
                            st.st_rdev if stat.S_ISCHR(st.st_mode) else 0))
        return sorted(out)


Case = Callable[[World], list[list[str]]]


def _plain(w: World) -> list[list[str]]:
    return [["--root", str(w.root), "sync"], ["--root", str(w.root), "sync"],
            ["--root", str(w.root), "sync", "-v"]]


def _dry_then_all(w: World) -> list[list[str]]:
    return [["--root", str(w.root), "sync", "--dry-run"],
            ["--root", str(w.root), "--config", str(w.config), "sync", "--all"],
            ["--root", str(w.root), "sync", "--dry-run", "--all"]]


def _from_env(w: World) -> list[list[str]]:
    w.env |= {"CAPCTL_ROOT": str(w.root), "CAPCTL_CONFIG": str(w.config)}
    return [["sync"], ["--root", str(w.root), "sync"]]


def _empty_env_is_unset(w: World) -> list[list[str]]:
    w.env |= {"CAPCTL_ROOT": "", "CAPCTL_CONFIG": ""}
    return [["--root", str(w.root), "sync"]]


def _host_table(w: World) -> list[list[str]]:
    w.write_config(f'[host]\ndriver_root = "{w.root}"\n')
    return [["--config", str(w.config), "sync"], ["--config", str(w.config), "sync", "-v"]]


def _grants(w: World) -> list[list[str]]:
    w.write_config('[grants.config]\nusers = [{ name = "root", uid = 0 }]\n'
                   '[grants.monitor]\ngroups = [{ name = "root", gid = 0 }]\n')
    return [["--root", str(w.root), "--config", str(w.config), "sync"]]


def _cdi(w: World) -> list[list[str]]:
    w.write_config(f'[cdi]\noutput = "{w.base}/cdi/capctl.json"\n')
    return [["--root", str(w.root), "--topology", str(w.root / "topology.json"), "--config",
             str(w.config), "sync"]]


def _repair(w: World) -> list[list[str]]:
    """A stray node (:func:`_stray`, made before each sequence) removed and listed, a mode
    repaired, then nothing left to do."""
    sync = ["--root", str(w.root), "sync"]
    return [sync, ["--root", str(w.root), "sync", "--dry-run", "-v"], sync]


def _errors(w: World) -> list[list[str]]:
    not_toml = w.base / "etc/bad.toml"
    not_toml.write_text("[grants\n")
    not_toml.chmod(0o644)
    a_file = w.base / "file"
    a_file.write_text("")
    return [["--root", str(w.base / "nowhere"), "sync"],  # no driver: capctl's error
            ["--root", str(w.root), "--config", str(not_toml), "sync"],
            ["--root", str(a_file), "sync"],  # click refuses the value: usage error
            ["--topology", str(w.base), "sync"],
            ["--config", str(w.base), "sync"]]


CASES: dict[str, Case] = {
    "plain": _plain, "dry-then-all": _dry_then_all, "from-env": _from_env,
    "empty-env-is-unset": _empty_env_is_unset, "host-table": _host_table,
    "grants": _grants, "cdi": _cdi, "repair": _repair, "errors": _errors,
}


def _stray(w: World) -> None:
    """For the repair case: a stray node (a minor mig-minors does not list) to remove, and
    the ``config`` node (minor 1) open to all, to repair."""
    if IS_ROOT:
        caps = w.root / "dev/nvidia-caps"
        caps.mkdir(parents=True, exist_ok=True)
        os.mknod(caps / "nvidia-cap9999", 0o600 | stat.S_IFCHR, os.makedev(238, 9999))
        os.mknod(caps / "nvidia-cap1", stat.S_IFCHR, os.makedev(238, 1))
        os.chmod(caps / "nvidia-cap1", 0o666)


@pytest.mark.parametrize("case", sorted(CASES))
def test_fast_sync_prints_and_does_what_click_does(tmp_path: Path, case: str) -> None:
    results = {}
    for name, entry in (("fast", FAST), ("click", CLICK)):
        w = World(tmp_path / "w")
        w.reset()
        if case == "repair":
            _stray(w)
        runs = []
        for argv in CASES[case](w):
            code, out, err, modules = w.run(entry, argv)
            runs.append((argv, code, out, err))
            if name == "fast" and code in (0, 1):
                assert "click" not in modules, argv
        results[name] = (runs, w.nodes())
    fast_runs, fast_nodes = results["fast"]
    click_runs, click_nodes = results["click"]
    assert fast_runs == click_runs
    assert fast_nodes == click_nodes
    if case == "errors":
        codes = [code for _a, code, _o, _e in fast_runs]
        assert codes == [1, 1, 2, 2, 2]
    else:
        assert all(code == 0 for _a, code, _o, _e in fast_runs), fast_runs


def test_a_first_sync_prints_a_summary_and_v_lists_each(tmp_path: Path) -> None:
    w = World(tmp_path / "w")
    w.reset()
    code, out, err, _ = w.run(FAST, ["--root", str(w.root), "sync"])
    created = len(simulated.capability_names())
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[-1] == f"{created} created, 0 repaired, 0 unchanged, 0 skipped"
    assert lines[0].endswith("changed; -v lists each") and len(lines) == 2
    code, out, _err, _ = w.run(FAST, ["--root", str(w.root), "sync", "-v"])
    assert code == 0
    assert sum(line.startswith("unchanged: ") for line in out.splitlines()) >= created


def test_a_reader_that_goes_away_exits_141_silently(tmp_path: Path) -> None:
    w = World(tmp_path / "w")
    w.reset()
    w.run(FAST, ["--root", str(w.root), "sync", "--all"])
    for entry in (FAST, CLICK):
        # -v lists every node and link (8648 lines): far more than a pipe holds, so the
        # write meets a closed pipe.
        proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", entry, "--root", str(w.root),
                                 "sync", "--all", "-v"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=w.env, cwd=w.base)
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline()
        proc.stdout.close()
        err = proc.stderr.read().decode().partition("\nMODULES ")[0]
        assert proc.wait(timeout=60) == 141
        assert "Traceback" not in err and "error" not in err, err


def test_the_fast_path_imports_no_click_pathlib_or_dataclasses(tmp_path: Path) -> None:
    """``re`` is imported: one ``fullmatch`` judges the whole of ``mig-minors``."""
    w = World(tmp_path / "w")
    w.reset()
    code, _out, err, modules = w.run(FAST, ["--root", str(w.root), "--config", str(w.config),
                                            "sync", "--all"])
    assert code == 0, err
    assert "capctl.devfs.sync" in modules
    heavy = {"click", "pathlib", "dataclasses", "contextlib", "typing", "json", "inspect"}
    assert not heavy & modules


# --- health ----------------------------------------------------------------------------------


def _beat(path: Path, *, synced: bool, error: str | None = None) -> None:
    path.write_text(json.dumps({"beat": heartbeat.now(), "synced": synced, "error": error,
                                "pid": 1}))


#: Each case: (how to set up the heartbeat, the command lines, the exit status of each).
HEALTH: dict[str, tuple[Callable[[Path], None], list[list[str]], list[int]]] = {
    "alive-and-ready": (lambda p: _beat(p, synced=True),
                        [["health", "--heartbeat", "{hb}"],
                         ["health", "--heartbeat", "{hb}", "--ready"],
                         ["health", "--heartbeat={hb}", "--max-age=5.5", "--ready"]], [0, 0, 0]),
    "not-in-sync": (lambda p: _beat(p, synced=False, error="sync failed"),
                    [["health", "--heartbeat", "{hb}"],
                     ["health", "--heartbeat", "{hb}", "--ready"]], [0, 1]),
    "no-watcher": (lambda p: None, [["health", "--heartbeat", "{hb}"]], [1]),
    "not-a-heartbeat": (lambda p: p.write_text('{"beat": NaN}'),
                        [["health", "--heartbeat", "{hb}"]], [1]),
    "click-judges": (lambda p: _beat(p, synced=True),
                     [["health", "--heartbeat", "{hb}", "--max-age", "0"],
                      ["health", "--heartbeat", "{hb}", "--max-age", "1e3"],
                      ["health", "--heartbeat", "{hb}", "--max-age", "nan"],
                      ["health", "--max-age", "5"],
                      ["--root", "{hb}", "health", "--heartbeat", "{hb}"]], [2, 0, 0, 2, 2]),
}


@pytest.mark.parametrize("case", sorted(HEALTH))
def test_fast_health_answers_what_click_answers(tmp_path: Path, case: str) -> None:
    setup, lines, codes = HEALTH[case]
    hb = tmp_path / "heartbeat"
    setup(hb)
    w = World(tmp_path / "w")
    w.base.mkdir()
    # A config that does not parse: health judges the heartbeat only, on either path.
    w.env["CAPCTL_CONFIG"] = str(tmp_path / "broken.toml")
    (tmp_path / "broken.toml").write_text("[host\n")
    results = {}
    for name, entry in (("fast", FAST), ("click", CLICK)):
        runs = []
        for line in lines:
            argv = [a.replace("{hb}", str(hb)) for a in line]
            code, out, err, modules = w.run(entry, argv)
            # The beat's age differs between the two runs.
            runs.append((code, re.sub(r"beat [0-9.]+ s ago", "beat N s ago", out), err))
            if name == "fast":  # modules: reported by the fast path only, which ends early
                assert bool(modules and "click" not in modules) == (case != "click-judges"), argv
        results[name] = runs
    assert results["fast"] == results["click"]
    assert [code for code, _o, _e in results["fast"]] == codes


def test_fast_health_imports_no_click_json_or_dataclasses(tmp_path: Path) -> None:
    hb = tmp_path / "heartbeat"
    _beat(hb, synced=True)
    w = World(tmp_path / "w")
    w.base.mkdir()
    code, out, err, modules = w.run(FAST, ["health", "--heartbeat", str(hb), "--ready"])
    assert (code, err) == (0, "") and out.startswith("alive, beat ")
    assert "capctl.watch.heartbeat" in modules
    assert not {"click", "json", "dataclasses", "re", "pathlib", "tomllib"} & modules

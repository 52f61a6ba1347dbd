"""One place for the host: every entry point takes the driver root and topology from options,
then ``CAPCTL_*`` (never for the hook), then ``[host]`` of the config, then the defaults; and
``doctor`` says which, and blames the configured root, not the module, when it has no driver."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from capctl import simulated
from capctl.cli import cli
from capctl.host import Host, with_host_table
from tests.support.bundles import make_bundle, stand_in_container
from tests.support.cgroups import rules_text
from tests.support.hostcg import needs


def _config(tmp_path: Path, text: str) -> Path:
    config = tmp_path / "capctl.toml"
    config.write_text(text)
    config.chmod(0o644)
    return config


def test_with_host_table_fills_only_defaults() -> None:
    given = Host("/opt", "/c.toml", None, root_from="--root")
    got = with_host_table(given, "/run/nvidia/driver", "/t.json")
    assert (got.root, got.root_from) == ("/opt", "--root")
    assert (got.topology, got.topology_from) == ("/t.json", "[host] in /c.toml")
    assert with_host_table(Host(config="/c.toml"), None, None) == Host(config="/c.toml")


def test_the_cli_reads_host_from_the_config(sim_root: Path, tmp_path: Path) -> None:
    """With only [host] set, resolve, list and doctor work on the configured root (they read
    / before and said "nvidia driver not loaded")."""
    config = _config(tmp_path, f'[host]\ndriver_root = "{sim_root}"\n'
                               f'topology = "{sim_root}/topology.json"\n')
    mig = simulated.topology()["gpus"][0]["mig_devices"][0]["uuid"]
    res = CliRunner().invoke(cli, ["--config", str(config), "resolve", "--json", mig])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)[0]["uuid"] == mig
    res = CliRunner().invoke(cli, ["--config", str(config), "list", "--json"])
    assert res.exit_code == 0 and len(json.loads(res.output)) == 4324
    res = CliRunner().invoke(cli, ["--config", str(config), "doctor", "--json"])
    report = json.loads(res.output)
    assert report["host"][0]["what"] == (
        f"driver root {sim_root} ([host] in {config}), topology {sim_root}/topology.json "
        f"([host] in {config})")
    assert all(f["level"] != "fail" for f in report["driver"]), report["driver"]


def test_options_and_environment_beat_the_config(sim_root: Path, tmp_path: Path) -> None:
    config = _config(tmp_path, '[host]\ndriver_root = "/nonexistent"\n')
    res = CliRunner().invoke(cli, ["--root", str(sim_root), "--config", str(config),
                                   "doctor", "--json"])
    assert json.loads(res.output)["host"][0]["what"].startswith(
        f"driver root {sim_root} (--root), topology NVML (default)")
    res = CliRunner().invoke(cli, ["--config", str(config), "doctor", "--json"],
                             env={"CAPCTL_ROOT": str(sim_root)})
    assert json.loads(res.output)["host"][0]["what"].startswith(
        f"driver root {sim_root} (CAPCTL_ROOT)")


def test_doctor_blames_the_configured_root(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    (empty / "proc").mkdir(parents=True)
    (empty / "proc/devices").write_text("Character devices:\n  1 mem\n\nBlock devices:\n")
    config = _config(tmp_path, f'[host]\ndriver_root = "{empty}"\n')
    res = CliRunner().invoke(cli, ["--config", str(config), "doctor", "--json"])
    (fail,) = [f for f in json.loads(res.output)["driver"] if f["level"] == "fail"]
    assert f"under the driver root {empty} ([host] in {config})" in fail["what"]
    assert "modprobe" not in fail["fix"] and f"check the driver root {empty}" in fail["fix"]


def test_install_dry_run_shows_what_it_assumed(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["--config", str(tmp_path / "none.toml"), "install",
                                   "--dry-run", "--hooks-dir", str(tmp_path / "hooks")])
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[0] == (
        "host: driver root / (default), topology NVML (default)")


def test_install_bakes_only_the_command_lines_host(sim_root: Path, tmp_path: Path) -> None:
    """[host] stays the one place: the hook reads it at every start, so install does not copy
    it into the hooks.d arguments (a later change needs no reinstall)."""
    config = _config(tmp_path, f'[host]\ndriver_root = "{sim_root}"\n')
    hooks = tmp_path / "hooks"
    res = CliRunner().invoke(cli, ["--config", str(config), "install", "--hooks-dir", str(hooks)])
    assert res.exit_code == 0, res.output
    (definition,) = hooks.iterdir()
    args = json.loads(definition.read_text())["hook"]["args"]
    assert "--root" not in args and "--config" in args
    res = CliRunner().invoke(cli, ["--root", str(sim_root), "--config", str(config), "install",
                                   "--hooks-dir", str(hooks)])
    args = json.loads(definition.read_text())["hook"]["args"]
    assert args[args.index("--root") + 1] == str(sim_root)


@needs()
def test_the_hook_takes_host_from_the_config(sim_root: Path, tmp_path: Path) -> None:
    """``capctl --config C hook`` with no --root, run as runtimes run it: the hook grants on
    [host]'s simulated root; a CAPCTL_ROOT in its environment (a runtime may pass the
    container's) changes nothing."""
    from tests.support.source import HOOK_ARGS

    config = _config(tmp_path, f'[host]\ndriver_root = "{sim_root}"\n'
                               f'topology = "{sim_root}/topology.json"\n')
    mig = simulated.topology()["gpus"][0]["mig_devices"][0]["uuid"]
    bundle = make_bundle(tmp_path, [f"NVIDIA_VISIBLE_DEVICES={mig}"], dev=True)
    with stand_in_container(bundle) as (cg, state):
        res = subprocess.run(
            [sys.executable, *HOOK_ARGS, "--config", str(config), "hook"],
            input=json.dumps(state), capture_output=True, text=True,
            env={"PATH": "/usr/bin:/bin", "CAPCTL_ROOT": "/nonexistent"})
        assert res.returncode == 0, res.stderr
        assert f"c 238:{simulated.minor_of('gpu0/gi7/access')} r" in rules_text(cg)

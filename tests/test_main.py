"""The fast ``capctl ... hook`` entry (:mod:`capctl.main`): options from arguments only.

The hook runs on every container start with whatever environment the runtime hands it, so
neither the fast path nor the click path may take ``--root``/``--topology``/``--config`` from
``CAPCTL_*`` variables.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from capctl import main as capctl_main
from capctl import simulated
from capctl.host import DEFAULT_CONFIG, Host
from tests.support.bundles import make_bundle
from tests.support.source import HOOK_ARGS

REPO = Path(__file__).resolve().parent.parent

HOOK_OPTIONS: list[tuple[str, list[str], dict[str, str] | None]] = [
    ("bare", ["hook"], {}),
    ("root", ["--root", "/r", "hook"], {"--root": "/r"}),
    (
        "root-eq-config",
        ["--root=/r", "--config", "/c.toml", "hook"],
        {"--root": "/r", "--config": "/c.toml"},
    ),
    (
        "all-any-order",
        ["--config=/c.toml", "--topology", "/t.json", "--root", "/r", "hook"],
        {"--config": "/c.toml", "--topology": "/t.json", "--root": "/r"},
    ),
    ("value-with-equals", ["--root=/a=b", "hook"], {"--root": "/a=b"}),
    ("value-looks-like-hook", ["--root", "hook", "hook"], {"--root": "hook"}),
    ("repeated", ["--root", "/a", "--root", "/b", "hook"], None),
    ("repeated-mixed-forms", ["--root=/a", "--root", "/b", "hook"], None),
    ("unknown-option", ["--verbose", "hook"], None),
    ("unknown-with-value", ["--rootdir", "/r", "hook"], None),
    ("help-after", ["hook", "--help"], None),
    ("help-before", ["--help", "hook"], None),
    ("extra-arg", ["hook", "extra"], None),
    ("option-after-hook", ["hook", "--root", "/r"], None),
    ("missing-value", ["--root"], None),
    ("missing-value-eq", ["--root=", "hook"], None),
    ("empty-value", ["--root", "", "hook"], None),
    ("no-command", [], None),
    ("only-options", ["--root", "/r"], None),
    ("other-command", ["list"], None),
    ("other-command-with-options", ["--root", "/r", "sync"], None),
]


@pytest.mark.parametrize(
    ("argv", "want"), [c[1:] for c in HOOK_OPTIONS], ids=[c[0] for c in HOOK_OPTIONS]
)
def test_hook_options(argv: list[str], want: dict[str, str] | None) -> None:
    assert capctl_main.hook_options(argv) == want


def _record_hook_main(monkeypatch: pytest.MonkeyPatch) -> list[Host]:
    seen: list[Host] = []

    def fake(host: Host, **_: Any) -> int:
        seen.append(host)
        return 0

    monkeypatch.setattr("capctl.deliver.hook.main", fake)
    return seen


BOGUS_ENV = {
    "CAPCTL_ROOT": "/nonexistent/bogus-root",
    "CAPCTL_CONFIG": "/nonexistent/bogus.toml",
    "CAPCTL_TOPOLOGY": "/nonexistent/bogus.json",
}


@pytest.mark.parametrize(
    ("argv", "want"),
    [
        (["hook"], Host()),
        (["--root", "/r", "hook"], Host(root=Path("/r"), root_from="--root")),
        (
            ["--topology=/t.json", "--config", "/c.toml", "hook"],
            Host(config=Path("/c.toml"), topology=Path("/t.json"), topology_from="--topology"),
        ),
    ],
    ids=["defaults", "root", "topology-config"],
)
def test_fast_entry_builds_host_from_arguments_only(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], want: Host
) -> None:
    seen = _record_hook_main(monkeypatch)
    for key, value in BOGUS_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(sys, "argv", ["capctl", *argv])
    with pytest.raises(SystemExit) as exc:
        capctl_main.main()
    assert exc.value.code == 0
    assert seen == [want]


@pytest.mark.parametrize(
    ("argv", "want"),
    [
        (["hook"], Host(root=Path("/"), config=DEFAULT_CONFIG, topology=None)),
        (["--root", "/r", "hook"], Host(root=Path("/r"), root_from="--root")),
    ],
    ids=["defaults", "root"],
)
def test_click_hook_ignores_capctl_env(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], want: Host
) -> None:
    from capctl.cli import cli

    seen = _record_hook_main(monkeypatch)
    result = CliRunner().invoke(cli, argv, env=BOGUS_ENV)
    assert result.exit_code == 0, result.output
    assert seen == [want]


# --- as a process ------------------------------------------------------------------------


def _config(path: Path, log: Path) -> Path:
    path.write_text(f'[hook]\nlog_file = "{log}"\n')
    os.chmod(path, 0o644)
    return path


def _run_hook(
    argv: list[str], bundle: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    state = {"ociVersion": "1.0.2", "id": "ctr-main-test", "status": "creating"}
    state |= {"pid": os.getpid(), "bundle": str(bundle)}
    return subprocess.run(
        [sys.executable, "-m", "capctl", *argv, "hook"],
        input=json.dumps(state),
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
        timeout=30,
    )


@pytest.fixture
def bogus_world(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """CAPCTL_* pointing at a config whose log file must never be written."""
    bogus_log = tmp_path / "bogus.log"
    bogus_cfg = _config(tmp_path / "bogus.toml", bogus_log)
    env = {
        "CAPCTL_ROOT": str(tmp_path / "no-such-root"),
        "CAPCTL_CONFIG": str(bogus_cfg),
        "CAPCTL_TOPOLOGY": str(tmp_path / "no-such-topology.json"),
    }
    return env, bogus_log


def test_hook_process_uses_arguments_not_env_no_request(
    tmp_path: Path, bogus_world: tuple[dict[str, str], Path]
) -> None:
    env, bogus_log = bogus_world
    log = tmp_path / "hook.log"
    cfg = _config(tmp_path / "capctl.toml", log)
    bundle = make_bundle(tmp_path, ["PATH=/bin", "NVIDIA_VISIBLE_DEVICES=void"])
    res = _run_hook(["--root", str(tmp_path / "other-root"), "--config", str(cfg)], bundle, env)
    assert (res.returncode, res.stdout, res.stderr) == (0, "", "")
    assert "ctr-main-test: no NVIDIA devices requested" in log.read_text()
    assert not bogus_log.exists()
    assert os.listdir(bundle / "rootfs") == []


def test_hook_process_uses_arguments_not_env_unknown_device(
    tmp_path: Path, bogus_world: tuple[dict[str, str], Path]
) -> None:
    # With the root and topology of the arguments, the hook gets as far as resolving the
    # device (the bogus CAPCTL_* ones would fail earlier, naming their paths).
    env, bogus_log = bogus_world
    root = tmp_path / "root"
    simulated.build(root, dev_nodes=False)
    log = tmp_path / "hook.log"
    cfg = _config(tmp_path / "capctl.toml", log)
    bad = "MIG-00000000-0000-0000-0000-000000000000"
    bundle = make_bundle(tmp_path, [f"NVIDIA_VISIBLE_DEVICES={bad}"])
    argv = ["--root", str(root), "--topology", str(root / "topology.json"), "--config", str(cfg)]
    res = _run_hook(argv, bundle, env)
    assert res.returncode == 1
    assert res.stdout == ""
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("capctl: error:"), res.stderr
    assert bad.lower() in lines[0].lower()
    assert "bogus" not in lines[0] and "no-such" not in lines[0]
    assert "error:" in log.read_text()
    assert not bogus_log.exists()


def _entry(argv: list[str], stdin: str) -> subprocess.CompletedProcess[str]:
    """Run the hook as the shipped definitions do (``HOOK_ARGS``)."""
    return subprocess.run(
        [sys.executable, *HOOK_ARGS, *argv], input=stdin, capture_output=True,
        text=True, env={"PATH": "/usr/bin:/bin"},
    )


def test_hook_entry_exit_status_and_message_survive_the_fast_exit(tmp_path: Path) -> None:
    bad = _entry(["--root", str(tmp_path), "hook"], "{not json")
    assert bad.returncode == 1
    assert bad.stderr.startswith("capctl: error: container state (stdin)")
    assert bad.stdout == ""
    usage = _entry(["hook", "--bogus"], "")
    assert usage.returncode == 2 and "No such option" in usage.stderr
    nothing = _entry(["--root", str(tmp_path), "--config", str(tmp_path / "none.toml"), "hook"],
                     "")
    assert nothing.returncode == 1 and "container state" in nothing.stderr


def test_hook_entry_succeeds_with_exit_0(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps(
        {"ociVersion": "1.0.2", "root": {"path": "rootfs"}, "process": {"env": []}}))
    state = {"ociVersion": "1.0.2", "id": "entry", "status": "creating",
             "pid": os.getpid(), "bundle": str(bundle)}
    ok = _entry(["--config", str(tmp_path / "none.toml"), "hook"], json.dumps(state))
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, "", "")


@pytest.mark.parametrize(("argv", "code"), [(["--help"], 0), (["-h"], 0), (["-x"], 2), ([], 2),
                                            (["a", "b"], 2)])
def test_simulated_prints_its_usage_and_makes_nothing(tmp_path: Path, argv: list[str],
                                                      code: int) -> None:
    """``python -m capctl.simulated --help`` made a directory named --help."""
    res = subprocess.run([sys.executable, "-m", "capctl.simulated", *argv], cwd=tmp_path,
                         capture_output=True, text=True)
    assert res.returncode == code
    assert "usage: python -m capctl.simulated DIR" in (res.stdout if code == 0 else res.stderr)
    assert list(tmp_path.iterdir()) == []


def test_version_is_the_installed_distributions() -> None:
    """``capctl --version`` prints ``capctl.__version__`` (no importlib.metadata on start):
    it must be the version pyproject.toml gives the installed distribution."""
    from importlib.metadata import version

    import capctl
    from capctl.cli import cli

    assert capctl.__version__ == version("capctl")
    res = CliRunner().invoke(cli, ["--version"])
    assert res.output == f"capctl, version {capctl.__version__}\n"

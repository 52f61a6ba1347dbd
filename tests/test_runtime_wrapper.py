"""``capctl-runtime``: argument handling, the spec rewrite, and the fast path that execs the
real runtime without importing capctl."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from capctl import runtime_main as rm
from capctl.deliver import runtime
from capctl.edits.edits import Edits, NodeEdit
from capctl.errors import HookError
from capctl.host import DEFAULT_CONFIG
from capctl.policy import settings
from tests.support.bundles import make_bundle

EDITS = Edits((
    NodeEdit("/dev/nvidia0", "/dev/nvidia0", 195, 0, 0o666, "rw"),
    NodeEdit("/dev/nvidia-caps/nvidia-cap30", "/dev/nvidia-caps/nvidia-cap30", 238, 30, 0o444, "r"),
))  # fmt: skip


def test_defaults_agree() -> None:
    assert rm.DEFAULT_CONFIG == DEFAULT_CONFIG
    assert rm.DEFAULT_RUNTIME == settings.DEFAULT_RUNTIME


@pytest.mark.parametrize(
    ("argv", "config", "sub"),
    [
        (["--capctl-config", "/c", "--root", "/r", "create", "--bundle", "/b", "x"], "/c", "create"),
        (["--capctl-config=/c", "state", "x"], "/c", "state"),
        (["--root", "/run/docker/runtime-runc/moby", "--log", "l", "--log-format", "json",
          "--systemd-cgroup", "run", "-d", "x"], None, "run"),
        (["--debug", "delete", "--force", "x"], None, "delete"),
        (["--version"], None, None),
    ],
    ids=["own-option", "own-option-eq", "docker-globals", "flag", "no-subcommand"],
)
def test_split_and_subcommand(argv: list[str], config: str | None, sub: str | None) -> None:
    got_config, args = rm.split_args(argv)
    assert got_config == config
    i = rm.subcommand(args)
    assert (args[i] if i is not None else None) == sub


@pytest.mark.parametrize(
    ("args", "bundle"),
    [(["--bundle", "/b", "id"], "/b"), (["-b=/b", "id"], "/b"), (["--pid-file", "p", "id"], None),
     (["-b", "/b", "id"], "/b"), (["--b", "/b", "id"], "/b"), (["--b=/b", "id"], "/b"),
     (["-bundle", "/b", "id"], "/b"), (["-bundle=/b", "id"], "/b"), (["--bundle=/b", "id"], "/b"),
     (["--", "--bundle", "/b"], None)],
    ids=["long", "short-eq", "cwd", "short", "short-2dash", "short-2dash-eq", "long-1dash",
         "long-1dash-eq", "long-eq", "after-dashdash"],
)
def test_bundle_of(args: list[str], bundle: str | None) -> None:
    assert runtime.bundle_of(args) == (bundle or os.getcwd())


def test_add_edits_keeps_every_other_field() -> None:
    spec = {
        "ociVersion": "1.0.2", "x-unknown": {"a": [1, 2.5]},
        "linux": {"devices": [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}],
                  "resources": {"devices": [{"allow": False, "access": "rwm"}], "memory": {}},
                  "cgroupsPath": "/x"},
    }  # fmt: skip
    out = json.loads(json.dumps(spec))
    assert runtime.add_edits(out, EDITS, "config.json") == 4  # 2 devices, 2 rules
    assert out["x-unknown"] == spec["x-unknown"] and out["linux"]["cgroupsPath"] == "/x"
    assert out["linux"]["devices"][0]["path"] == "/dev/fuse"
    assert out["linux"]["devices"][1:] == [
        {"path": "/dev/nvidia0", "type": "c", "major": 195, "minor": 0, "fileMode": 0o666,
         "uid": 0, "gid": 0},
        {"path": "/dev/nvidia-caps/nvidia-cap30", "type": "c", "major": 238, "minor": 30,
         "fileMode": 0o444, "uid": 0, "gid": 0},
    ]  # fmt: skip
    assert out["linux"]["resources"]["devices"] == [
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "c", "major": 195, "minor": 0, "access": "rw"},
        {"allow": True, "type": "c", "major": 238, "minor": 30, "access": "r"},
    ]
    assert out["linux"]["resources"]["memory"] == {}


def test_a_second_create_adds_nothing() -> None:
    """A reused bundle: the devices and rules of the first create are not added again."""
    spec: dict[str, object] = {"linux": {"resources": {"devices": [{"allow": False,
                                                                      "access": "rwm"}]}}}
    once = json.loads(json.dumps(spec))
    runtime.add_edits(once, EDITS, "config.json")
    twice = json.loads(json.dumps(once))
    assert runtime.add_edits(twice, EDITS, "config.json") == 0
    assert twice == once
    assert len(once["linux"]["resources"]["devices"]) == 3


def test_add_edits_refuses_another_device_at_the_path() -> None:
    spec = {"linux": {"devices": [{"path": "/dev/nvidia0", "type": "c", "major": 1, "minor": 3}]}}
    with pytest.raises(HookError, match="another device"):
        runtime.add_edits(spec, EDITS, "config.json")


def test_write_spec_is_atomic_and_keeps_mode(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("{}")
    os.chmod(path, 0o600)
    runtime.write_spec(str(path), {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_write_spec_keeps_the_owner(tmp_path: Path) -> None:
    """A user's bundle stays the user's (the wrapper runs as root)."""
    if os.geteuid() != 0:
        pytest.skip("needs root (chown)")
    path = tmp_path / "config.json"
    path.write_text("{}")
    os.chown(path, 65534, 65534)
    runtime.write_spec(str(path), {"a": 1})
    st = path.stat()
    assert (st.st_uid, st.st_gid) == (65534, 65534)


@pytest.mark.parametrize(("args", "log", "fmt"), [
    (["--root", "/r", "--log", "/l", "--log-format", "json"], "/l", "json"),
    (["-log=/l", "-log-format=json"], "/l", "json"),
    (["--log=/l"], "/l", None),
    (["--debug"], None, None),
])
def test_global_option(args: list[str], log: str | None, fmt: str | None) -> None:
    assert runtime.global_option(args, "log") == log
    assert runtime.global_option(args, "log-format") == fmt


def test_runtime_log_lines_read_like_runcs() -> None:
    """logrus's formats, which containerd's shim parses for the last error."""
    now = 1765000000.25
    line = runtime.runtime_log_line('bad "x"\n', "json", now)
    assert json.loads(line) == {"level": "error", "msg": 'bad "x"\n',
                                "time": "2025-12-06T05:46:40.250000000Z"}
    assert line.endswith("}\n") and line.count("\n") == 1
    text = runtime.runtime_log_line("bad", "text", now)
    assert text == 'time="2025-12-06T05:46:40.250000000Z" level=error msg="bad"\n'


def _run_wrapper(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    code = "import sys; from capctl.runtime_main import main; sys.argv[0] = 'capctl-runtime'; main()"
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code, "--capctl-config", str(config), *args],
        capture_output=True, text=True,
    )


def test_other_subcommands_exec_without_importing_capctl(tmp_path: Path, trusted_dir: Path
                                                         ) -> None:
    real = trusted_dir / "real-runc"
    real.write_text('#!/bin/sh\necho "real $*"\n')
    real.chmod(0o755)
    config = tmp_path / "capctl.toml"
    config.write_text(f'[runtime]\nruntime = "{real}"\n')
    os.chmod(config, 0o644)
    first = _run_wrapper(config, "--root", "/r", "state", "ctr1")
    assert first.returncode == 0 and first.stdout == "real --root /r state ctr1\n", first.stderr
    # The first call parsed the config and cached the runtime; the next ones import nothing
    # of capctl but the entry module.
    second = _run_wrapper(config, "kill", "ctr1", "KILL")
    assert second.stdout == "real kill ctr1 KILL\n"
    imported = {line.split("|")[-1].strip() for line in second.stderr.splitlines()}
    assert {m for m in imported if m.startswith("capctl")} == {
        "capctl", "capctl.runtime_main", "capctl.trustedpath"}
    assert "tomllib" not in imported
    # A changed config is read again, never the stale cache.
    config.write_text('[runtime]\nruntime = "/bin/echo"\n')
    assert _run_wrapper(config, "state", "x").stdout == "state x\n"


def test_a_runtime_others_could_swap_is_never_run(tmp_path: Path) -> None:
    """The real runtime is checked before every exec (capctl/trustedpath.py): one in /tmp,
    which anyone may write, is refused with the reason, and never runs."""
    real = tmp_path / "real-runc"
    mark = tmp_path / "ran"
    real.write_text(f'#!/bin/sh\ntouch {mark}\n')
    real.chmod(0o755)
    config = tmp_path / "capctl.toml"
    config.write_text(f'[runtime]\nruntime = "{real}"\n')
    os.chmod(config, 0o644)
    for args in (["state", "x"], ["create", "--bundle", str(tmp_path), "x"]):
        res = _run_wrapper(config, *args)
        assert res.returncode != 0, res
        assert f"[runtime] runtime {real}: /tmp is writable by group and others (mode 1777); " \
            "refusing to run it" in res.stderr
    assert not mark.exists()


def test_bad_runtime_config_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "capctl.toml"
    config.write_text('[runtime]\nruntime = "runc"\n')
    os.chmod(config, 0o644)
    res = _run_wrapper(config, "state", "x")
    assert res.returncode != 0 and "absolute path" in res.stderr


def _host_config(tmp_path: Path, sim_root: Path, runtime_path: Path) -> Path:
    config = tmp_path / "capctl.toml"
    config.write_text(f'[host]\ndriver_root = "{sim_root}"\n'
                      f'topology = "{sim_root}/topology.json"\n'
                      f'[runtime]\nruntime = "{runtime_path}"\n')
    os.chmod(config, 0o644)
    return config


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (the simulated host's GPU nodes)")
def test_create_twice_on_one_bundle(tmp_path: Path, sim_root: Path,
                                    trusted_dir: Path) -> None:
    """The second create adds nothing and leaves the file alone; the owner stays the user's."""
    from capctl import simulated

    real = trusted_dir / "runc"
    real.write_text("#!/bin/sh\nexit 0\n")
    real.chmod(0o755)
    config = _host_config(tmp_path, sim_root, real)
    mig = simulated.topology()["gpus"][0]["mig_devices"][0]["uuid"]
    bundle = make_bundle(tmp_path, [f"NVIDIA_VISIBLE_DEVICES={mig}"])
    spec = bundle / "config.json"
    os.chown(spec, 65534, 65534)
    res = _run_wrapper(config, "create", "--b", str(bundle), "c1")
    assert res.returncode == 0, res.stderr
    first = spec.read_text()
    rules = json.loads(first)["linux"]["resources"]["devices"]
    assert len(rules) == 6 and spec.stat().st_uid == 65534
    inode = spec.stat().st_ino
    res = _run_wrapper(config, "create", "-bundle=" + str(bundle), "c1")
    assert res.returncode == 0, res.stderr
    assert spec.read_text() == first and spec.stat().st_ino == inode


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_a_failed_create_is_written_to_runcs_log(tmp_path: Path, sim_root: Path,
                                                 trusted_dir: Path, fmt: str) -> None:
    real = trusted_dir / "runc"
    real.write_text("#!/bin/sh\nexit 0\n")
    real.chmod(0o755)
    config = _host_config(tmp_path, sim_root, real)
    bundle = make_bundle(tmp_path, ["NVIDIA_VISIBLE_DEVICES=MIG-00000000-0000-4000-8000-000000000000"])
    log = tmp_path / "log.json"
    res = _run_wrapper(config, "--log", str(log), "--log-format", fmt, "create", "--bundle",
                       str(bundle), "c1")
    assert res.returncode == 1
    reason = "'MIG-00000000-0000-4000-8000-000000000000': no such device in the topology"
    assert f"capctl-runtime: error: {reason}" in res.stderr
    (line,) = log.read_text().splitlines()
    if fmt == "json":
        entry = json.loads(line)
        assert entry["level"] == "error" and entry["msg"].startswith(f"capctl-runtime: error: {reason}")
    else:
        assert line.startswith('time="') and " level=error msg=" in line and reason in line

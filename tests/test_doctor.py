"""``capctl doctor``: says what is wrong and how to fix it; exit 1 on failures."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from capctl import doctor
from capctl.cli import cli
from capctl.host import Host
from tests.support.hostcg import CGROUP_ROOT, LAYOUT, NO_V2

from .conftest import needs_root


def _doctor(root: Path, tmp_path: Path) -> tuple[int, dict[str, list[dict[str, str]]]]:
    res = CliRunner().invoke(
        cli, ["--root", str(root), "--config", str(tmp_path / "none.toml"), "doctor", "--json"]
    )
    return res.exit_code, json.loads(res.output)


@needs_root
def test_healthy_after_sync(sim_root: Path, tmp_path: Path) -> None:
    CliRunner().invoke(cli, ["--root", str(sim_root), "sync"])
    _code, report = _doctor(sim_root, tmp_path)
    assert all(f["level"] != "fail" for f in report["driver"] + report["nodes"]), report
    assert any("all 48 capability nodes in place" in f["what"] for f in report["nodes"])


def test_missing_nodes_fail_with_fix(sim_root: Path, tmp_path: Path) -> None:
    code, report = _doctor(sim_root, tmp_path)
    assert code == 1
    missing = [f for f in report["nodes"] if "nodes missing" in f["what"]]
    assert missing and missing[0]["fix"] == "capctl sync"


def test_driver_not_loaded(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/devices").write_text("Character devices:\n  1 mem\n")
    code, report = _doctor(tmp_path, tmp_path)
    assert code == 1
    # A root other than / with no driver: the root is the likelier fault, not the module.
    assert report["driver"][0]["level"] == "fail"
    assert f"check the driver root {tmp_path} (from --root)" in report["driver"][0]["fix"]


def test_proc_based_interface(sim_root: Path, tmp_path: Path) -> None:
    (sim_root / "proc/driver/nvidia-caps/mig-minors").unlink()
    _code, report = _doctor(sim_root, tmp_path)
    # No open module release (515-595) has an nv_cap_enable_devfs parameter: no such hint.
    (finding,) = [f for f in report["driver"] if "mig-minors" in f["what"]]
    assert finding["level"] == "fail" and "since R450" in finding["what"]
    assert "--root" in finding["fix"] and "nv_cap_enable_devfs" not in finding["fix"]


def test_unsafe_config_reported(sim_host: Host, tmp_path: Path) -> None:
    cfg = tmp_path / "capctl.toml"
    cfg.write_text("")
    os.chmod(cfg, 0o666)
    findings = doctor.check_config(Host(root=sim_host.root, config=cfg))
    assert findings[0].level is doctor.Level.FAIL and "chmod 0644" in findings[0].fix


def test_cgroup_version_as_the_hook_sees_it(tmp_path: Path) -> None:
    from capctl.cgroup.discovery import CGROUP2_SUPER_MAGIC

    v2 = doctor.check_cgroups(tmp_path, magic=lambda _p: CGROUP2_SUPER_MAGIC)
    assert v2[0].level is doctor.Level.OK and "cgroup v2" in v2[0].what
    none = doctor.check_cgroups(tmp_path, magic=lambda _p: 0x01021994)  # tmpfs, no devices
    assert none[0].level is doctor.Level.FAIL
    (tmp_path / "devices").mkdir()
    (tmp_path / "devices/devices.list").write_text("a *:* rwm\n")
    v1 = doctor.check_cgroups(tmp_path, magic=lambda _p: 0x01021994)
    assert v1[0].level is doctor.Level.OK and "cgroup v1" in v1[0].what


def test_hook_detected(tmp_path: Path) -> None:
    # A definition that mentions capctl is checked by running its interpreter, not by grep.
    capctl_script = Path(sys.executable).parent / "capctl"
    (tmp_path / "oci-capctl.json").write_text(json.dumps({"hook": {"path": str(capctl_script)}}))
    findings = doctor.check_runtimes([str(tmp_path)])
    assert any(f.level is doctor.Level.OK and "OCI hook" in f.what for f in findings), findings
    (tmp_path / "oci-capctl.json").write_text('{"hook": {"path": "/usr/bin/capctl"}}')
    findings = doctor.check_runtimes([str(tmp_path)])
    assert any(f.level is doctor.Level.FAIL and "/usr/bin/capctl" in f.what for f in findings)
    findings = doctor.check_runtimes([str(tmp_path / "none")])
    assert any(f.level is doctor.Level.WARN for f in findings)


@pytest.mark.skipif(LAYOUT.v2 is None and LAYOUT.v1_devices is None, reason=NO_V2)
def test_cgroup_version_on_the_real_host() -> None:
    # No stand-in: the type of the file system mounted there, from our mountinfo, on a
    # hybrid host (v1 at /sys/fs/cgroup, cgroup2 below it) and a v2-only one alike.
    top = doctor.check_cgroups(CGROUP_ROOT)[0].what
    assert ("cgroup v2" if LAYOUT.v2_only else "cgroup v1") in top, top
    if LAYOUT.v2 is not None:
        assert "cgroup v2" in doctor.check_cgroups(LAYOUT.v2)[0].what


def test_effective_request_policy(sim_root: Path, tmp_path: Path) -> None:
    _code, report = _doctor(sim_root, tmp_path)  # no config: the defaults
    whats = [f["what"] for f in report["requests"]]
    assert any('envvar = "auto"' in w and "Kubernetes" in w for w in whats), whats
    assert any("volume_mounts = true" in w for w in whats), whats
    cfg = tmp_path / "none.toml"
    cfg.write_text('[requests]\nenvvar = "any"\nvolume_mounts = false\n')
    cfg.chmod(0o644)
    _code, report = _doctor(sim_root, tmp_path)
    levels = {f["level"] for f in report["requests"]}
    assert "warn" in levels
    assert any("volume_mounts = false" in f["what"] for f in report["requests"])
    cfg.write_text('[requests]\nenvvar = "everyone"\n')
    code, report = _doctor(sim_root, tmp_path)
    assert code == 1 and report["requests"][0]["level"] == "fail"
    assert "envvar" in report["requests"][0]["what"]


def test_systemd_driver_and_reload_safety(tmp_path: Path) -> None:
    none = doctor.check_systemd(str(tmp_path / "absent"))
    assert len(none) == 1 and "cgroupfs" in none[0].what
    run_dir = tmp_path / "systemd-system"
    run_dir.mkdir()
    docker = tmp_path / "daemon.json"
    docker.write_text('{"exec-opts": ["native.cgroupdriver=systemd"]}')
    no_bus = doctor.check_systemd(str(run_dir), str(tmp_path / "bus"), str(docker), "/nonexistent")
    assert "docker (exec-opts): systemd" in no_bus[0].what
    assert no_bus[-1].level is doctor.Level.FAIL and "not daemon-reload-safe" in no_bus[-1].what
    bus = tmp_path / "bus"
    bus.touch()
    ok = doctor.check_systemd(str(run_dir), str(bus), "/nonexistent", "/nonexistent")
    assert ok[-1].level is doctor.Level.OK and "daemon-reload-safe" in ok[-1].what


def _containerd_tree(tmp_path: Path, main: str | None) -> Path:
    confd = tmp_path / "containerd/conf.d"
    confd.mkdir(parents=True)
    (confd / "99-capctl.toml").write_text("# capctl\n")
    if main is not None:
        (tmp_path / "containerd/config.toml").write_text(main)
    return confd


@pytest.mark.parametrize(("main", "major", "level"), [
    ('version = 2\nimports = ["/X/*.toml"]\n', 1, "ok"),
    ("version = 2\n", 1, "fail"),
    ("version = 2\n", 2, "fail"),
    (None, 1, "fail"),
    (None, 2, "ok"),
], ids=["imported", "1.x-no-imports", "2.x-config-without-imports", "1.x-no-config",
        "2.x-default-imports"])
def test_containerd_drop_in_is_really_read(tmp_path: Path, main: str | None, major: int,
                                           level: str) -> None:
    confd = _containerd_tree(tmp_path, None if main is None else main.replace("/X", str(
        tmp_path / "containerd/conf.d")))
    (finding,) = doctor.check_containerd_imports(str(confd), major=major)
    assert finding.level.value == level, finding
    if level == "fail":
        assert "is never read" in finding.what
        assert f'imports = ["{confd}/*.toml"]' in finding.fix


def test_containerd_without_capctls_drop_in_says_nothing(tmp_path: Path) -> None:
    assert doctor.check_containerd_imports(str(tmp_path / "conf.d"), major=1) == []


def test_docker_gpus_link(tmp_path: Path) -> None:
    """The first nvidia-container-runtime-hook on dockerd's PATH must be capctl's link."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    path = f"{first}:{second}"
    (found,) = doctor.check_docker_gpus(path, "on the PATH of dockerd (pid 1)")
    assert found.level is doctor.Level.WARN and "--gpus fails" in found.what
    assert found.fix.startswith("capctl install --docker-hook-link")
    ours = second / "nvidia-container-runtime-hook"
    ours.symlink_to(Path(sys.executable).parent / "capctl-docker-hook")
    (found,) = doctor.check_docker_gpus(path, "on the PATH of dockerd (pid 1)")
    assert found.level is doctor.Level.OK, found
    nvidias = first / "nvidia-container-runtime-hook"
    nvidias.write_text("#!/bin/sh\n")
    nvidias.chmod(0o755)
    (found,) = doctor.check_docker_gpus(path, "on the PATH of dockerd (pid 1)")
    assert found.level is doctor.Level.WARN and "bypasses capctl" in found.what
    assert str(nvidias) in found.what


def test_containerd_major_of_the_installed_binary() -> None:
    """scripts/setup.sh installs containerd: its version line is one doctor can read."""
    import shutil

    assert shutil.which("containerd"), "containerd is not installed (scripts/setup.sh)"
    assert doctor.containerd_major() in (1, 2)


def test_doctor_checks_the_gpus_hook_of_the_hosts_dockerd(sim_host: Host) -> None:
    """scripts/setup.sh installs docker.io: doctor's runtimes section says what --gpus runs."""
    import shutil

    assert shutil.which("dockerd"), "docker.io is not installed (scripts/setup.sh)"
    runtimes = dict(doctor.run(sim_host))["runtimes"]
    assert any(f.what.startswith("docker --gpus: ") for f in runtimes), runtimes

"""``capctl install``: definitions for this installation, merged or written, never clobbering;
``doctor`` runs each installed definition's interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from capctl import doctor, install
from capctl.cli import cli
from capctl.main import HOOK_INTERPRETER_ARGS

BIN = os.path.dirname(sys.executable)


def run_install(tmp: Path, *args: str, opts: tuple[str, ...] = ()) -> tuple[int, str]:
    res = CliRunner().invoke(cli, [*opts, "install", *args], catch_exceptions=False)
    return res.exit_code, res.output


def targets(tmp: Path) -> list[str]:
    return [
        "--hooks-dir", str(tmp / "hooks.d"), "--docker-config", str(tmp / "docker/daemon.json"),
        "--containerd-dir", str(tmp / "containerd"), "--crio-dir", str(tmp / "crio"),
    ]  # fmt: skip


def test_writes_every_definition_for_this_installation(tmp_path: Path) -> None:
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker/daemon.json").write_text('{"debug": true, "runtimes": {"x": {"path": "/x"}}}')
    code, out = run_install(tmp_path, *targets(tmp_path), opts=("--root", str(tmp_path)))
    assert code == 0, out
    hook = json.loads((tmp_path / "hooks.d/oci-capctl.json").read_text())
    assert hook["hook"]["path"] == sys.executable
    assert hook["hook"]["args"] == [
        sys.executable, *HOOK_INTERPRETER_ARGS, "--root", str(tmp_path), "hook"
    ]
    assert hook["when"] == {"annotations": install.ANNOTATION}
    daemon = json.loads((tmp_path / "docker/daemon.json").read_text())
    assert daemon["debug"] is True and daemon["runtimes"]["x"] == {"path": "/x"}
    assert daemon["runtimes"]["capctl"] == {"path": f"{BIN}/capctl-runtime"}
    ctd = tomllib.loads((tmp_path / "containerd/99-capctl.toml").read_text())
    runtime = ctd["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["capctl"]
    assert runtime["options"]["BinaryName"] == f"{BIN}/capctl-runtime"
    crio = tomllib.loads((tmp_path / "crio/99-capctl.conf").read_text())
    assert crio["crio"]["runtime"]["runtimes"]["capctl"]["runtime_path"] == f"{BIN}/capctl-runtime"
    # A second install replaces its own files and changes nothing else.
    code, out = run_install(tmp_path, *targets(tmp_path), opts=("--root", str(tmp_path)))
    assert code == 0 and out.count("replaced own file") == 4, out


def test_always_and_dry_run(tmp_path: Path) -> None:
    code, out = run_install(tmp_path, *targets(tmp_path), "--always", "--dry-run")
    assert code == 0 and "would write" in out and '"always": true' in out
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("where", "content"),
    [
        ("hooks.d/oci-capctl.json", '{"hook": {"path": "/usr/bin/other-hook"}}'),
        ("containerd/99-capctl.toml", "version = 2\n"),
        ("crio/99-capctl.conf", "[crio]\n"),
        ("docker/daemon.json", '{"runtimes": {"capctl": {"path": "/usr/bin/runsc"}}}'),
        ("docker/daemon.json", "[1]"),
    ],
    ids=["foreign-hook", "foreign-containerd", "foreign-crio", "foreign-runtime", "not-object"],
)
def test_refuses_files_it_did_not_write(tmp_path: Path, where: str, content: str) -> None:
    (tmp_path / where).parent.mkdir(parents=True)
    (tmp_path / where).write_text(content)
    code, out = run_install(tmp_path, *targets(tmp_path))
    assert code == 1 and "refusing" in out, out
    assert (tmp_path / where).read_text() == content
    # Nothing else was written either: all checks come before the first write.
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [Path(where).name]


def test_docker_hook_link_never_over_another_binary(tmp_path: Path) -> None:
    inst = install.Installation(sys.executable, BIN)
    path = install.link_docker_hook(str(tmp_path), inst, dry_run=False)
    assert os.readlink(path) == f"{BIN}/capctl-docker-hook"
    install.link_docker_hook(str(tmp_path), inst, dry_run=False)  # its own link: replaced
    os.unlink(path)
    Path(path).write_text("#!/bin/sh\n")  # NVIDIA's binary
    with pytest.raises(install.InstallError, match="refusing"):
        install.link_docker_hook(str(tmp_path), inst, dry_run=False)
    os.unlink(path)
    os.symlink("/usr/bin/nvidia-container-toolkit", path)
    with pytest.raises(install.InstallError, match="refusing"):
        install.link_docker_hook(str(tmp_path), inst, dry_run=False)


def test_hooks_dir_is_created(tmp_path: Path) -> None:
    code, out = run_install(tmp_path, "--hooks-dir", str(tmp_path / "a/b/hooks.d"))
    assert code == 0, out
    assert (tmp_path / "a/b/hooks.d/oci-capctl.json").is_file()


def test_doctor_runs_each_installed_interpreter(tmp_path: Path) -> None:
    code, out = run_install(tmp_path, *targets(tmp_path))
    assert code == 0, out
    found = doctor.check_runtimes([str(tmp_path / "hooks.d")], str(tmp_path / "docker/daemon.json"))
    oks = [f.what for f in found if f.level is doctor.Level.OK]
    assert any("OCI hook" in w and "imports capctl" in w for w in oks), found
    # The definition capctl used to ship: the venv's interpreter with argv[0] "python3".
    bad = json.loads((tmp_path / "hooks.d/oci-capctl.json").read_text())
    bad["hook"]["args"][0] = "python3"
    (tmp_path / "hooks.d/oci-capctl.json").write_text(json.dumps(bad))
    found = doctor.check_runtimes([str(tmp_path / "hooks.d")], str(tmp_path / "none.json"))
    fails = [f for f in found if f.level is doctor.Level.FAIL]
    assert fails and "No module named 'capctl'" in fails[0].what, found


def test_install_from_the_console_script(tmp_path: Path) -> None:
    res = subprocess.run(
        [f"{BIN}/capctl", "install", "--hooks-dir", str(tmp_path), "--dry-run"],
        capture_output=True, text=True, check=True,
    )
    assert sys.executable in res.stdout

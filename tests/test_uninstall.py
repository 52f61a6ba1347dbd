"""``capctl uninstall``: removes what ``capctl install`` and ``capctl watch`` wrote, only
that, and reports a foreign file at one of capctl's names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from capctl.cli import cli


@pytest.fixture
def tmp_path(trusted_dir: Path) -> Path:
    """A work directory only root can change: ``capctl install`` refuses a launcher directory
    under the world-writable /tmp, where pytest's own is (docs/testing.md)."""
    return trusted_dir


def run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return res.exit_code, res.output  # stdout and stderr


def places(tmp: Path) -> list[str]:
    return ["--hooks-dir", str(tmp / "hooks.d"), "--containerd-dir", str(tmp / "containerd"),
            "--crio-dir", str(tmp / "crio"), "--launcher-dir", str(tmp / "libexec")]


def installed(tmp: Path, sim_root: Path) -> list[Path]:
    code, out = run("install", *places(tmp))
    assert code == 0, out
    spec = tmp / "cdi" / "capctl.io-mig.json"
    code, out = run("--root", str(sim_root), "--topology", str(sim_root / "topology.json"),
                    "cdi", "generate", "--output", str(spec))
    assert code == 0, out
    files = [tmp / "hooks.d/oci-capctl.json", tmp / "containerd/99-capctl.toml",
             tmp / "crio/99-capctl.conf", tmp / "libexec/capctl-runtime", spec]
    assert all(f.is_file() for f in files)
    return files


def test_removes_what_install_and_the_watcher_wrote(tmp_path: Path, sim_root: Path) -> None:
    files = installed(tmp_path, sim_root)
    code, out = run("uninstall", *places(tmp_path), "--cdi-output", str(files[-1]), "--dry-run")
    assert code == 0 and out.count("would remove") == 5, out
    assert all(f.is_file() for f in files)
    code, out = run("uninstall", *places(tmp_path), "--cdi-output", str(files[-1]))
    assert code == 0 and out.count("removed ") == 5, out
    assert [f for f in files if f.exists()] == []
    code, out = run("uninstall", *places(tmp_path), "--cdi-output", str(files[-1]))
    assert code == 0 and out.strip() == "nothing of capctl's found", out


@pytest.mark.parametrize(("name", "content"), [
    ("hooks.d/oci-capctl.json", '{"version": "1.0.0", "hook": {"path": "/usr/bin/other"}}'),
    ("containerd/99-capctl.toml", "[plugins]\n"),
    ("crio/99-capctl.conf", "# someone else's\n"),
    ("libexec/capctl-runtime", "#!/bin/sh\nexec runc \"$@\"\n"),
    ("cdi/capctl.io-mig.json", json.dumps({"cdiVersion": "0.5.0", "kind": "vendor.com/gpu"})),
], ids=["hook", "containerd", "crio", "launcher", "cdi-spec"])
def test_leaves_a_foreign_file(tmp_path: Path, name: str, content: str) -> None:
    path = tmp_path / name
    path.parent.mkdir(parents=True)
    path.write_text(content)
    spec = tmp_path / "cdi/capctl.io-mig.json"
    code, out = run("uninstall", *places(tmp_path), "--cdi-output", str(spec))
    assert code == 0, out
    assert path.read_text() == content
    assert f"left {path}: " in out and "not written by capctl" in out


def test_an_unreadable_place_stops_it_before_anything_goes(tmp_path: Path, sim_root: Path) -> None:
    files = installed(tmp_path, sim_root)
    hook = files[0]
    hook.unlink()
    hook.mkdir()  # a directory at the hook's name: cannot be judged, so nothing is removed
    code, out = run("uninstall", *places(tmp_path), "--cdi-output", str(files[-1]))
    assert code == 1
    assert out.strip() == f"capctl: error: {hook}: cannot read: [Errno 21] Is a directory: " \
        f"'{hook}'", out
    assert all(f.exists() for f in files[1:])

"""``capctl uninstall``: removes what ``capctl install`` and ``capctl watch`` wrote, only
that, and reports a foreign file at one of capctl's names."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from capctl.cli import cli


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
             tmp / "crio/99-capctl.conf", tmp / "libexec/capctl-runtime",
             tmp / "libexec/capctl-modules.pack", spec]
    assert all(f.is_file() for f in files)
    return files


def test_removes_what_install_and_the_watcher_wrote(tmp_path: Path, sim_root: Path) -> None:
    files = installed(tmp_path, sim_root)
    code, out = run("uninstall", *places(tmp_path), "--cdi-output", str(files[-1]), "--dry-run")
    assert code == 0 and out.count("would remove") == 6, out
    assert all(f.is_file() for f in files)
    code, out = run("uninstall", *places(tmp_path), "--cdi-output", str(files[-1]))
    assert code == 0 and out.count("removed ") == 6, out
    assert [f for f in files if f.exists()] == []
    code, out = run("uninstall", *places(tmp_path), "--cdi-output", str(files[-1]))
    assert code == 0 and out.strip() == "nothing of capctl's found", out


@pytest.mark.parametrize(("name", "content"), [
    ("hooks.d/oci-capctl.json", '{"version": "1.0.0", "hook": {"path": "/usr/bin/other"}}'),
    ("containerd/99-capctl.toml", "[plugins]\n"),
    ("crio/99-capctl.conf", "# someone else's\n"),
    ("libexec/capctl-runtime", "#!/bin/sh\nexec runc \"$@\"\n"),
    ("libexec/capctl-modules.pack", "capctl module pack, but not the first line\n"),
    ("cdi/capctl.io-mig.json", json.dumps({"cdiVersion": "0.5.0", "kind": "vendor.com/gpu"})),
], ids=["hook", "containerd", "crio", "launcher", "pack", "cdi-spec"])
def test_leaves_a_foreign_file(tmp_path: Path, name: str, content: str) -> None:
    path = tmp_path / name
    path.parent.mkdir(parents=True)
    path.write_text(content)
    spec = tmp_path / "cdi/capctl.io-mig.json"
    code, out = run("uninstall", *places(tmp_path), "--cdi-output", str(spec))
    assert code == 0, out
    assert path.read_text() == content
    assert f"left {path}: " in out and "not written by capctl" in out


@pytest.mark.parametrize("kind", ["directory", "symlink", "fifo"])
def test_what_is_not_a_regular_file_is_left_and_the_rest_goes(
    tmp_path: Path, sim_root: Path, kind: str
) -> None:
    """A directory, a symlink (even to a file capctl wrote) or a FIFO at one of capctl's
    names is never opened or removed; the other files still go."""
    files = installed(tmp_path, sim_root)
    spec = files[-1]
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_bytes(spec.read_bytes())  # capctl's form, but reached only by the link
    spec.unlink()
    if kind == "directory":
        spec.mkdir()
    elif kind == "symlink":
        spec.symlink_to(elsewhere)
    else:
        os.mkfifo(spec)  # opening it would block until a writer came
    code, out = run("uninstall", *places(tmp_path), "--cdi-output", str(spec))
    assert code == 0, out
    assert f"left {spec}: CDI spec, not a regular file" in out, out
    assert os.path.lexists(spec) and elsewhere.read_bytes() != b""
    assert [f for f in files[:-1] if f.exists()] == []


def test_management_spec_goes_too(tmp_path: Path, sim_root: Path) -> None:
    spec = tmp_path / "cdi" / "capctl.io-mig.json"
    code, out = run("--root", str(sim_root), "--topology", str(sim_root / "topology.json"),
                    "cdi", "generate", "--output", str(spec), "--management")
    mgmt = tmp_path / "cdi" / "capctl.io-mig-management.json"
    assert code == 0 and mgmt.is_file(), out
    code, out = run("uninstall", "--cdi-output", str(spec))
    assert code == 0 and f"removed {mgmt}: CDI management spec" in out, out
    assert not mgmt.exists() and not spec.exists()


def test_a_file_replaced_since_it_was_read_stays(tmp_path: Path) -> None:
    from capctl import uninstall

    spec = tmp_path / "capctl.io-mig.json"
    spec.write_text(json.dumps({"cdiVersion": "0.5.0", "kind": "capctl.io/mig"}))
    (removal,) = uninstall.plan(cdi_output=str(spec))
    assert removal.own
    spec.unlink()
    spec.write_text("someone else's, written in between\n")
    with pytest.raises(uninstall.UninstallError, match="replaced since it was read"):
        uninstall.remove(removal)
    assert spec.read_text() == "someone else's, written in between\n"

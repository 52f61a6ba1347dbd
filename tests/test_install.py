"""``capctl install``: definitions for this installation, merged or written, never clobbering;
``doctor`` runs each installed definition's interpreter."""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from capctl import doctor, install, modpack
from capctl.cli import cli
from capctl.main import HOOK_ENTRY, VERSION_LINE

BIN = os.path.dirname(sys.executable)


def run_install(tmp: Path, *args: str, opts: tuple[str, ...] = ()) -> tuple[int, str]:
    res = CliRunner().invoke(cli, [*opts, "install", *args], catch_exceptions=False)
    return res.exit_code, res.output


def targets(tmp: Path) -> list[str]:
    return [
        "--hooks-dir", str(tmp / "hooks.d"), "--docker-config", str(tmp / "docker/daemon.json"),
        "--containerd-dir", str(tmp / "containerd"), "--crio-dir", str(tmp / "crio"),
        "--launcher-dir", str(tmp / "libexec"),
    ]  # fmt: skip


def test_writes_every_definition_for_this_installation(tmp_path: Path) -> None:
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker/daemon.json").write_text('{"debug": true, "runtimes": {"x": {"path": "/x"}}}')
    code, out = run_install(tmp_path, *targets(tmp_path), opts=("--root", str(tmp_path)))
    assert code == 0, out
    hook = json.loads((tmp_path / "hooks.d/oci-capctl.json").read_text())
    assert hook["hook"]["path"] == sys.executable
    pack = str(tmp_path / "libexec" / install.PACK)
    assert hook["hook"]["args"] == [
        sys.executable, *install.interpreter_args(install.import_paths(), pack=pack),
        "--root", str(tmp_path), "hook",
    ]
    assert modpack.is_pack(Path(pack).read_bytes()) and os.stat(pack).st_mode & 0o777 == 0o644
    assert hook["when"] == {"annotations": install.ANNOTATION}
    daemon = json.loads((tmp_path / "docker/daemon.json").read_text())
    assert daemon["debug"] is True and daemon["runtimes"]["x"] == {"path": "/x"}
    # The runtime entries run capctl's own launcher, not pip's console script.
    launcher = f"{tmp_path}/libexec/capctl-runtime"
    assert daemon["runtimes"]["capctl"] == {"path": launcher}
    ctd = tomllib.loads((tmp_path / "containerd/99-capctl.toml").read_text())
    runtime = ctd["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["capctl"]
    assert runtime["options"]["BinaryName"] == launcher
    crio = tomllib.loads((tmp_path / "crio/99-capctl.conf").read_text())
    assert crio["crio"]["runtime"]["runtimes"]["capctl"]["runtime_path"] == launcher
    # A second install replaces its own files and changes nothing else.
    code, out = run_install(tmp_path, *targets(tmp_path), opts=("--root", str(tmp_path)))
    assert code == 0 and out.count("replaced own file") == 7, out  # the pack too


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
        ("libexec/capctl-modules.pack", "a file of someone else's\n"),
    ],
    ids=["foreign-hook", "foreign-containerd", "foreign-crio", "foreign-runtime", "not-object",
         "foreign-pack"],
)
def test_refuses_files_it_did_not_write(tmp_path: Path, where: str, content: str) -> None:
    (tmp_path / where).parent.mkdir(parents=True)
    (tmp_path / where).write_text(content)
    code, out = run_install(tmp_path, *targets(tmp_path))
    assert code == 1 and "refusing" in out, out
    assert (tmp_path / where).read_text() == content
    # Nothing else was written either: all checks come before the first write.
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [Path(where).name]


def test_docker_hook_link_points_at_the_launcher(tmp_path: Path) -> None:
    """``--docker-hook-link`` writes the Docker hook's launcher (``python -IS``, this
    installation's paths) and links ``nvidia-container-runtime-hook`` to it, not to pip's
    console script; a second install replaces both."""
    # Naming a place (--hooks-dir) keeps install from writing every runtime found in /etc.
    args = ("--hooks-dir", str(tmp_path / "hooks.d"), "--docker-hook-link", str(tmp_path / "bin"),
            "--launcher-dir", str(tmp_path / "libexec"))
    code, out = run_install(tmp_path, *args)
    assert code == 0, out
    launcher = tmp_path / "libexec/capctl-docker-hook"
    assert os.readlink(tmp_path / "bin/nvidia-container-runtime-hook") == str(launcher)
    assert launcher.read_text() == install.python_launcher_text(
        sys.executable, install.import_paths(), "capctl-docker-hook", install.DOCKER_HOOK_ENTRY,
        str(tmp_path / "libexec" / install.PACK))
    assert launcher.read_text().startswith(f"#!{sys.executable} -IS\n")
    assert os.stat(launcher).st_mode & 0o777 == 0o755
    code, out = run_install(tmp_path, *args)
    assert code == 0 and out.count("replaced own file") == 4, out  # the hooks.d file, the pack


@pytest.mark.parametrize("name", ["capctl", "capctl-docker-hook"])
def test_python_launcher_never_over_a_foreign_file(tmp_path: Path, name: str) -> None:
    (tmp_path / "libexec").mkdir()
    (tmp_path / "libexec" / name).write_text("#!/bin/sh\nexec /usr/bin/other\n")
    code, out = run_install(tmp_path, "--hooks-dir", str(tmp_path / "hooks.d"),
                            "--docker-hook-link", str(tmp_path / "bin"),
                            "--launcher-dir", str(tmp_path / "libexec"))
    assert code == 1 and "refusing" in out, out
    assert (tmp_path / "libexec" / name).read_text() == "#!/bin/sh\nexec /usr/bin/other\n"
    assert not (tmp_path / "bin").exists()


def test_cli_launcher_runs_every_command(tmp_path: Path) -> None:
    """``capctl``'s launcher (what ``/usr/local/bin/capctl``, and so the udev rules and units,
    run): ``-IS`` with this installation's paths reaches click's commands too."""
    code, out = run_install(tmp_path, "--hooks-dir", str(tmp_path / "hooks.d"),
                            "--launcher-dir", str(tmp_path / "libexec"))
    assert code == 0, out
    cli_launcher = tmp_path / "libexec/capctl"
    assert cli_launcher.read_text().startswith(f"#!{sys.executable} -IS\n")
    env = {"PATH": "/usr/bin:/bin"}
    res = subprocess.run([str(cli_launcher), "--help"], capture_output=True, text=True, env=env)
    assert res.returncode == 0 and "sync " in res.stdout, res.stderr
    res = subprocess.run([str(cli_launcher), "--root", str(tmp_path / "none"), "sync"],
                         capture_output=True, text=True, env=env)
    assert (res.returncode, res.stdout) == (1, ""), res.stderr
    assert res.stderr.startswith("capctl: error: ") and res.stderr.count("\n") == 1


def test_launcher_for_an_interpreter_path_with_a_space(tmp_path: Path) -> None:
    """A ``#!`` line cannot name it: the launcher is a shell script running ``-IS -c``."""
    spaced = tmp_path / "my venv"
    spaced.mkdir()
    (spaced / "python3").symlink_to(sys.executable)
    text = install.python_launcher_text(str(spaced / "python3"), install.import_paths(),
                                        "capctl", install.CLI_ENTRY)
    assert text.startswith("#!/bin/sh\n") and install.is_python_launcher(text, "capctl")
    launcher = tmp_path / "capctl"
    launcher.write_text(text)
    launcher.chmod(0o755)
    res = subprocess.run([str(launcher), "--version"], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin"})
    assert (res.returncode, res.stdout) == (0, VERSION_LINE), res.stderr
    with pytest.raises(install.InstallError, match="printable absolute path"):
        install.python_launcher_text("bin/python3", [], "capctl", install.CLI_ENTRY)


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
    # Its start-up pack, judged by the definition's interpreter: in full use, then not.
    assert any("OCI hook" in w and "pack" in w and "serves every module" in w for w in oks)
    assert any("Docker runtime" in w and "serves every module" in w for w in oks), found
    (tmp_path / "libexec" / install.PACK).chmod(0o664)
    found = doctor.check_runtimes([str(tmp_path / "hooks.d")], str(tmp_path / "docker/daemon.json"))
    warns = [f for f in found if f.level is doctor.Level.WARN and "start-up pack" in f.what]
    assert len(warns) == 2 and all("(writable by group or others)" in f.what for f in warns)
    assert warns[0].fix.startswith("capctl install")
    (tmp_path / "libexec" / install.PACK).chmod(0o644)
    # A definition whose import paths lost capctl (the venv moved): doctor runs its own set-up.
    bad = json.loads((tmp_path / "hooks.d/oci-capctl.json").read_text())
    bad["hook"]["args"][4] = install.interpreter_args([str(tmp_path / "gone")])[3]
    (tmp_path / "hooks.d/oci-capctl.json").write_text(json.dumps(bad))
    found = doctor.check_runtimes([str(tmp_path / "hooks.d")], str(tmp_path / "none.json"))
    fails = [f for f in found if f.level is doctor.Level.FAIL]
    assert fails and "No module named 'capctl'" in fails[0].what, found
    # The definition capctl shipped before -S: the venv's interpreter with argv[0] "python3"
    # (without site-packages on its own sys.path, it needs the venv that argv[0] finds).
    bad["hook"]["args"] = ["python3", "-I", "-c", HOOK_ENTRY, "hook"]
    (tmp_path / "hooks.d/oci-capctl.json").write_text(json.dumps(bad))
    found = doctor.check_runtimes([str(tmp_path / "hooks.d")], str(tmp_path / "none.json"))
    fails = [f for f in found if f.level is doctor.Level.FAIL]
    assert fails and "No module named 'capctl'" in fails[0].what, found
    bad["hook"]["args"][0] = sys.executable
    (tmp_path / "hooks.d/oci-capctl.json").write_text(json.dumps(bad))
    found = doctor.check_runtimes([str(tmp_path / "hooks.d")], str(tmp_path / "none.json"))
    assert not [f for f in found if f.level is doctor.Level.FAIL], found


def test_install_from_the_console_script(tmp_path: Path) -> None:
    res = subprocess.run(
        [f"{BIN}/capctl", "install", "--hooks-dir", str(tmp_path), "--dry-run"],
        capture_output=True, text=True, check=True,
    )
    assert sys.executable in res.stdout


# --- capctl-runtime's launcher ------------------------------------------------------------------


def installed_launcher(tmp: Path) -> Path:
    code, out = run_install(tmp, "--no-hooks", "--docker-config", str(tmp / "daemon.json"),
                            "--launcher-dir", str(tmp / "libexec"))
    assert code == 0, out
    return tmp / "libexec/capctl-runtime"


def fake_runtime(tmp: Path, trusted: Path) -> Path:
    """A config naming a runtime that prints its arguments, as the real one would get them
    (in ``trusted``: capctl-runtime runs no runtime others could swap)."""
    runtime = trusted / "fake-runc"
    runtime.write_text('#!/bin/sh\necho "fake-runc $*"\n')
    runtime.chmod(0o755)
    config = tmp / "capctl.toml"
    config.write_text(f'[runtime]\nruntime = "{runtime}"\n')
    config.chmod(0o644)
    return config


def test_launcher_is_written_executable_as_a_shell_script(tmp_path: Path) -> None:
    launcher = installed_launcher(tmp_path)
    st = launcher.stat()
    assert st.st_mode & 0o7777 == 0o755 and st.st_uid == os.geteuid()
    lines = launcher.read_text().splitlines()
    assert lines[0] == "#!/bin/sh" and lines[1] == install.LAUNCHER_MARK
    values = install.launcher_values(launcher.read_text())
    assert values is not None and values["python"] == sys.executable
    assert values["runtime"] == "/usr/sbin/runc"  # the default config names none
    # Docker is pointed at it; pip's console script stays installed.
    daemon = json.loads((tmp_path / "daemon.json").read_text())
    assert daemon["runtimes"]["capctl"]["path"] == str(launcher)
    assert Path(BIN, "capctl-runtime").is_file()


def launcher_for(tmp: Path, config: Path) -> Path:
    code, out = run_install(tmp, "--no-hooks", "--docker-config", str(tmp / "daemon.json"),
                            "--launcher-dir", str(tmp / "libexec"), opts=("--config", str(config)))
    assert code == 0, out
    return tmp / "libexec/capctl-runtime"


def test_launcher_runs_python_isolated_for_create(tmp_path: Path, trusted_dir: Path) -> None:
    config = fake_runtime(tmp_path, trusted_dir)
    launcher = launcher_for(tmp_path, config)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps({"ociVersion": "1.0.2", "root": {"path": "rootfs"}, "process": {"env": []}}))
    # A PYTHONPATH shadowing capctl would break create if -I did not drop it.
    (tmp_path / "evil/capctl").mkdir(parents=True)
    (tmp_path / "evil/capctl/__init__.py").write_text("raise SystemExit('shadowed')\n")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path / "evil")}
    res = subprocess.run([str(launcher), "--capctl-config", str(config), "--root", "/r", "create",
                          "--bundle", str(bundle), "c1"],
                         capture_output=True, text=True, env=env, cwd=tmp_path / "evil")
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"fake-runc --root /r create --bundle {bundle} c1\n"


def test_launchers_python_imports_nothing_heavy_and_finds_the_dependencies(tmp_path: Path, trusted_dir: Path) -> None:
    config = fake_runtime(tmp_path, trusted_dir)
    values = install.launcher_values(launcher_for(tmp_path, config).read_text())
    assert values is not None
    # A call that is not create/run, when it reaches Python (an argument the shell cannot
    # place): the config cache is written by a first call; the second is every later call.
    argv = ["--capctl-config", str(config), "--", "state", "x"]
    subprocess.run([values["python"], "-IS", "-c", values["entry"], *argv], check=True,
                   capture_output=True)
    res = subprocess.run([values["python"], "-IS", "-X", "importtime", "-c", values["entry"],
                          *argv], capture_output=True, text=True, check=True)
    imported = {line.split("|")[-1].strip() for line in res.stderr.splitlines()[1:]}
    assert "capctl.runtime_main" in imported
    heavy = {"site", "re", "enum", "json", "pathlib", "typing", "tomllib", "click",
             "capctl.policy", "_distutils_hack"}
    assert not imported & heavy, imported & heavy
    assert not [m for m in imported if m.startswith("__editable__")]
    # create and run need capctl's dependencies, found without site through the launcher's path.
    subprocess.run([values["python"], "-IS", "-c",
                    f"{values['setup']}; import click, tomlkit, pynvml, pyroute2"],
                   check=True, cwd=tmp_path)


def test_launcher_never_replaces_a_foreign_file(tmp_path: Path) -> None:
    (tmp_path / "libexec").mkdir()
    (tmp_path / "libexec/capctl-runtime").write_text("#!/bin/sh\nexec runc \"$@\"\n")
    code, out = run_install(tmp_path, "--no-hooks", "--docker-config", str(tmp_path / "d.json"),
                            "--launcher-dir", str(tmp_path / "libexec"))
    assert code == 1 and "refusing" in out, out
    assert not (tmp_path / "d.json").exists()
    with pytest.raises(install.InstallError, match="printable absolute path"):
        install.launcher_text("python3", (), "/usr/sbin/runc", "/etc/capctl/capctl.toml")
    with pytest.raises(install.InstallError, match="printable absolute path"):
        install.launcher_text(sys.executable, (), "/usr/sbin/runc\n", "/etc/capctl/capctl.toml")


def test_naming_one_place_writes_only_that_place(tmp_path: Path) -> None:
    """With --hooks-dir alone nothing goes to /etc/docker or /etc/containerd, even where those
    exist (as on any host with docker.io and containerd installed)."""
    code, out = run_install(tmp_path, "--hooks-dir", str(tmp_path / "hooks.d"),
                            "--launcher-dir", str(tmp_path / "libexec"), "--dry-run")
    assert code == 0, out
    written = [line.split()[2].rstrip(":") for line in out.splitlines()
               if line.startswith("would write ")]
    assert written and all(p.startswith(str(tmp_path)) for p in written), written
    code, out = run_install(tmp_path, "--containerd-dir", str(tmp_path / "c"),
                            "--launcher-dir", str(tmp_path / "libexec"), "--dry-run")
    written = [line.split()[2].rstrip(":") for line in out.splitlines()
               if line.startswith("would write ")]
    assert written and all(p.startswith(str(tmp_path)) for p in written), written
    assert not any("hooks.d" in p for p in written)


@pytest.mark.parametrize(
    ("args", "own"),
    [
        (["/v/bin/python3", *install.interpreter_args(["/v/lib/python3.11/site-packages"]),
          "hook"], True),
        (["/v/bin/python3", "-I", "-c", HOOK_ENTRY, "hook"], True),  # written before -S
        (["/v/bin/python3", "-I", "-c", f"{HOOK_ENTRY}; import os", "hook"], False),
        (["/usr/bin/other-hook", "prestart"], False),
    ],
    ids=["current", "before-S", "entry-not-last", "foreign"],
)
def test_own_hook_definitions(args: list[str], own: bool) -> None:
    """install replaces a hooks.d file only when it runs capctl's hook entry, in any form
    capctl has written."""
    assert install.is_own_hook({"hook": {"path": args[0], "args": args}}) is own


# --- only root may change what the definitions run -------------------------------------------


def test_import_paths_leave_out_the_installers_environment(tmp_path: Path) -> None:
    """PYTHONPATH and the user's site-packages are the installing shell's, not the
    installation's: ``python -I`` leaves them out, and so do the root hooks."""
    evil = tmp_path / "evil" / "site-packages"
    evil.mkdir(parents=True)
    code = ("import sys; from capctl import install; "
            "print(repr(install.import_paths()))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(evil)}, check=True)
    paths = ast.literal_eval(res.stdout)
    assert str(evil) not in paths and paths == install.import_paths()


@pytest.mark.parametrize("what", ["import path", "interpreter", "launcher directory"])
def test_install_refuses_what_others_could_change(tmp_path: Path, what: str) -> None:
    others = tmp_path / "shared"
    others.mkdir()
    others.chmod(0o777)  # anyone may write here
    inst = install.Installation(sys.executable, BIN, paths=install.import_paths(),
                                launcher_dir=str(tmp_path / "libexec"))
    if what == "import path":
        inst = dataclasses.replace(inst, paths=(*inst.paths, str(others)))
    elif what == "interpreter":
        python = others / "python3"
        python.symlink_to(sys.executable)
        inst = dataclasses.replace(inst, python=str(python))
    else:
        inst = dataclasses.replace(inst, launcher_dir=str(others / "new" / "libexec"))
    with pytest.raises(install.InstallError, match=f"^{what} .*: {others} is writable by group "
                                                   "and others .*refusing"):
        install.check_trusted(inst)
    install.check_trusted(install.Installation(  # this suite's own installation passes
        sys.executable, BIN, paths=install.import_paths(), launcher_dir=str(tmp_path / "x")))


def test_a_shebang_the_kernel_would_cut_becomes_a_shell_launcher() -> None:
    """Linux cuts a #! line at 127 bytes before 5.1 (and -IS with it): such an interpreter is
    run by a /bin/sh launcher instead, with -IS kept."""
    long_python = "/opt/" + "v" * 120 + "/bin/python3"
    text = install.python_launcher_text(long_python, (), "capctl", "pass")
    assert text.startswith("#!/bin/sh\n") and f"exec {long_python} -IS -c " in text
    short = install.python_launcher_text(sys.executable, (), "capctl", "pass")
    assert short.startswith(f"#!{sys.executable} -IS\n")

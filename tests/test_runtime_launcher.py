"""``capctl install``'s shell launcher for ``capctl-runtime``: which calls reach Python, and the
exact arguments the real runtime gets; the runtime it bakes in; ``doctor``'s check of it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from capctl import doctor, install, runtime_main
from capctl.cli import cli

#: Prints who ran and every argument, NUL-terminated: what the launcher handed on, exactly.
RECORDER = "#!/bin/sh\nprintf '%s\\0' {who} \"$@\"\n"

RUNTIME, PYTHON = "runtime", "python"
C = ["--capctl-config", "/etc/x.toml"]

#: (arguments, who runs, arguments it gets); PYTHON gets them all, RUNTIME less capctl's option.
CASES: list[tuple[list[str], str, list[str]]] = [
    # Every subcommand but create/run goes straight to the runtime.
    *[([v, "c1"], RUNTIME, [v, "c1"]) for v in
      ("start", "state", "delete", "pause", "resume", "ps", "events", "exec", "update",
       "checkpoint", "restore", "list", "spec", "features", "help", "Create")],
    (["kill", "c1", "KILL"], RUNTIME, ["kill", "c1", "KILL"]),
    (["create", "--bundle", "/b", "c1"], PYTHON, ["create", "--bundle", "/b", "c1"]),
    (["run", "-d", "c1"], PYTHON, ["run", "-d", "c1"]),
    (["create"], PYTHON, ["create"]),
    # capctl's option, first, in both forms: dropped for the runtime, kept for Python.
    ([*C, "state", "c1"], RUNTIME, ["state", "c1"]),
    (["--capctl-config=/etc/x.toml", "delete", "c1"], RUNTIME, ["delete", "c1"]),
    ([*C, "create", "c1"], PYTHON, [*C, "create", "c1"]),
    (["--capctl-config=/x", "run", "c1"], PYTHON, ["--capctl-config=/x", "run", "c1"]),
    (["--capctl-config", "--root", "state", "c1"], RUNTIME, ["state", "c1"]),  # FILE "--root"
    # Without its value, empty, or twice: Python reports it.
    (["--capctl-config"], PYTHON, ["--capctl-config"]),
    (["--capctl-config", "", "state"], PYTHON, ["--capctl-config", "", "state"]),
    (["--capctl-config=", "state"], PYTHON, ["--capctl-config=", "state"]),
    ([*C, *C, "state"], PYTHON, [*C, *C, "state"]),
    (["--root", "/r", *C, "state"], PYTHON, ["--root", "/r", *C, "state"]),
    # runc's valued options: --opt v, --opt=v, -opt v, -opt=v; the value may look like anything.
    *[([*C, form, val, "state", "c"], RUNTIME, [form, val, "state", "c"])
      for opt, val in (("root", "/r"), ("log", "/l"), ("log-format", "json"),
                       ("criu", "/c"), ("rootless", "true"))
      for form in (f"--{opt}", f"-{opt}")],
    *[([f"{d}{opt}=x", "create", "c"], PYTHON, [f"{d}{opt}=x", "create", "c"])
      for opt in ("root", "log", "log-format", "criu", "rootless") for d in ("--", "-")],
    (["--root", "create", "start", "c1"], RUNTIME, ["--root", "create", "start", "c1"]),
    (["--root", "run", "create", "c1"], PYTHON, ["--root", "run", "create", "c1"]),
    (["--log", "--debug", "delete", "c1"], RUNTIME, ["--log", "--debug", "delete", "c1"]),
    (["--root", "-", "state"], RUNTIME, ["--root", "-", "state"]),
    # runc's flags, bare or =value; --debug takes no separate value.
    *[([f, "state", "c"], RUNTIME, [f, "state", "c"])
      for f in ("--debug", "-debug", "--debug=true", "--systemd-cgroup", "-systemd-cgroup",
                "--systemd-cgroup=false", "--help", "-h", "--version", "-v", "-v=true")],
    (["--debug", "true", "create"], RUNTIME, ["--debug", "true", "create"]),  # "true": a command
    (["--systemd-cgroup", "create", "c"], PYTHON, ["--systemd-cgroup", "create", "c"]),
    # dockerd's and containerd's shim's calls.
    (["--root", "/var/run/docker/runtime-runc/moby", "--log", "/run/x/log.json", "--log-format",
      "json", "--systemd-cgroup", "create", "--bundle", "/b", "--pid-file", "/p", "c1"],
     PYTHON, ["--root", "/var/run/docker/runtime-runc/moby", "--log", "/run/x/log.json",
              "--log-format", "json", "--systemd-cgroup", "create", "--bundle", "/b",
              "--pid-file", "/p", "c1"]),
    (["--root", "/run/containerd/runc/k8s.io", "--log", "/l", "--log-format", "json", "delete",
      "--force", "c1"], RUNTIME,
     ["--root", "/run/containerd/runc/k8s.io", "--log", "/l", "--log-format", "json", "delete",
      "--force", "c1"]),
    # No subcommand: the runtime answers (its help, version or error).
    ([], RUNTIME, []),
    (C, RUNTIME, []),
    (["--root"], RUNTIME, ["--root"]),
    (["--root", "/r", "--debug"], RUNTIME, ["--root", "/r", "--debug"]),
    # What the shell does not place goes to Python: --, -, unknown options.
    (["--", "create", "c"], PYTHON, ["--", "create", "c"]),
    (["--root", "/r", "--", "state"], PYTHON, ["--root", "/r", "--", "state"]),
    (["-", "state"], PYTHON, ["-", "state"]),
    (["--bogus", "state"], PYTHON, ["--bogus", "state"]),
    (["---root", "/r", "state"], PYTHON, ["---root", "/r", "state"]),
    # After the subcommand nothing is looked at.
    (["state", "--", "create"], RUNTIME, ["state", "--", "create"]),
    (["delete", "run"], RUNTIME, ["delete", "run"]),
    (["kill", "--all", "create"], RUNTIME, ["kill", "--all", "create"]),
    # Arguments are data: spaces, globs, substitutions, newlines, empty words pass unchanged.
    ([*C, "--root", "/a b", "state", "*", "$(touch pwned)", "`touch pwned`", "a\nb", "", "'\""],
     RUNTIME, ["--root", "/a b", "state", "*", "$(touch pwned)", "`touch pwned`", "a\nb", "",
               "'\""]),
    (["", "create"], RUNTIME, ["", "create"]),  # "" is the subcommand
]


def recorder(path: Path, who: str) -> str:
    path.write_text(RECORDER.format(who=who))
    path.chmod(0o755)
    return str(path)


@pytest.fixture(scope="module")
def launcher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A launcher whose runtime and Python both record their arguments (neither is real)."""
    tmp = tmp_path_factory.mktemp("launcher")
    text = install.launcher_text(recorder(tmp / "py", PYTHON), ["/nowhere"],
                                 recorder(tmp / "rt", RUNTIME), "/etc/capctl/capctl.toml")
    path = tmp / "capctl-runtime"
    path.write_text(text)
    path.chmod(0o755)
    return path


def run(launcher: Path, args: list[str]) -> tuple[str, list[str]]:
    res = subprocess.run([str(launcher), *args], capture_output=True, check=True,
                         cwd=launcher.parent, env={"PATH": "/usr/bin:/bin"})
    words = res.stdout.decode().split("\0")
    assert words[-1] == ""
    who, rest = words[0], words[1:-1]
    if who == PYTHON:  # python -IS -c ENTRY ARGS...
        assert rest[:2] == ["-IS", "-c"] and "runtime_main import main" in rest[2]
        rest = rest[3:]
    return who, rest


@pytest.mark.parametrize(("args", "who", "argv"), CASES, ids=[repr(c[0])[:60] for c in CASES])
def test_argument_table(launcher: Path, args: list[str], who: str, argv: list[str]) -> None:
    assert run(launcher, args) == (who, argv)
    assert not (launcher.parent / "pwned").exists()
    # What the shell sends on without Python, Python's own parsing agrees is not create/run.
    if who == RUNTIME:
        try:
            _, rest = runtime_main.split_args(args)
        except SystemExit:
            return
        i = runtime_main.subcommand(rest)
        assert i is None or rest[i] not in ("create", "run")


def test_python_subcommand_takes_runcs_option_forms() -> None:
    sub = runtime_main.subcommand
    assert sub(["-root", "/r", "create"]) == 2
    assert sub(["--root=/r", "--debug", "run"]) == 2
    assert sub(["--", "create"]) == 1 and sub(["--root", "/r", "--"]) is None


# --- with the real install: a runtime, an interpreter that cannot start ---------------------------


def fake_runc(tmp: Path) -> Path:
    path = tmp / "sbin/fake-runc"
    path.parent.mkdir()
    recorder(path, RUNTIME)
    return path


def config_naming(tmp: Path, runtime: Path | str) -> Path:
    config = tmp / "capctl.toml"
    config.write_text(f'[runtime]\nruntime = "{runtime}"\n')
    config.chmod(0o644)
    return config


def install_launcher(tmp: Path, config: Path) -> tuple[int, str]:
    res = CliRunner().invoke(
        cli, ["--config", str(config), "install", "--no-hooks", "--docker-config",
              str(tmp / "daemon.json"), "--launcher-dir", str(tmp / "libexec")],
        catch_exceptions=False,
    )  # fmt: skip
    return res.exit_code, res.output


def test_only_create_and_run_start_python(tmp_path: Path, trusted_dir: Path) -> None:
    config = config_naming(tmp_path, fake_runc(trusted_dir))
    assert install_launcher(tmp_path, config)[0] == 0
    launcher = tmp_path / "libexec/capctl-runtime"
    values = install.launcher_values(launcher.read_text())
    assert values is not None and values["runtime"] == str(trusted_dir / "sbin/fake-runc")
    # The interpreter it names is gone: every call but create/run still works.
    broken = launcher.read_text().replace(f"python={values['python']}\n",
                                          "python=/nonexistent/python3\n")
    launcher.write_text(broken)
    for verb in ("start", "state", "kill", "delete"):
        res = subprocess.run([str(launcher), "--capctl-config", str(config), "--root", "/r",
                              verb, "c1"], capture_output=True)
        assert res.returncode == 0 and res.stdout == f"runtime\0--root\0/r\0{verb}\0c1\0".encode()
    for verb in ("create", "run"):
        failed = subprocess.run([str(launcher), "--capctl-config", str(config), verb, "c1"],
                                capture_output=True, text=True)
        assert failed.returncode == 127 and "/nonexistent/python3" in failed.stderr


@pytest.mark.parametrize("problem", ["missing", "not-root", "group-writable", "directory",
                                     "link-to-a-users-directory", "in-tmp"])
def test_install_refuses_a_runtime_it_cannot_bake_in(
    tmp_path: Path, problem: str, trusted_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    runtime = fake_runc(trusted_dir)
    if problem == "link-to-a-users-directory":
        # The review's reproduction: a root-owned link to a root-owned copy of runc in a
        # directory owned by nobody, who could then swap the file and run as root.
        users = trusted_dir / "nobody"
        users.mkdir()
        os.rename(runtime, users / "runc")
        os.chown(users, 65534, 65534)
        runtime.symlink_to(users / "runc")
    elif problem == "in-tmp":
        runtime = fake_runc(tmp_path_factory.mktemp("in-tmp"))  # under /tmp
    elif problem == "missing":
        runtime.unlink()
    elif problem == "not-root":
        os.chown(runtime, 1000, 1000)
    elif problem == "group-writable":
        runtime.chmod(0o775)
    else:
        runtime.unlink()
        runtime.mkdir()
    code, out = install_launcher(tmp_path, config_naming(tmp_path, runtime))
    assert code == 1 and "[runtime] runtime" in out, out
    assert not (tmp_path / "libexec").exists() and not (tmp_path / "daemon.json").exists()
    if problem == "link-to-a-users-directory":
        assert f"{trusted_dir}/nobody is owned by uid 65534, not root" in out


def test_install_bakes_in_the_resolved_runtime(tmp_path: Path, trusted_dir: Path) -> None:
    runtime = fake_runc(trusted_dir)
    (trusted_dir / "bin").mkdir()
    (trusted_dir / "bin/runc").symlink_to(runtime)
    assert install_launcher(tmp_path, config_naming(tmp_path, trusted_dir / "bin/runc"))[0] == 0
    values = install.launcher_values((tmp_path / "libexec/capctl-runtime").read_text())
    assert values is not None and values["runtime"] == str(runtime)


def test_doctor_flags_a_runtime_others_could_swap(tmp_path: Path, trusted_dir: Path) -> None:
    """Baked into a launcher or read by pip's console script at every call: either way doctor
    says that capctl-runtime refuses it, with the fix."""
    config = config_naming(tmp_path, fake_runc(trusted_dir))
    assert install_launcher(tmp_path, config)[0] == 0
    (trusted_dir / "sbin").chmod(0o777)  # after install: anyone may now swap the runtime
    daemon = tmp_path / "daemon.json"
    doc = json.loads(daemon.read_text())
    doc["runtimes"]["capctl"]["runtimeArgs"] = ["--capctl-config", str(config)]
    daemon.write_text(json.dumps(doc))
    fails = [f for f in doctor.check_docker_runtime(str(daemon)) if f.level is doctor.Level.FAIL]
    assert len(fails) == 1 and "is not safe to run as root" in fails[0].what, fails
    assert f"{trusted_dir}/sbin is writable by group and others" in fails[0].what
    assert "root-owned directories" in fails[0].fix
    # pip's console script instead of the launcher: it reads the config at every call.
    doc["runtimes"]["capctl"]["path"] = str(Path(sys.executable).parent / "capctl-runtime")
    daemon.write_text(json.dumps(doc))
    fails = [f for f in doctor.check_docker_runtime(str(daemon)) if f.level is doctor.Level.FAIL]
    assert len(fails) == 1 and "is not safe to run as root" in fails[0].what, fails


def test_reinstall_replaces_an_earlier_python_launcher(tmp_path: Path, trusted_dir: Path) -> None:
    (tmp_path / "libexec").mkdir()
    old = f"#!{sys.executable} -IS\n{install.LAUNCHER_MARK}\nimport sys\n"
    (tmp_path / "libexec/capctl-runtime").write_text(old)
    code, out = install_launcher(tmp_path, config_naming(tmp_path, fake_runc(trusted_dir)))
    assert code == 0 and "replaced own file" in out, out
    assert (tmp_path / "libexec/capctl-runtime").read_text().startswith("#!/bin/sh\n")


def test_doctor_flags_a_launcher_whose_runtime_is_not_the_configs(tmp_path: Path, trusted_dir: Path) -> None:
    runtime = fake_runc(trusted_dir)
    config = config_naming(tmp_path, runtime)
    assert install_launcher(tmp_path, config)[0] == 0
    # Docker's entry names the config (runtimeArgs), the one doctor compares with.
    daemon = tmp_path / "daemon.json"
    doc = json.loads(daemon.read_text())
    doc["runtimes"]["capctl"]["runtimeArgs"] = ["--capctl-config", str(config)]
    daemon.write_text(json.dumps(doc))
    found = doctor.check_docker_runtime(str(daemon))
    assert all(f.level is doctor.Level.OK for f in found), found
    assert any("imports capctl" in f.what for f in found), found
    config_naming(tmp_path, "/usr/sbin/runc")  # changed, and install not re-run
    found = doctor.check_docker_runtime(str(daemon))
    fails = [f for f in found if f.level is doctor.Level.FAIL]
    assert len(fails) == 1 and str(runtime) in fails[0].what and "/usr/sbin/runc" in fails[0].what
    assert fails[0].fix.startswith("capctl install")


def test_doctor_checks_the_containerd_and_crio_entries(tmp_path: Path, trusted_dir: Path) -> None:
    config = config_naming(tmp_path, fake_runc(trusted_dir))
    res = CliRunner().invoke(
        cli, ["--config", str(config), "install", "--no-hooks", "--containerd-dir",
              str(tmp_path / "ctd"), "--crio-dir", str(tmp_path / "crio"), "--launcher-dir",
              str(tmp_path / "libexec")],
        catch_exceptions=False,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    launcher = tmp_path / "libexec/capctl-runtime"
    launcher.write_text(launcher.read_text().replace(f"python={sys.executable}\n",
                                                     "python=/nonexistent/python3\n"))
    found = doctor.check_snippets(str(tmp_path / "ctd"), str(tmp_path / "crio"))
    fails = [f.what for f in found if f.level is doctor.Level.FAIL and "cannot import" in f.what]
    assert len(fails) == 2 and "99-capctl.toml" in fails[0] and "99-capctl.conf" in fails[1]


@pytest.mark.parametrize(("argv", "read"), [
    (["state", "c1"], "baked"),
    (["--capctl-config", "{given}", "state", "c1"], "given"),
], ids=["baked", "command-line-wins"])
def test_the_wrapper_reads_the_config_the_launcher_baked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str], read: str) -> None:
    """containerd's BinaryName takes no arguments: a launcher installed with --config C bakes
    C into its Python entry, and the wrapper reads C unless --capctl-config names another."""
    paths = {n: tmp_path / f"{n}.toml" for n in ("baked", "given")}
    for p in paths.values():
        p.write_text("")
        p.chmod(0o666)  # refused, naming the file: shows which one was read
    entry = install.python_entry([], "/usr/sbin/runc", str(paths["baked"]))
    assert entry.endswith(f"main(runtime='/usr/sbin/runc', config={str(paths['baked'])!r})")
    assert "config=" not in install.python_entry([], "/usr/sbin/runc")  # the default: none
    monkeypatch.setattr(sys, "argv", ["capctl-runtime", *[a.format(given=paths["given"])
                                                          for a in argv]])
    with pytest.raises(SystemExit) as err:
        runtime_main.main(runtime="/usr/sbin/runc", config=str(paths["baked"]))
    assert f"{paths[read]}: " in str(err.value.code)


def test_doctor_compares_a_containerd_launcher_with_the_config_it_bakes(
        tmp_path: Path, trusted_dir: Path) -> None:
    """containerd names no config: the launcher's own (baked by ``install --config``) is the
    one its wrapper reads, so it is the one doctor compares the baked runtime with."""
    runtime = fake_runc(trusted_dir)
    config = config_naming(tmp_path, runtime)
    res = CliRunner().invoke(
        cli, ["--config", str(config), "install", "--no-hooks", "--containerd-dir",
              str(tmp_path / "ctd"), "--launcher-dir", str(tmp_path / "libexec")],
        catch_exceptions=False)
    assert res.exit_code == 0, res.output
    values = install.launcher_values((tmp_path / "libexec/capctl-runtime").read_text())
    assert values is not None and values["config"] == str(config)
    found = doctor.check_snippets(str(tmp_path / "ctd"), str(tmp_path / "nocrio"))
    assert [f for f in found if f.level is doctor.Level.FAIL] == [], found
    assert any(f"as {config} says" in f.what for f in found), found
    config_naming(tmp_path, "/usr/sbin/runc")  # changed, and install not re-run
    found = doctor.check_snippets(str(tmp_path / "ctd"), str(tmp_path / "nocrio"))
    fails = [f for f in found if f.level is doctor.Level.FAIL]
    assert len(fails) == 1 and f"[runtime] runtime of {config}" in fails[0].what, fails

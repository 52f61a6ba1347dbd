"""``capctl doctor``: what is present, missing or wrong on this host, and the fix for each.

Each check is a small function returning :class:`Finding` objects; none of them writes
anything.  The driver checks look under the host root (``--root``); cgroup and runtime checks
look at the real machine, as the hook would.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from capctl import install, trustedpath
from capctl.devfs import sync
from capctl.devfs.nodes import Action
from capctl.driver import capnames, procfs
from capctl.errors import CapctlError, CgroupError
from capctl.host import DEFAULT_CONFIG, Host, is_root_owned_safe


class Level(Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Finding:
    level: Level
    what: str
    fix: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"level": self.level.value, "what": self.what, "fix": self.fix or None}


def check_host(host: Host) -> list[Finding]:
    """Where the driver root and the topology came from (options, CAPCTL_*, [host],
    defaults: the one precedence of every entry point)."""
    return [Finding(Level.OK, host.describe())]


def _no_driver_fix(host: Host) -> str:
    """The fix for a root without the driver: load it, unless the root is not ``/``, where
    the admin's setting is the likelier fault."""
    if host.root == "/":
        return "load the nvidia kernel module (modprobe nvidia)"
    return (f"check the driver root {host.root} (from {host.root_from}): a containerized "
            "driver's root is usually /run/nvidia/driver, and its driver container must be "
            "running")


def check_driver(host: Host) -> list[Finding]:
    out: list[Finding] = []
    under = "" if host.root == "/" else f" under the driver root {host.root} ({host.root_from})"
    try:
        majors = procfs.load_majors(host)
    except CapctlError as err:
        return [Finding(Level.FAIL, f"{err}{under}", _no_driver_fix(host))]
    if majors.frontend is None:
        out.append(
            Finding(
                Level.FAIL,
                "nvidia driver not loaded (no nvidia or nvidia-frontend major in "
                f"{host.display('proc/devices')}){under}",
                _no_driver_fix(host),
            )
        )
    else:
        out.append(Finding(Level.OK, f"nvidia driver loaded (GPU major {majors.frontend})"))
    if majors.uvm is None:
        out.append(
            Finding(Level.WARN, "nvidia-uvm not loaded: CUDA needs it", "modprobe nvidia-uvm")
        )
    mig_minors = host.path(f"{capnames.MINORS_DIR}/mig-minors")
    capdir = host.path(capnames.CAPABILITIES_DIR)
    if os.path.exists(mig_minors) and majors.caps is not None:
        out.append(
            Finding(
                Level.OK, f"capabilities use the /dev interface (nvidia-caps major {majors.caps})"
            )
        )
    elif os.path.exists(capdir):
        out.append(
            Finding(
                Level.FAIL,
                f"capability files under {capdir} but no {mig_minors}: every driver since R450 "
                "publishes it (docs/driver.md, \"Minors files\")",
                "check that --root is the driver's root and its /proc is complete; "
                "upgrade a driver older than R450",
            )
        )
    elif majors.frontend is not None:
        out.append(
            Finding(
                Level.FAIL, f"{mig_minors} missing: driver older than R450?", "upgrade the driver"
            )
        )
    return out


def check_nodes(host: Host) -> list[Finding]:
    try:
        state = procfs.load(host)
    except CapctlError as err:
        return [Finding(Level.FAIL, str(err), "fix the driver installation (see above)")]
    from capctl.policy import delegate

    try:
        owned = delegate.ownership(host)
    except CapctlError as err:
        return [Finding(Level.FAIL, str(err), f"fix or remove {host.config}")]
    plan = sync.plan(state, everything=False, grants=owned)
    report = sync.apply(host, state, plan, dry_run=True)
    out = [
        Finding(Level.OK, f"{len(state.table)} capabilities known, {len(state.existing)} exist now")
    ]
    missing = [c for c in report.changes if c.action is Action.CREATED]
    wrong = [c for c in report.changes if c.action is Action.REPAIRED]
    if missing:
        out.append(
            Finding(
                Level.FAIL,
                f"{len(missing)} capability nodes missing (e.g. {missing[0].path})",
                "capctl sync",
            )
        )
    for change in wrong[:5]:
        out.append(Finding(Level.FAIL, f"{change.path}: {change.reason}", "capctl sync"))
    if len(wrong) > 5:
        out.append(Finding(Level.FAIL, f"... and {len(wrong) - 5} more wrong nodes", "capctl sync"))
    for change in report.removed:
        out.append(
            Finding(Level.FAIL, f"{change.path}: stray node: {change.reason}", "capctl sync")
        )
    if not missing and not wrong and not len(report.removed):
        out.append(Finding(Level.OK, f"all {len(report.changes)} capability nodes in place"))
    if plan.skipped:
        out.append(
            Finding(
                Level.WARN,
                f"{len(plan.skipped)} capabilities have DeviceFileModify: 0 and no "
                f"capctl grant (e.g. {plan.skipped[0].name}); capctl leaves them alone",
            )
        )
    return out


def check_cgroups(
    cgroup_root: Path = Path("/sys/fs/cgroup"), magic: Callable[[Path], int] | None = None
) -> list[Finding]:
    """The cgroup version, decided exactly as the hook decides it (:mod:`capctl.cgroup.discovery`:
    the file system type of ``cgroup_root`` from our ``mountinfo``); ``magic`` is a statfs
    stand-in for fake trees."""
    from capctl.cgroup import discovery

    try:
        if magic is not None:
            unified = magic(cgroup_root) == discovery.CGROUP2_SUPER_MAGIC
        else:
            mountinfo = Path(discovery.PROC, "self/mountinfo")
            try:
                text = mountinfo.read_text()
            except OSError as err:
                raise CgroupError(f"{mountinfo}: {err.strerror}") from err
            unified = discovery.is_cgroup2(cgroup_root, discovery.parse_mountinfo(text, str(mountinfo)))
    except CapctlError as err:
        return [Finding(Level.WARN, str(err))]
    if unified:
        return [
            Finding(
                Level.OK, "cgroup v2 (unified): containers get device access through eBPF programs"
            )
        ]
    if (cgroup_root / "devices/devices.list").exists():
        return [Finding(Level.OK, "cgroup v1 (hybrid/legacy) with the devices controller")]
    return [
        Finding(
            Level.FAIL,
            "no cgroup v2 at /sys/fs/cgroup and no v1 devices controller",
            "mount the devices controller at /sys/fs/cgroup/devices",
        )
    ]


CONTAINERD_CONFIG = "/etc/containerd/config.toml"


def _driver_hints(docker_config: str, containerd_config: str) -> list[str]:
    """What the runtimes' own configuration says about their cgroup driver (text checks)."""
    hints: list[str] = []
    for path, needle, name in (
        (docker_config, "native.cgroupdriver=systemd", "docker (exec-opts)"),
        (containerd_config, "SystemdCgroup = true", "containerd (SystemdCgroup)"),
    ):
        try:
            text = Path(path).read_text()
        except OSError:
            continue
        hints.append(f"{name}: {'systemd' if needle in text else 'cgroupfs'}")
    return hints


def check_systemd(
    run_dir: str | None = None,
    bus_socket: str = "/run/dbus/system_bus_socket",
    docker_config: str = "/etc/docker/daemon.json",
    containerd_config: str = CONTAINERD_CONFIG,
) -> list[Finding]:
    """The cgroup driver in use, as far as the host tells, and whether grants survive
    ``systemctl daemon-reload`` (docs/systemd.md)."""
    from capctl.cgroup import systemd

    if not systemd.systemd_booted(run_dir or systemd.SYSTEMD_RUN_DIR):
        return [
            Finding(
                Level.OK,
                "cgroup driver: cgroupfs (systemd is not the init system): nothing re-applies"
                " device rules, grants stay",
            )
        ]
    hints = _driver_hints(docker_config, containerd_config)
    out = [
        Finding(
            Level.OK,
            "systemd is the init system: runtimes may use either cgroup driver; with the systemd"
            " driver each container is a unit (e.g. system.slice/<runtime>-<id>.scope) and"
            " 'systemctl daemon-reload' re-applies its DeviceAllow="
            + (f" ({'; '.join(hints)})" if hints else ""),
        )
    ]
    try:
        import jeepney  # noqa: F401
    except ImportError:
        out.append(
            Finding(
                Level.FAIL,
                "grants are not daemon-reload-safe: the D-Bus client jeepney is not installed",
                "install capctl with its dependencies (pip install jeepney)",
            )
        )
        return out
    if not os.path.exists(bus_socket):
        out.append(
            Finding(
                Level.FAIL,
                f"grants are not daemon-reload-safe under the systemd driver: no system bus at"
                f" {bus_socket}, so the hook cannot add DeviceAllow= (it refuses the start)",
                "start dbus (systemctl start dbus)",
            )
        )
        return out
    out.append(
        Finding(
            Level.OK,
            "grants are daemon-reload-safe: the hook adds DeviceAllow=/dev/char/M:m to a"
            " container's systemd unit over D-Bus; cgroupfs-driver containers are not touched"
            " by systemd",
        )
    )
    return out


HOOK_DIRS = ("/usr/share/containers/oci/hooks.d", "/etc/containers/oci/hooks.d")
DOCKER_CONFIG = "/etc/docker/daemon.json"
CONTAINERD_DIR = install.CONTAINERD_DIR
CRIO_DIR = install.CRIO_DIR


def imports_capctl(path: str, argv: Sequence[str], env: Sequence[str]) -> str | None:
    """Run ``path`` as a definition runs it (same ``argv[0]``, interpreter options, ``sys.path``
    set-up and env), importing the hook instead of running it.

    None when it imports; else why not.  ``argv`` is the definition's ``args``: for one that
    runs ``-c "<set-up>; <hook entry>"`` (:func:`capctl.install.interpreter_args`) the set-up
    is kept; otherwise ``argv[0] -I`` is tried.  ``argv[0]`` matters without an explicit
    set-up: a venv interpreter started as ``python3`` finds itself on ``PATH`` and loses its
    site-packages.
    """

    probe = [argv[0], "-I", "-c", "import capctl.main"]
    setup = definition_setup(argv)
    if setup is not None:
        i = list(argv).index("-c")
        probe = [*argv[:i], "-c", f"{setup}; import capctl.deliver.hook" if setup
                 else "import capctl.deliver.hook"]
    return _probe(probe, path, dict(e.split("=", 1) for e in env if "=" in e))[0]


def _probe(argv: Sequence[str], python: str, env: dict[str, str]) -> tuple[str | None, str]:
    """Run ``argv`` with ``python`` as the program: ``(None, its output)`` if it succeeds,
    else ``(why not, "")``: its last line on stderr, or what kept it from running."""
    try:
        res = subprocess.run(list(argv), executable=python, env=env, capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"cannot run {python}: {err}", ""
    if res.returncode != 0:
        lines = res.stderr.strip().splitlines()
        return lines[-1] if lines else f"exit status {res.returncode}", ""
    return None, res.stdout


def check_pack(where: str, python: str, argv0: str, setup: str) -> Finding | None:
    """The start-up pack a definition's set-up loads (:mod:`capctl.modpack`), judged by the
    definition's interpreter; None if the set-up loads none."""
    paths, pack = install.split_pack(setup)
    if pack is None:
        return None
    code = f"{paths}; from capctl.modpack import problem; print(problem({pack!r}) or '')"
    failed, said = _probe([argv0, "-I", "-S", "-c", code], python, {})
    why = failed or said.strip()
    if not why:
        return Finding(Level.OK, f"{where}: its start-up pack {pack} serves every module")
    return Finding(
        Level.WARN,
        f"{where}: its start-up pack {pack} is not used in full ({why}): capctl's modules load "
        "from their files, about 2 ms more per container start",
        "capctl install (builds the pack again)")


def definition_setup(argv: Sequence[str]) -> str | None:
    """The set-up of a definition that runs ``-c "<set-up>; <hook entry>"``; else None."""
    if "-c" not in argv:
        return None
    i = list(argv).index("-c")
    return install.entry_setup(argv[i + 1]) if i + 1 < len(argv) else None


def interpreter_of(program: str, argv0: str) -> tuple[str, str] | str:
    """The interpreter a definition runs, as (path, argv[0]); or why it cannot be found.

    A Python interpreter runs as itself; a console script (``capctl``, ``capctl-runtime``)
    runs its ``#!`` line's interpreter.
    """
    if os.path.basename(program).startswith("python"):
        return program, argv0
    try:
        with open(program, "rb") as f:
            first = f.readline(4096).decode(errors="replace")
    except OSError as err:
        return f"{program}: {err.strerror or err}"
    if not first.startswith("#!") or not first[2:].split():
        return f"{program}: no #! line naming an interpreter"
    python = first[2:].split()[0]
    return python, python


def check_definition(where: str, program: str, argv: Sequence[str],
                     env: Sequence[str]) -> list[Finding]:
    """Whether one installed definition's interpreter imports capctl, and its pack's state."""
    found = interpreter_of(program, argv[0])
    if isinstance(found, str):
        why: str | None = found
    else:
        python, argv0 = found
        why = imports_capctl(python, [argv0, *argv[1:]] if python == program else [argv0], env)
    if why is not None:
        return [Finding(Level.FAIL, f"{where}: its interpreter cannot import capctl: {why}",
                        "capctl install (writes the definitions for this installation)")]
    out = [Finding(Level.OK, f"{where}: runs {program}, which imports capctl")]
    setup = definition_setup(argv) if python == program else None
    pack = None if setup is None else check_pack(where, python, argv0, setup)
    return out if pack is None else [*out, pack]


def check_hook_file(path: str) -> list[Finding] | None:
    """One hooks.d file: None if it does not mention capctl, else whether it can run capctl."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as err:
        return [Finding(Level.WARN, f"{path}: unreadable ({err.strerror})")]
    if "capctl" not in text:
        return None
    try:
        doc = json.loads(text)
        hook = doc["hook"]
        program = str(hook["path"])
        args = hook.get("args") or [program]
        env = [str(e) for e in hook.get("env", [])]
    except (ValueError, KeyError, TypeError) as err:
        return [Finding(Level.FAIL, f"{path}: not a hooks.d definition ({err})",
                        "capctl install")]
    return check_definition(f"OCI hook {path}", program, [str(a) for a in args], env)


def runs_entry(python: str, setup: str) -> str | None:
    """None if ``python -IS`` with the launcher's ``sys.path`` set-up imports what ``create``
    needs; else why not."""
    return _probe([python, "-IS", "-c", f"{setup}; import capctl.deliver.runtime"], python, {})[0]


def check_launcher(where: str, program: str, config: str) -> list[Finding] | None:
    """``capctl install``'s shell launcher: its Python imports capctl, and the runtime it
    baked in is still ``[runtime] runtime`` of ``config`` (the entry's command line gives), or
    of the config the launcher hands the wrapper when it bakes one in and ``config`` is the
    default (containerd and CRI-O give none).  None if ``program`` is not one."""
    from capctl.policy import settings

    try:
        with open(program, "rb") as f:
            values = install.launcher_values(f.read(1 << 16).decode(errors="replace"))
    except OSError:
        return None
    if values is None:
        return None
    if config == DEFAULT_CONFIG:
        config = values["config"]
    out: list[Finding] = []
    why = runs_entry(values["python"], values["setup"])
    if why is not None:
        out.append(Finding(Level.FAIL, f"{where}: {program}'s interpreter cannot import capctl: "
                           f"{why}", "capctl install (writes the launcher for this installation)"))
    else:
        out.append(Finding(Level.OK, f"{where}: runs {program}, whose interpreter imports capctl"))
        pack = check_pack(where, values["python"], values["python"], values["setup"])
        if pack is not None:
            out.append(pack)
    try:
        configured = settings.load_runtime(config)
    except CapctlError as err:
        return [*out, Finding(Level.FAIL, str(err), f"fix {config}")]
    baked = values["runtime"]
    unsafe = runtime_path_finding(where, baked)
    if unsafe is not None:
        return [*out, unsafe]
    try:
        want = trustedpath.resolve(configured)
    except trustedpath.UnsafePath:
        want = configured
    if baked != want:
        out.append(Finding(
            Level.FAIL,
            f"{where}: {program} runs {baked}, but [runtime] runtime of {config} is {configured}",
            "capctl install (the launcher bakes the runtime in when it is written)",
        ))
    else:
        out.append(Finding(Level.OK, f"{where}: {program} runs {baked}, as {config} says, "
                           "and only root can change it"))
    return out


def runtime_path_finding(where: str, runtime: str) -> Finding | None:
    """A FAIL when someone other than root could change what ``runtime`` runs (the rule
    ``capctl install`` and ``capctl-runtime`` apply: :mod:`capctl.trustedpath`)."""
    try:
        trustedpath.resolve(runtime)
    except trustedpath.UnsafePath as err:
        return Finding(
            Level.FAIL,
            f"{where}: the real runtime {runtime} is not safe to run as root: {err}; "
            "capctl-runtime refuses it",
            "keep the runtime in root-owned directories that group and others cannot write "
            "(for example /usr/sbin/runc), set [runtime] runtime to it, then capctl install",
        )
    return None


def _runtime_config(args: object) -> str:
    """The config ``capctl-runtime`` reads given the arguments its caller puts first."""
    from capctl.runtime_main import split_args

    if isinstance(args, list) and all(isinstance(a, str) for a in args):
        try:
            return split_args(list(args))[0] or DEFAULT_CONFIG
        except SystemExit:
            pass
    return DEFAULT_CONFIG


def check_runtime_program(where: str, program: str, config: str) -> list[Finding]:
    """A runtime entry's program: capctl's launcher, else a script whose ``#!`` runs Python
    and reads the real runtime from ``config`` at every call."""
    from capctl.policy import settings

    found = check_launcher(where, program, config)
    if found is not None:
        return found
    out = check_definition(where, program, [program], [])
    try:
        runtime = settings.load_runtime(config)
    except CapctlError as err:
        return [*out, Finding(Level.FAIL, str(err), f"fix {config}")]
    unsafe = runtime_path_finding(where, runtime)
    return [*out, unsafe] if unsafe is not None else out


def check_snippets(containerd_dir: str, crio_dir: str) -> list[Finding]:
    """containerd's and CRI-O's ``capctl`` runtime, as ``capctl install`` writes them; they
    pass no arguments, so the wrapper reads the default config."""
    import tomllib

    from capctl.host import DEFAULT_CONFIG

    out: list[Finding] = []
    for path, keys in (
        (os.path.join(containerd_dir, install.SNIPPET),
         ("plugins", "io.containerd.grpc.v1.cri", "containerd", "runtimes", "capctl", "options",
          "BinaryName")),
        (os.path.join(crio_dir, install.CRIO_SNIPPET),
         ("crio", "runtime", "runtimes", "capctl", "runtime_path")),
    ):
        try:
            node: Any = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            continue
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
            out.append(Finding(Level.WARN, f"{path}: unreadable ({err})"))
            continue
        for key in keys:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, str):
            out += check_runtime_program(f"runtime capctl ({path})", node, DEFAULT_CONFIG)
    return out


def check_docker_runtime(config: str = DOCKER_CONFIG) -> list[Finding]:
    """Docker's ``runtimes.capctl``: the wrapper's interpreter imports capctl, and the
    launcher's baked runtime is the one its config names."""
    try:
        doc = json.loads(Path(config).read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as err:
        return [Finding(Level.WARN, f"{config}: unreadable ({err})")]
    runtimes = doc.get("runtimes") if isinstance(doc, dict) else None
    entry = runtimes.get("capctl") if isinstance(runtimes, dict) else None
    if not isinstance(entry, dict):
        return []
    program = str(entry.get("path"))
    return check_runtime_program(f"Docker runtime capctl ({config})", program,
                                 _runtime_config(entry.get("runtimeArgs")))


#: Where systemd starts dockerd without an Environment=PATH (systemd's default PATH).
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def containerd_major(containerd: str | None = None) -> int | None:
    """containerd's major version from ``containerd --version``, None if unknown."""
    exe = containerd or shutil.which("containerd")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10,
                             check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for word in out.split():
        head = word.lstrip("v").split(".", 1)[0]
        if "." in word and head.isdigit():
            return int(head)
    return None


def check_containerd_imports(containerd_dir: str = CONTAINERD_DIR,
                             major: int | None = None) -> list[Finding]:
    """Whether containerd reads capctl's drop-in: its ``config.toml`` must import it.

    containerd reads a drop-in only through ``imports`` in ``config.toml``.  containerd 2's
    built-in default imports ``/etc/containerd/conf.d/*.toml``; containerd 1.x has no such
    default, and a ``config.toml`` of either without the line replaces the default."""
    import fnmatch
    import tomllib

    snippet = os.path.join(containerd_dir, install.SNIPPET)
    if not os.path.exists(snippet):
        return []
    main = os.path.join(os.path.dirname(containerd_dir.rstrip("/")), "config.toml")
    fix = (f'add imports = ["{containerd_dir.rstrip("/")}/*.toml"] at the top of {main} '
           "(create it with 'containerd config default' if missing), then restart containerd")
    try:
        doc: Any = tomllib.loads(Path(main).read_text())
    except FileNotFoundError:
        if major is None:
            major = containerd_major()
        if major is not None and major >= 2:
            return [Finding(Level.OK, f"{snippet}: read through containerd {major}'s default "
                            "imports (no config.toml)")]
        return [Finding(Level.FAIL, f"{snippet} is never read: no {main}, and containerd "
                        f"{major if major is not None else '1.x'} has no default imports", fix)]
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        return [Finding(Level.WARN, f"{main}: unreadable ({err})")]
    imports = doc.get("imports", []) if isinstance(doc, dict) else []
    if isinstance(imports, list) and any(
            isinstance(i, str) and fnmatch.fnmatchcase(snippet, i) for i in imports):
        return [Finding(Level.OK, f"{snippet} is imported by {main}")]
    return [Finding(Level.FAIL, f"{snippet} is never read: {main} does not import it "
                    f"(imports = {imports!r})", fix)]


def dockerd_path() -> tuple[str, str]:
    """(PATH, where it came from) of the running dockerd, else systemd's default."""
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() != "dockerd":
                    continue
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        for item in env:
            if item.startswith(b"PATH="):
                return item[5:].decode(errors="replace"), f"on the PATH of dockerd (pid {pid})"
        return SYSTEMD_PATH, f"on systemd's default PATH (dockerd, pid {pid}, has none)"
    return SYSTEMD_PATH, "on systemd's default PATH (dockerd is not running)"


def check_docker_gpus(path: str | None = None, where: str = "on the PATH") -> list[Finding]:
    """Docker's ``--gpus``: dockerd runs the first ``nvidia-container-runtime-hook`` on its
    PATH; capctl's is a link to ``capctl-docker-hook`` (``capctl install --docker-hook-link``)."""
    if path is None:
        if shutil.which("dockerd") is None:
            return []
        path, where = dockerd_path()
    first = shutil.which(install.NVIDIA_HOOK, path=path)
    fix = ("capctl install --docker-hook-link /usr/local/bin (first on dockerd's PATH), then "
           "restart dockerd")
    if first is None:
        return [Finding(Level.WARN, f"docker --gpus: no {install.NVIDIA_HOOK} {where}; "
                        "--gpus fails", fix)]
    real = os.path.realpath(first)
    if os.path.basename(real) != "capctl-docker-hook":
        return [Finding(Level.WARN, f"docker --gpus: {first}, the first {where}, is not "
                        f"capctl's (it is {real}); --gpus bypasses capctl", fix)]
    return [Finding(Level.OK, f"docker --gpus: {first} -> {real}, the first {where}")]


def check_runtimes(
    hook_dirs: Iterable[str] = HOOK_DIRS, docker_config: str = DOCKER_CONFIG,
    containerd_dir: str = CONTAINERD_DIR, crio_dir: str = CRIO_DIR,
) -> list[Finding]:
    out: list[Finding] = []
    for tool in ("runc", "crun", "podman", "containerd", "dockerd"):
        if shutil.which(tool):
            out.append(Finding(Level.OK, f"{tool} found at {shutil.which(tool)}"))
    hooks = [
        finding for d in hook_dirs for p in sorted(glob.glob(f"{d}/*.json"))
        for finding in check_hook_file(p) or []
    ]
    out += hooks
    if not hooks:
        out.append(
            Finding(
                Level.WARN,
                "no hooks.d entry runs capctl (podman/CRI-O); runc and containerd need it in their config",
                "capctl install (see README)",
            )
        )
    out += check_docker_runtime(docker_config)
    out += check_snippets(containerd_dir, crio_dir)
    out += check_containerd_imports(containerd_dir)
    return out


def check_config(host: Host) -> list[Finding]:
    try:
        st = os.stat(host.config)
    except FileNotFoundError:
        return [Finding(Level.OK, f"{host.config} absent: no grants (created by 'capctl grant')")]
    if not is_root_owned_safe(st):
        return [
            Finding(
                Level.FAIL,
                f"{host.config} is not root-owned or is group/world-writable; "
                "capctl will refuse it",
                f"chown root:root {host.config}; chmod 0644 {host.config}",
            )
        ]
    return [Finding(Level.OK, f"{host.config} present and root-owned")]


def check_requests(host: Host) -> list[Finding]:
    """The effective ``[requests]`` trust policy: who may ask for devices (``docs/trust.md``)."""
    from capctl.errors import CapctlError
    from capctl.policy import settings

    try:
        req = settings.load(host.config).requests
    except CapctlError as err:
        return [Finding(Level.FAIL, str(err), f"fix {host.config}")]
    meaning = {
        "any": "every container may ask through NVIDIA_VISIBLE_DEVICES",
        "privileged": "only privileged containers may ask through NVIDIA_VISIBLE_DEVICES",
        "auto": "NVIDIA_VISIBLE_DEVICES: privileged containers only, for containers a "
                "Kubernetes CRI runtime (containerd, CRI-O) made; every container otherwise",
    }[req.envvar]
    out = [Finding(Level.OK, f'[requests] envvar = "{req.envvar}": {meaning}')]
    if req.envvar == "any":
        out.append(Finding(
            Level.WARN,
            "any container (every pod, every CUDA image with NVIDIA_VISIBLE_DEVICES=all) gets "
            "the devices it names",
            f'set [requests] envvar = "auto" in {host.config} unless every user may use '
            "every GPU",
        ))
    out.append(Finding(
        Level.OK,
        "[requests] volume_mounts = "
        + ("true: the device plugin's volume-mounts list is the request when present"
           if req.volume_mounts else "false: the device plugin's volume-mounts list is ignored"),
    ))
    return out


def run(host: Host) -> list[tuple[str, list[Finding]]]:
    """All checks, grouped by topic."""
    checks: list[tuple[str, Callable[[], list[Finding]]]] = [
        ("host", lambda: check_host(host)),
        ("driver", lambda: check_driver(host)),
        ("nodes", lambda: check_nodes(host)),
        ("cgroups", check_cgroups),
        ("systemd", check_systemd),
        ("runtimes", lambda: [*check_runtimes(), *check_docker_gpus()]),
        ("config", lambda: check_config(host)),
        ("requests", lambda: check_requests(host)),
    ]
    return [(name, fn()) for name, fn in checks]

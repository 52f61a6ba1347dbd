"""``capctl install``: write capctl's definitions for this installation into each runtime's place.

What is written (``docs/runtimes.md``):

- ``capctl-runtime``'s own launcher (:func:`launcher_text`), which the runtime entries below
  run instead of pip's console script: a shell script that execs the real runtime, baked in
  from the config's ``[runtime]``, for every ``start``, ``state``, ``kill`` and ``delete`` of a
  container, and starts Python only for ``create`` and ``run`` (``docs/runtimes.md``);
- a hooks.d definition (podman, CRI-O), the directory created if missing (Debian's podman
  does not create ``/usr/share/containers/oci/hooks.d``);
- Docker's ``daemon.json``: a ``runtimes.capctl`` entry running ``capctl-runtime``, every
  other key kept;
- containerd's CRI runtime ``capctl`` (``options.BinaryName``) and CRI-O's runtime ``capctl``,
  as TOML snippets in their drop-in directories;
- ``capctl``'s own launcher (:func:`python_launcher_text`), which the udev rules and systemd
  units run as ``/usr/local/bin/capctl`` once it is linked there (``udev/README.md``);
- with an explicit option only, ``capctl-docker-hook``'s launcher and a link named
  ``nvidia-container-runtime-hook`` to it, never over a file that is not capctl's;
- beside the launchers, the start-up pack (:mod:`capctl.modpack`): the compiled modules of
  the start-up paths in one file, which every definition and launcher above loads first.

Every definition and launcher starts the interpreter as ``python -I -S`` and puts this
installation's import paths (:func:`import_paths`) on ``sys.path`` itself
(:func:`interpreter_args`): ``site`` costs every container start about 3 ms and does nothing
else for capctl (``docs/hook-startup.md``).  Where a launcher directory is given, they then
serve capctl's modules from its start-up pack (:mod:`capctl.modpack`): about 2 ms less.
Each definition still names the interpreter by its full path, as both the program and
``args[0]`` (``docs/runtimes.md``).

Nothing is clobbered: a file is replaced only when capctl wrote it (hook JSON that runs
``capctl.main``, a TOML snippet starting with :data:`MARK`); ``daemon.json`` is merged, and a
``capctl`` runtime there that runs something else is refused.  Every write is atomic.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from capctl import trustedpath
from capctl.errors import CapctlError
from capctl.host import DEFAULT_CONFIG
from capctl.main import HOOK_ENTRY
from capctl.runtime_main import OWN_OPTION

#: First line of every TOML snippet capctl writes: how a later install knows the file is its own.
MARK = "# Written by 'capctl install'; it replaces this file on the next install."
HOOKS_DIR = "/usr/share/containers/oci/hooks.d"
DOCKER_CONFIG = "/etc/docker/daemon.json"
CONTAINERD_DIR = "/etc/containerd/conf.d"
CRIO_DIR = "/etc/crio/crio.conf.d"
HOOK_FILE = "oci-capctl.json"
SNIPPET = "99-capctl.toml"
CRIO_SNIPPET = "99-capctl.conf"
RUNTIME_NAME = "capctl"
#: Second line of the launcher (its first is the shebang): how a later install knows it.
LAUNCHER_MARK = "# capctl-runtime's launcher, written by 'capctl install'; replaced by the next one."
LAUNCHER = "capctl-runtime"
#: The Python launchers' second line (after ``#!PYTHON -IS``), with the program's name.
PYTHON_LAUNCHER_MARK = "# {name}'s launcher, written by 'capctl install'; replaced by the next one."
CLI_LAUNCHER = "capctl"
DOCKER_HOOK_LAUNCHER = "capctl-docker-hook"
#: The start-up pack's name in the launcher directory (:mod:`capctl.modpack`).
PACK = "capctl-modules.pack"
#: What each Python launcher runs once its ``sys.path`` is set.  The CLI exits normally (a
#: command may be a long-running watcher); the Docker hook as ``capctl hook`` does.
CLI_ENTRY = "from capctl.main import main; main()"
DOCKER_HOOK_ENTRY = "from capctl.docker_hook import hook_entry; hook_entry()"
NVIDIA_HOOK = "nvidia-container-runtime-hook"
HOOK_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ANNOTATION = {"^capctl\\.io/nvidia$": "^(true|yes|1)$"}


class InstallError(CapctlError):
    """A definition cannot be installed (a foreign file in the way, an unreadable config)."""


@dataclass(frozen=True, slots=True)
class Installation:
    """Where this capctl lives and the options its entry points get."""

    python: str  # the interpreter's full path (sys.executable of the venv)
    bindir: str  # where the console scripts are (capctl-runtime, capctl-docker-hook)
    options: tuple[str, ...] = ()  # global options for the hook: --root R --topology T --config C
    launcher_dir: str | None = None  # where capctl-runtime's launcher goes; None: none written
    paths: tuple[str, ...] = ()  # the launcher's sys.path head: capctl's and its dependencies'
    config: str = DEFAULT_CONFIG  # whose [runtime] runtime the launcher bakes in

    @property
    def runtime(self) -> str:
        """What the runtime entries run: the launcher, else pip's console script."""
        if self.launcher_dir is not None:
            return os.path.join(self.launcher_dir, LAUNCHER)
        return os.path.join(self.bindir, "capctl-runtime")

    @property
    def docker_hook(self) -> str:
        """What ``nvidia-container-runtime-hook`` links to: the launcher, else pip's script."""
        if self.launcher_dir is not None:
            return os.path.join(self.launcher_dir, DOCKER_HOOK_LAUNCHER)
        return os.path.join(self.bindir, "capctl-docker-hook")

    @property
    def pack(self) -> str | None:
        """The start-up pack every entry point loads first; None without a launcher directory."""
        if self.launcher_dir is not None:
            return os.path.join(self.launcher_dir, PACK)
        return None


@dataclass(frozen=True, slots=True)
class Write:
    """One file to write: its path, its new text (what a dry run shows of ``data``, if
    given: the bytes to write), and whether it replaces an own file."""

    path: str
    text: str
    what: str
    replaces: bool = False
    mode: int = 0o644
    data: bytes | None = None


#: The longest ``#!`` line every supported kernel reads whole (127 before Linux 5.1).
SHEBANG_MAX = 127


def import_paths() -> tuple[str, ...]:
    """Where this process finds capctl and its dependencies, for a launcher that skips ``site``.

    The directory above the ``capctl`` package first (an editable install's source tree too,
    whose import finder ``site`` would load), then every site-packages directory on ``sys.path``.
    Not what came from the environment of the process that runs ``install``: ``PYTHONPATH``
    and the user's site-packages, which ``python -I`` leaves out, never reach a root hook.
    """
    import site

    import capctl

    own = os.path.dirname(os.path.dirname(os.path.abspath(capctl.__file__)))
    from_env = {os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                if p}
    user_site = site.getusersitepackages() if site.ENABLE_USER_SITE is not False else None
    found = [own]
    for p in sys.path:
        site_dir = os.path.basename(p) in ("site-packages", "dist-packages")
        if (site_dir and os.path.isabs(p) and p not in found and os.path.isdir(p)
                and os.path.abspath(p) not in from_env and p != user_site):
            found.append(p)
    return tuple(found)


def check_trusted(inst: Installation) -> None:
    """Refuse an installation that anyone but root could change: the hooks, the wrapper's
    launcher and the Docker hook run its interpreter, import from its paths and run files of
    its launcher directory as root on every container start (:mod:`capctl.trustedpath`;
    a root-owned sticky directory such as /tmp may be on the way, as long as the entry in it
    is root's: no one else can replace it there)."""
    def interpreter(path: str) -> str:
        return trustedpath.resolve(path, sticky_ok=True)

    def directory(path: str) -> str:
        return trustedpath.resolve_dir(path, sticky_ok=True)

    checks: list[tuple[str, str, Any]] = [("interpreter", inst.python, interpreter)]
    checks += [("import path", p, directory) for p in inst.paths]
    if inst.launcher_dir is not None:
        existing = inst.launcher_dir
        while not os.path.lexists(existing):  # install creates the rest, root-owned, 0755
            existing = os.path.dirname(existing)
        checks.append(("launcher directory", existing, directory))
    for what, path, check in checks:
        try:
            check(path)
        except trustedpath.UnsafePath as err:
            raise InstallError(
                f"{what} {path}: {err}; refusing to have it run as root for every container "
                "(install capctl where only root can write: root-owned directories no group "
                "or others may write)") from err


def configured_runtime(config: str) -> str:
    """``[runtime] runtime`` of ``config``, resolved and checked for baking into the launcher.

    Every container's calls run it as root: only root may be able to change what it runs
    (:func:`capctl.trustedpath.resolve`), and the launcher gets the resolved path.
    """
    from capctl.policy import settings

    try:
        runtime = settings.load_runtime(config)
    except CapctlError as err:
        raise InstallError(f"cannot read the real runtime from {config}: {err}") from err
    try:
        return trustedpath.resolve(runtime)
    except trustedpath.UnsafePath as err:
        raise InstallError(
            f"{config}: [runtime] runtime = {runtime!r}: {err}; refusing to run it as root "
            "for every container (keep it in root-owned directories no group or others may "
            "write)"
        ) from err


def path_setup(paths: Sequence[str], pack: str | None = None) -> str:
    """Python code putting ``paths`` after the standard library on ``sys.path``, as ``site``
    would have under ``python -S``: a same-named module in site-packages (a backport) never
    replaces the standard library's in a root hook.  Then, with a ``pack``, the start-up
    pack in use (:func:`capctl.modpack.use`; without a usable one, the usual imports)."""
    code = f"import sys; sys.path += {list(paths)!r}"
    if pack is not None:
        code += f"{PACK_CALL}{pack!r})"
    return code


def interpreter_args(paths: Sequence[str], entry: str = HOOK_ENTRY,
                     pack: str | None = None) -> list[str]:
    """The interpreter's arguments in a hook definition: ``-I -S -c SETUP; ENTRY``.

    ``-I`` leaves out the ``PYTHON*`` environment, the user's site-packages and the current
    directory; ``-S`` leaves out ``site``; ``-c``, not ``-m``, leaves out ``runpy``
    (``docs/hook-startup.md``).  The hook's own options and ``hook`` follow.
    """
    return ["-I", "-S", "-c", f"{path_setup(paths, pack)}; {entry}"]


#: How :func:`path_setup` puts a pack in use, before the pack's path.
PACK_CALL = "; from capctl.modpack import use; use("


def split_pack(setup: str) -> tuple[str, str | None]:
    """A set-up of :func:`path_setup` as its ``sys.path`` part and its pack (None if none)."""
    head, sep, tail = setup.partition(PACK_CALL)
    if not sep or not tail.endswith(")"):
        return setup, None
    import ast

    try:
        pack = ast.literal_eval(tail[:-1])
    except (ValueError, SyntaxError):
        return setup, None
    return (head, pack) if isinstance(pack, str) else (setup, None)


def entry_setup(code: str, entry: str = HOOK_ENTRY) -> str | None:
    """The ``sys.path`` set-up of a ``-c`` code that runs ``entry`` (what ``doctor`` runs with
    an import instead of the entry); None if the code does not end with ``entry``."""
    head, sep, tail = code.rpartition(entry)
    if not sep or tail.strip():
        return None
    return head.rstrip().rstrip(";").rstrip()


def python_entry(paths: Sequence[str], runtime: str, config: str = DEFAULT_CONFIG,
                 pack: str | None = None) -> str:
    """The Python code the launcher runs for ``create`` and ``run``: capctl's paths, then
    :func:`capctl.runtime_main.main` with the baked runtime, so that a container's whole life
    runs one runtime even if the config changes in between, and with the config the install
    used when it is not the default: containerd's ``BinaryName`` and CRI-O's
    ``runtime_path`` take no arguments, so no ``--capctl-config`` could reach the wrapper."""
    own = "" if config == DEFAULT_CONFIG else f", config={config!r}"
    return (f"{path_setup(paths, pack)}; "
            f"from capctl.runtime_main import main; main(runtime={runtime!r}{own})")


def python_launcher_text(python: str, paths: Sequence[str], name: str, entry: str,
                         pack: str | None = None) -> str:
    """A Python script run as ``python -I -S`` by its ``#!`` line: ``capctl``'s and
    ``capctl-docker-hook``'s launchers, which stand in for pip's console scripts.

    pip's console script runs with ``site`` and imports ``re`` before capctl's first line
    (about 8 ms on the development VM, more with ``.pth`` files); this one puts the
    installation's paths on ``sys.path`` and calls ``entry``.  Linux passes the ``#!`` line's
    one argument, ``-IS``, whole, and Python reads it as ``-I -S``.  A ``#!`` line cannot
    name a path with white space: for such an interpreter the launcher is a ``/bin/sh``
    script that runs ``python -IS -c`` with the same code (about 1 ms slower).
    """
    if not python.startswith("/") or not python.isprintable():
        raise InstallError(f"{python!r}: a launcher's interpreter must be a printable "
                           "absolute path")
    mark = PYTHON_LAUNCHER_MARK.format(name=name)
    if any(c.isspace() for c in python) or len(f"#!{python} -IS".encode()) > SHEBANG_MAX:
        # A #! line cannot name such an interpreter (a space ends the path; the kernel cuts
        # a long line, -IS with it): a /bin/sh script execs it instead.
        code = f"{path_setup(paths, pack)}; {entry}"
        return (f"#!/bin/sh\n{mark}\n"
                f'exec {shlex.quote(python)} -IS -c {shlex.quote(code)} "$@"\n')
    return f"#!{python} -IS\n{mark}\n{path_setup(paths, pack)}\n{entry}\n"


def is_python_launcher(text: str, name: str) -> bool:
    """Whether ``text`` is a launcher :func:`python_launcher_text` wrote for ``name``."""
    return text.split("\n", 2)[1:2] == [PYTHON_LAUNCHER_MARK.format(name=name)]


def plan_python_launcher(inst: Installation, name: str, entry: str, what: str) -> Write:
    """One Python launcher, executable; refused over a file that is not an earlier one."""
    assert inst.launcher_dir is not None
    path = os.path.join(inst.launcher_dir, name)
    current = _read(path)
    if current is not None and not is_python_launcher(current, name):
        raise InstallError(f"{path}: exists and was not written by capctl; refusing to replace it")
    text = python_launcher_text(inst.python, inst.paths, name, entry, inst.pack)
    return Write(path, text, what, current is not None, 0o755)


def plan_pack(inst: Installation) -> Write:
    """The start-up pack of this installation's capctl, for its interpreter; refused over a
    file that is not an earlier pack."""
    from capctl import modpack

    assert inst.pack is not None
    current = _read_bytes(inst.pack)
    if current is not None and not modpack.is_pack(current):
        raise InstallError(f"{inst.pack}: exists and was not written by capctl; "
                           "refusing to replace it")
    try:
        data = modpack.build()
    except (OSError, SyntaxError, UnicodeDecodeError) as err:
        raise InstallError(f"cannot build the start-up pack: {err}") from err
    text = (f"the compiled code of {len(modpack.MODULES)} capctl modules ({len(data)} bytes), "
            f"for Python {sys.version.split()[0]} at {inst.python}")
    return Write(inst.pack, text, "start-up pack (every launcher and hook loads it)",
                 current is not None, 0o644, data)


#: runc 1.1's global options (``runc --help``, ``main.go``; Go's ``flag`` package takes each
#: with one or two dashes, and a value as ``-opt value`` or ``-opt=value``).
RUNC_VALUED = ("root", "log", "log-format", "criu", "rootless")
RUNC_FLAGS = ("debug", "systemd-cgroup", "help", "h", "version", "v")


def _alternatives(names: Sequence[str], suffix: str = "") -> str:
    return "|".join(f"{dashes}{n}{suffix}" for n in names for dashes in ("--", "-"))


def launcher_text(python: str, paths: Sequence[str], runtime: str, config: str,
                  pack: str | None = None) -> str:
    """``capctl-runtime``'s launcher: a ``/bin/sh`` script that runs Python only for
    ``create`` and ``run``.

    ``start``, ``state``, ``kill``, ``delete`` and the rest ``exec`` the real runtime, baked in
    here from ``config``, with the caller's arguments less ``--capctl-config FILE``: the
    shell's start-up (about 1 ms) instead of the interpreter's (6-8 ms) on four of a
    container's five calls (``docs/runtimes.md``).  The subcommand is found by skipping runc's
    global options; anything it cannot place (an unknown option, ``--``, ``-``, a missing
    ``--capctl-config`` value) goes to Python, which is slower but right.  Every argument is
    data: it is only matched by ``case`` and passed on as ``"$@"``.

    ``create`` and ``run`` run ``python -IS``: ``-I`` leaves out the ``PYTHON*`` environment,
    the user's site-packages and the current directory; ``-S`` leaves out ``site`` (and every
    ``.pth`` file's imports), so ``sys.path`` gets capctl's directories from ``paths``.
    """
    for what, value in (("interpreter", python), ("runtime", runtime), ("config", config)):
        if not value.startswith("/") or not value.isprintable():
            raise InstallError(f"{value!r}: the launcher's {what} must be a printable absolute path")
    q = shlex.quote
    return (
        "#!/bin/sh\n"
        f"{LAUNCHER_MARK}\n"
        f"# The real runtime is [runtime] runtime of {config} when it was written:\n"
        "# run 'capctl install' again after changing it ('capctl doctor' compares them).\n"
        f"runtime={q(runtime)}\n"
        f"python={q(python)}\n"
        f"entry={q(python_entry(paths, runtime, config, pack))}\n"
        "own=0\n"
        'case ${1-} in\n'
        f'{OWN_OPTION}=) exec "$python" -IS -c "$entry" "$@" ;;\n'
        f'{OWN_OPTION}) [ "$#" -ge 2 ] && [ -n "$2" ] || exec "$python" -IS -c "$entry" "$@"\n'
        "    own=2 ;;\n"
        f"{OWN_OPTION}=*) own=1 ;;\n"
        "esac\n"
        "i=0 value=0\n"
        "for arg do\n"
        "    i=$((i + 1))\n"
        '    [ "$i" -le "$own" ] && continue\n'
        '    [ "$value" = 1 ] && { value=0; continue; }\n'
        '    case $arg in\n'
        f"    {_alternatives(RUNC_VALUED)}) value=1 ;;\n"
        f"    {_alternatives(RUNC_VALUED, '=*')}) ;;\n"
        f"    {_alternatives(RUNC_FLAGS)}) ;;\n"
        f"    {_alternatives(RUNC_FLAGS, '=*')}) ;;\n"
        '    create|run|-*) exec "$python" -IS -c "$entry" "$@" ;;\n'
        "    *) break ;;\n"
        "    esac\n"
        "done\n"
        'shift "$own"\n'
        'exec "$runtime" "$@"\n'
    )


def launcher_values(text: str) -> dict[str, str] | None:
    """The ``runtime``, ``python`` and ``entry`` a launcher of :func:`launcher_text` bakes in,
    ``setup``: the entry's ``sys.path`` set-up alone, and ``config``: the config it hands the
    wrapper (:func:`python_entry`; the default when it names none); None if ``text`` is not
    such a launcher (an earlier Python one, or a foreign file)."""
    lines = text.split("\n")
    if lines[:2] != ["#!/bin/sh", LAUNCHER_MARK]:
        return None
    out: dict[str, str] = {}
    for line in lines:
        name, eq, value = line.partition("=")
        if eq and name in ("runtime", "python", "entry") and name not in out:
            try:
                words = shlex.split(value)
            except ValueError:
                return None
            if len(words) != 1:
                return None
            out[name] = words[0]
    if len(out) != 3:
        return None
    setup, sep, call = out["entry"].partition("; from capctl.runtime_main import main;")
    config = _baked_config(call)
    return {**out, "setup": setup, "config": config} if sep and config else None


def _baked_config(call: str) -> str | None:
    """``config=`` of the entry's ``main(...)`` call, the default without one; None for a
    call that is not :func:`python_entry`'s."""
    import ast

    try:
        node = ast.parse(call.strip(), mode="eval").body
    except SyntaxError:
        return None
    if not isinstance(node, ast.Call):
        return None
    for kw in node.keywords:
        if kw.arg == "config":
            value = kw.value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                return value.value
            return None
    return DEFAULT_CONFIG


def plan_launcher(inst: Installation) -> Write:
    """The launcher file, executable; refused over a file that is not an earlier launcher."""
    assert inst.launcher_dir is not None
    path = os.path.join(inst.launcher_dir, LAUNCHER)
    current = _read(path)
    if current is not None and current.split("\n", 2)[1:2] != [LAUNCHER_MARK]:
        raise InstallError(f"{path}: exists and was not written by capctl; refusing to replace it")
    text = launcher_text(inst.python, inst.paths, configured_runtime(inst.config), inst.config,
                         inst.pack)
    return Write(path, text, "capctl-runtime launcher (Docker, containerd, CRI-O run it)",
                 current is not None, 0o755)


def hook_command(inst: Installation) -> dict[str, Any]:
    """The ``hook`` object of an OCI hook definition running this installation's hook."""
    return {
        "path": inst.python,
        "args": [inst.python, *interpreter_args(inst.paths, pack=inst.pack), *inst.options,
                 "hook"],
        "env": [HOOK_ENV],
        "timeout": 10,
    }


def hooks_d_definition(inst: Installation, *, always: bool) -> dict[str, Any]:
    """A hooks.d (schema 1.0.0) definition: every container, or those annotated for capctl."""
    when: dict[str, Any] = {"always": True} if always else {"annotations": dict(ANNOTATION)}
    return {
        "version": "1.0.0",
        "hook": hook_command(inst),
        "when": when,
        "stages": ["createRuntime"],
    }


def is_own_hook(doc: object) -> bool:
    """Whether a parsed hooks.d file runs capctl's hook entry (so capctl wrote it)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("hook"), dict):
        return False
    args = doc["hook"].get("args")
    return isinstance(args, list) and any(
        isinstance(a, str) and entry_setup(a) is not None for a in args
    )


def docker_runtime(inst: Installation, capctl_config: str | None) -> dict[str, Any]:
    """The ``daemon.json`` ``runtimes`` entry: dockerd puts ``runtimeArgs`` first."""
    entry: dict[str, Any] = {"path": inst.runtime}
    if capctl_config is not None:
        entry["runtimeArgs"] = ["--capctl-config", capctl_config]
    return entry


def merge_daemon_json(path: str, current: str | None, entry: Mapping[str, Any]) -> str:
    """``daemon.json`` with ``runtimes.capctl`` = ``entry``, every other key kept.

    Refuses a file that is not a JSON object and a ``capctl`` runtime running another program.
    """
    doc: Any = {}
    if current is not None and current.strip():
        try:
            doc = json.loads(current)
        except json.JSONDecodeError as err:
            raise InstallError(f"{path}: not valid JSON ({err}); fix it first") from err
    if not isinstance(doc, dict):
        raise InstallError(f"{path}: not a JSON object; refusing to change it")
    runtimes = doc.setdefault("runtimes", {})
    if not isinstance(runtimes, dict):
        raise InstallError(f"{path}: 'runtimes' is not an object; refusing to change it")
    old = runtimes.get(RUNTIME_NAME)
    if old is not None and not _runs_capctl_runtime(old):
        raise InstallError(
            f"{path}: runtime {RUNTIME_NAME!r} runs {old.get('path') if isinstance(old, dict) else old!r}, "
            "not capctl-runtime; refusing to replace it"
        )
    runtimes[RUNTIME_NAME] = dict(entry)
    return json.dumps(doc, indent=2) + "\n"


def _runs_capctl_runtime(entry: object) -> bool:
    return isinstance(entry, dict) and os.path.basename(str(entry.get("path"))) == "capctl-runtime"


def _toml_str(s: str) -> str:
    return json.dumps(s)  # a JSON string of printable text is a TOML basic string


def containerd_snippet(inst: Installation) -> str:
    """containerd's CRI runtime ``capctl`` (config version 2): runc v2 shim, our binary.

    ``BinaryName`` takes no arguments, so the wrapper reads the default config.
    """
    table = 'plugins."io.containerd.grpc.v1.cri".containerd.runtimes.capctl'
    return (
        f"{MARK}\n"
        "# containerd 1.x reads it only when config.toml imports it:\n"
        f'#   imports = ["{CONTAINERD_DIR}/*.toml"]\n'
        "version = 2\n\n"
        f"[{table}]\n"
        'runtime_type = "io.containerd.runc.v2"\n\n'
        f"[{table}.options]\n"
        f"BinaryName = {_toml_str(inst.runtime)}\n"
    )


def crio_snippet(inst: Installation) -> str:
    """CRI-O's runtime ``capctl`` (``crio.conf.d`` drop-in)."""
    return (
        f"{MARK}\n"
        "[crio.runtime.runtimes.capctl]\n"
        f"runtime_path = {_toml_str(inst.runtime)}\n"
        'runtime_type = "oci"\n'
        'runtime_root = "/run/capctl-runtime"\n'
    )


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        raise InstallError(f"{path}: cannot read: {err}") from err


def _read_bytes(path: str, limit: int = 16 << 20) -> bytes | None:
    """The regular file ``path`` (not followed if a symlink, nothing else opened:
    :func:`capctl.devfs.safefs.read_regular`); None if there is nothing there."""
    from capctl.devfs import safefs

    try:
        found = safefs.read_regular(path, limit)
    except (OSError, safefs.UnreadableFile) as err:
        raise InstallError(f"{path}: cannot read: {err}") from err
    return None if found is None else found[0]


def plan_hook(path: str, inst: Installation, *, always: bool) -> Write:
    text = json.dumps(hooks_d_definition(inst, always=always), indent=2) + "\n"
    current = _read(path)
    if current is not None:
        try:
            own = is_own_hook(json.loads(current))
        except json.JSONDecodeError:
            own = False
        if not own:
            raise InstallError(f"{path}: exists and does not run capctl; refusing to replace it")
    return Write(path, text, "hooks.d definition (podman, CRI-O)", current is not None)


def plan_snippet(path: str, text: str, what: str) -> Write:
    current = _read(path)
    if current is not None and not current.startswith(MARK):
        raise InstallError(f"{path}: exists and was not written by capctl; refusing to replace it")
    return Write(path, text, what, current is not None)


def plan_docker(path: str, inst: Installation, capctl_config: str | None) -> Write:
    current = _read(path)
    text = merge_daemon_json(path, current, docker_runtime(inst, capctl_config))
    return Write(path, text, "Docker runtime 'capctl' (daemon.json)", current is not None)


def write_atomic(w: Write) -> None:
    """Create the directory if needed, then replace the target atomically
    (:func:`capctl.devfs.atomic.replace_file`)."""
    from capctl.devfs.atomic import replace_file

    directory = os.path.dirname(w.path) or "."
    try:
        os.makedirs(directory, mode=0o755, exist_ok=True)
        replace_file(w.path, w.text.encode("utf-8") if w.data is None else w.data, mode=w.mode)
    except OSError as err:
        raise InstallError(f"{w.path}: cannot write: {err.strerror or err}") from err


def link_docker_hook(directory: str, inst: Installation, *, dry_run: bool) -> str:
    """A link ``DIR/nvidia-container-runtime-hook`` -> ``capctl-docker-hook``: the launcher
    :func:`plan` writes (``inst.launcher_dir``), else pip's console script.

    Refuses to replace anything but such a link: NVIDIA's own hook binary is never replaced.
    """
    path = os.path.join(directory, NVIDIA_HOOK)
    try:
        target: str | None = os.readlink(path)
    except FileNotFoundError:
        target = None
    except OSError as err:  # EINVAL: a regular file, NVIDIA's binary or another one
        raise InstallError(
            f"{path}: exists and is not capctl's link ({err.strerror}); refusing to replace it"
        ) from err
    if target is not None and os.path.basename(target) != "capctl-docker-hook":
        raise InstallError(f"{path}: links to {target}, not capctl; refusing to replace it")
    if not dry_run:
        tmp = f"{path}.capctl-{os.getpid()}"
        try:
            os.makedirs(directory, mode=0o755, exist_ok=True)
            os.symlink(inst.docker_hook, tmp)
            os.rename(tmp, path)
        except OSError as err:
            raise InstallError(f"{path}: cannot link: {err.strerror or err}") from err
    return path


def plan(
    inst: Installation,
    *,
    hooks_dir: str | None,
    always: bool = False,
    docker_config: str | None = None,
    capctl_config: str | None = None,
    containerd_dir: str | None = None,
    crio_dir: str | None = None,
    docker_hook: bool = False,
) -> list[Write]:
    """Every file to write; raises :class:`InstallError` before anything is written.

    With a launcher directory: ``capctl``'s launcher always, ``capctl-runtime``'s when a
    runtime entry runs it, ``capctl-docker-hook``'s with ``docker_hook`` (the link to it is
    :func:`link_docker_hook`'s).
    """
    out: list[Write] = []
    runs_runtime = docker_config or containerd_dir or crio_dir
    if inst.launcher_dir is not None:
        out.append(plan_pack(inst))
        out.append(plan_python_launcher(inst, CLI_LAUNCHER, CLI_ENTRY,
                                        "capctl launcher (link /usr/local/bin/capctl to it)"))
        if runs_runtime:
            out.append(plan_launcher(inst))
        if docker_hook:
            out.append(plan_python_launcher(
                inst, DOCKER_HOOK_LAUNCHER, DOCKER_HOOK_ENTRY,
                "capctl-docker-hook launcher (nvidia-container-runtime-hook links to it)"))
    if hooks_dir is not None:
        out.append(plan_hook(os.path.join(hooks_dir, HOOK_FILE), inst, always=always))
    if docker_config is not None:
        out.append(plan_docker(docker_config, inst, capctl_config))
    if containerd_dir is not None:
        out.append(
            plan_snippet(
                os.path.join(containerd_dir, SNIPPET), containerd_snippet(inst),
                "containerd CRI runtime 'capctl'",
            )
        )
    if crio_dir is not None:
        out.append(
            plan_snippet(
                os.path.join(crio_dir, CRIO_SNIPPET), crio_snippet(inst), "CRI-O runtime 'capctl'"
            )
        )
    return out


def default_targets(exists: Sequence[str] = ()) -> dict[str, str | None]:
    """Runtime targets whose configuration directory exists on this host."""
    present = {d for d in ("/etc/docker", "/etc/containerd", "/etc/crio") if d in exists}
    return {
        "docker_config": DOCKER_CONFIG if "/etc/docker" in present else None,
        "containerd_dir": CONTAINERD_DIR if "/etc/containerd" in present else None,
        "crio_dir": CRIO_DIR if "/etc/crio" in present else None,
    }

"""``capctl-runtime``: an OCI runtime with runc's command line that adds capctl's devices.

    capctl-runtime [--capctl-config FILE] RUNC-ARGS...

On ``create`` and ``run`` it writes the container's devices into the bundle's ``config.json``
(:mod:`capctl.deliver.runtime`) and then execs the real runtime with the same arguments.
Every other subcommand (``start``, ``state``, ``kill``, ``delete``, ``features``...) execs the
real runtime at once.  ``capctl install``'s launcher does that without starting Python at all
(:func:`capctl.install.launcher_text`) and calls :func:`main` only for ``create`` and ``run``,
with the runtime it baked in.  Otherwise this module imports only ``os``, ``sys`` and
:mod:`capctl.trustedpath` (which checks, before every ``exec``, that only root can change what
the runtime's path runs), and the real runtime's path comes from a cache beside the config
that is used only while the config has exactly the bytes it was read from (the same scheme as
the hook's settings cache, ``capctl/policy/settings.py``), so no TOML is parsed and nothing
else of capctl is imported.  A failure is written to stderr and, as runc writes its own, to
the ``--log`` file the caller passed (:func:`capctl.deliver.runtime.report_to_runtime_log`).

capctl's only option is ``--capctl-config``, before runc's arguments: runc's ``--root`` is its
state directory, so the driver root and topology come from the config's ``[host]`` table.
"""

from __future__ import annotations

import os
import sys

DEFAULT_CONFIG = "/etc/capctl/capctl.toml"  # capctl.host.DEFAULT_CONFIG (tested equal)
DEFAULT_RUNTIME = "/usr/sbin/runc"  # capctl.policy.settings.DEFAULT_RUNTIME (tested equal)
MAX_CONFIG = 1 << 20
OWN_OPTION = "--capctl-config"

#: runc's global options that take a value (runc 1.1 ``main.go``); the rest are flags.  Go's
#: ``flag`` package takes one or two dashes, and ``-opt=value`` as well as ``-opt value``.
_GLOBAL_VALUED = frozenset(
    d + n for n in ("root", "log", "log-format", "criu", "rootless") for d in ("-", "--")
)
_CACHE_MAGIC = b"capctl runtime cache 1\n"


def split_args(argv: list[str]) -> tuple[str | None, list[str]]:
    """(``--capctl-config`` value or None, the runtime's arguments)."""
    if argv and argv[0] == OWN_OPTION:
        if len(argv) < 2 or not argv[1]:
            raise SystemExit(f"capctl-runtime: error: {OWN_OPTION} needs a file")
        return argv[1], argv[2:]
    if argv and argv[0].startswith(OWN_OPTION + "="):
        value = argv[0].partition("=")[2]
        if not value:
            raise SystemExit(f"capctl-runtime: error: {OWN_OPTION} needs a file")
        return value, argv[1:]
    return None, argv


def subcommand(args: list[str]) -> int | None:
    """Index of runc's subcommand in ``args``, skipping global options; None if there is none."""
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":  # the end of the options: the next word is the subcommand
            return i + 1 if i + 1 < len(args) else None
        if not arg.startswith("-"):
            return i
        if arg in _GLOBAL_VALUED:
            i += 1
        i += 1
    return None


def read_config(path: str) -> bytes | None:
    """The config's bytes, None if absent; refused unless root-owned and not writable by others
    (when running as root), as :func:`capctl.policy.settings.read_config` does."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise SystemExit(f"capctl-runtime: error: {path}: cannot open: {err.strerror}") from err
    try:
        st = os.fstat(fd)
        if os.geteuid() == 0 and (st.st_uid != 0 or st.st_mode & 0o022):
            raise SystemExit(
                f"capctl-runtime: error: {path}: not owned by root or writable by group/others"
            )
        data = os.read(fd, MAX_CONFIG + 1)
    finally:
        os.close(fd)
    return data


def cache_path(path: str) -> str:
    head, name = os.path.split(path)
    return os.path.join(head, f".{name}.runtime-cache")


def cached_runtime(path: str, data: bytes) -> str | None:
    """The runtime recorded for exactly these config bytes, or None."""
    try:
        fd = os.open(cache_path(path), os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if (st.st_mode & 0o170000) != 0o100000 or (
            os.geteuid() == 0 and (st.st_uid != 0 or st.st_mode & 0o022)
        ):
            return None
        blob = os.read(fd, len(data) + 4096)
    finally:
        os.close(fd)
    if not blob.startswith(_CACHE_MAGIC):
        return None
    line, sep, rest = blob[len(_CACHE_MAGIC) :].partition(b"\n")
    if not sep or rest != data:
        return None
    try:
        runtime = bytes.fromhex(line.decode("ascii")).decode()
    except (UnicodeDecodeError, ValueError):
        return None
    return runtime if runtime.startswith("/") else None


def write_cache(path: str, data: bytes, runtime: str) -> None:
    """Best effort: without it every call parses the config."""
    final = cache_path(path)
    tmp = f"{final}.{os.getpid()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW,
                     0o644)
    except OSError:
        return
    try:
        os.write(fd, _CACHE_MAGIC + runtime.encode().hex().encode() + b"\n" + data)
        os.close(fd)
        os.rename(tmp, final)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def real_runtime(path: str, data: bytes | None) -> str:
    """``[runtime] runtime`` of the config (its cache when the config is unchanged)."""
    if data is None:
        return DEFAULT_RUNTIME
    runtime = cached_runtime(path, data)
    if runtime is None:
        from capctl.errors import CapctlError
        from capctl.policy import settings

        if len(data) > MAX_CONFIG:
            raise SystemExit(f"capctl-runtime: error: {path}: larger than {MAX_CONFIG} bytes")
        try:
            runtime = settings.runtime_from_table(path, settings.parse_config(path, data)).runtime
        except CapctlError as err:
            raise SystemExit(f"capctl-runtime: error: {err}") from err
        write_cache(path, data, runtime)
    return runtime


def _failed(global_args: list[str], err: SystemExit) -> SystemExit:
    """``err`` (whose code is the message), written to runc's ``--log`` too: the runtime's
    caller shows the user what it finds there (:func:`capctl.deliver.runtime.report_to_runtime_log`)."""
    if isinstance(err.code, str):
        from capctl.deliver.runtime import report_to_runtime_log

        report_to_runtime_log(global_args, err.code)
    return err


def main(runtime: str | None = None, config: str | None = None) -> None:
    """Run as ``capctl-runtime``; ``runtime``: the real runtime ``capctl install``'s launcher
    baked in (the config's is used only without it); ``config``: the config it baked in,
    used unless the command line names one (``--capctl-config``)."""
    given, args = split_args(sys.argv[1:])
    path = given or config or DEFAULT_CONFIG
    i = subcommand(args)
    global_args = args[:i] if i is not None else args
    try:
        data = read_config(path)
        if runtime is None:
            runtime = real_runtime(path, data)
        from capctl.trustedpath import UnsafePath, resolve

        try:
            target = resolve(runtime)
        except UnsafePath as err:
            raise SystemExit(
                f"capctl-runtime: error: [runtime] runtime {runtime}: {err}; refusing to run it"
            ) from err
    except SystemExit as err:
        raise _failed(global_args, err) from None
    if i is not None and args[i] in ("create", "run"):
        from capctl.deliver.runtime import main as add_devices

        code = add_devices(path, data, args[i + 1 :], global_args)
        if code:
            sys.exit(code)
    try:
        os.execv(target, [runtime, *args])
    except OSError as err:
        raise _failed(global_args, SystemExit(
            f"capctl-runtime: error: {runtime}: cannot run: {err.strerror}")) from err

"""The runtime wrapper's delivery: write a container's edits into its bundle's ``config.json``.

What is added (OCI runtime spec ``config-linux.md``, "Devices" and "Device allowlist"): one
``linux.devices`` entry per node (type ``c``, major, minor, the node's ``fileMode``, owner
root) and one ``linux.resources.devices`` allow rule per node with exactly the node's access.
The runtime then makes the nodes and the cgroup rules itself, and a systemd cgroup driver
learns of the devices too (``DeviceAllow=``), so they survive ``systemctl daemon-reload``
(``docs/runtimes.md``).  Every other field is kept as it was; the file is replaced atomically.

On ``create``, the path every container takes, this follows the hook's start-up contract
(``docs/hook-startup.md``): no ``json``, ``re``, ``typing`` or TOML parser is imported; the
spec is read by :mod:`capctl._lite.jsonload` and written by :mod:`capctl._lite.jsondump`, and
the settings come from the settings cache (:func:`capctl.policy.settings.load_with_host`).
"""

from __future__ import annotations

import os

from capctl.errors import CapctlError, HookError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from capctl.edits.edits import Edits


#: Every spelling of runc's bundle option: Go's ``flag`` package takes one dash or two, for
#: the long name and the short alike, each as ``-opt DIR`` or ``-opt=DIR``.
BUNDLE_OPTIONS = frozenset({"-b", "--b", "-bundle", "--bundle"})


def bundle_of(args: list[str]) -> str:
    """The bundle of runc's ``create``/``run`` arguments (any spelling of ``--bundle``); the
    cwd without one, as runc does."""
    for i, arg in enumerate(args):
        if arg == "--":  # the end of the options
            break
        name, eq, value = arg.partition("=")
        if name in BUNDLE_OPTIONS:
            if eq:
                return value
            if i + 1 < len(args):
                return args[i + 1]
            raise HookError(f"runtime arguments: {arg} without a directory")
    return os.getcwd()


def container_id_of(args: list[str]) -> str:
    """The container id: runc's last argument of ``create``/``run``."""
    return args[-1] if args and not args[-1].startswith("-") else "-"


def add_edits(spec: dict[str, Any], edits: Edits, where: str) -> int:
    """Add the edits' devices and allow rules to ``spec``, in place; every other field stays.
    Returns how many entries were added: 0 when the spec has them all (a bundle created again).

    A node already in ``linux.devices`` with the same numbers is kept; one at the same path
    with other numbers is an error (a spec that would give the container something else there).
    """
    linux = spec.setdefault("linux", {})
    if not isinstance(linux, dict):
        raise HookError(f"{where}: linux is not an object")
    devices = linux.setdefault("devices", [])
    resources = linux.setdefault("resources", {})
    if not isinstance(devices, list) or not isinstance(resources, dict):
        raise HookError(f"{where}: linux.devices / linux.resources malformed")
    rules = resources.setdefault("devices", [])
    if not isinstance(rules, list):
        raise HookError(f"{where}: linux.resources.devices is not a list")
    before = len(devices) + len(rules)
    present = {d.get("path"): d for d in devices if isinstance(d, dict)}
    allowed = {
        (r.get("type"), r.get("major"), r.get("minor"), r.get("access"))
        for r in rules if isinstance(r, dict) and r.get("allow") is True
    }
    for node in edits.nodes:
        old = present.get(node.path)
        if old is not None:
            if (old.get("type"), old.get("major"), old.get("minor")) != ("c", node.major, node.minor):
                raise HookError(f"{where}: linux.devices has {node.path} as another device")
        else:
            devices.append({
                "path": node.path, "type": "c", "major": node.major, "minor": node.minor,
                "fileMode": node.mode, "uid": 0, "gid": 0,
            })  # fmt: skip
        if ("c", node.major, node.minor, node.access) in allowed:
            continue  # a bundle created again: its rule is there already
        rules.append({
            "allow": True, "type": "c", "major": node.major, "minor": node.minor,
            "access": node.access,
        })  # fmt: skip
    return len(devices) + len(rules) - before


def write_spec(path: str, spec: dict[str, Any]) -> None:
    """Replace ``path`` atomically (:func:`capctl.devfs.atomic.replace_file`), keeping its
    mode and owner (a user's bundle stays the user's).

    The new file is synced before the rename, so a crash leaves the old spec or the new one,
    never an empty file where a user's own bundle had its spec.  The directory is not synced:
    that would only make the rename itself survive a crash, and nothing needs it to.  The
    runtime reads the spec in this boot (from the page cache, where the rename is atomic
    either way), the container does not outlive a crash, and the old spec is as good for the
    next ``create``, which adds the devices again (``docs/runtimes.md``).
    """
    from capctl._lite.jsondump import dumps
    from capctl.devfs.atomic import replace_file

    try:
        st = os.stat(path)
        replace_file(path, dumps(spec).encode(), mode=st.st_mode & 0o7777,
                     owner=(st.st_uid, st.st_gid), sync_dir=False)
    except OSError as err:
        raise HookError(f"{path}: cannot rewrite: {err.strerror or err}") from err


def deliver(config: str, data: bytes | None, args: list[str], log: Any) -> None:
    """Plan the container of runc's ``create``/``run`` ``args`` and write its edits."""
    from capctl._lite import jsonload
    from capctl.deliver.hook import read_bundle_config
    from capctl.edits.edits import from_plan
    from capctl.host import Host, with_host_table
    from capctl.policy import settings
    from capctl.request import oci
    from capctl.request.container import plan_for

    own, hs = settings.load_with_host(config, data)
    host = with_host_table(Host(config=config), hs.driver_root, hs.topology)
    log.path = own.hook_log
    bundle = bundle_of(args)
    cid = container_id_of(args)
    log.container = cid
    where = f"{bundle.rstrip('/')}/config.json"
    raw = read_bundle_config(bundle)
    ctr = oci.parse_config(raw, bundle, where)
    plan = plan_for(host, ctr, log, container_id=cid, settings=own)
    if plan is None:
        return
    edits = from_plan(plan, host.root)
    spec = jsonload.loads(raw)  # oci.parse_config has read it with the same strict rules
    if not isinstance(spec, dict):
        raise HookError(f"{where}: not a JSON object")
    if not add_edits(spec, edits, where):
        log(f"{where}: has {', '.join(r.line() for r in edits.rules)} already")
        return
    write_spec(where, spec)
    log(f"{where}: added {', '.join(r.line() for r in edits.rules)}")


def global_option(args: list[str], name: str) -> str | None:
    """The value of runc's global option ``name`` (``log``, ``log-format``) in ``args``, the
    arguments before the subcommand, in any spelling Go's ``flag`` package takes."""
    for i, arg in enumerate(args):
        opt, eq, value = arg.partition("=")
        if opt in (f"-{name}", f"--{name}"):
            if eq:
                return value
            return args[i + 1] if i + 1 < len(args) else None
    return None


def runtime_log_line(message: str, log_format: str, now: float) -> str:
    """One error line as runc writes it to its ``--log`` (logrus): JSON
    ``{"level":"error","msg":...,"time":...}`` for ``--log-format json``, else text."""
    import time

    from capctl._lite.jsondump import dumps

    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e9):09d}Z"
    if log_format == "json":
        return dumps({"level": "error", "msg": message, "time": stamp}) + "\n"
    return f'time="{stamp}" level=error msg={dumps(message)}\n'


def report_to_runtime_log(global_args: list[str], message: str) -> None:
    """Write ``message`` where runc writes its own errors, for whoever called the runtime.

    containerd's shim (and so dockerd and ``ctr``) calls the runtime with ``--log FILE
    --log-format json`` and shows the user the last error it finds in that file, not the
    runtime's stderr (docs/runtimes.md).  Best effort: a log that cannot be written changes
    nothing, and stderr has the message too."""
    import time

    path = global_option(global_args, "log")
    if not path:
        return
    line = runtime_log_line(message, global_option(global_args, "log-format") or "text",
                            time.time())
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
    except OSError:
        pass


def main(config: str, data: bytes | None, args: list[str],
         global_args: tuple[str, ...] | list[str] = ()) -> int:
    """Entry from :mod:`capctl.runtime_main` for ``create``/``run`` (``args``: what follows the
    subcommand; ``global_args``: runc's global options before it).  On failure, one
    ``capctl-runtime: error:`` line on stderr and, as runc's, in its ``--log`` file."""
    import sys

    from capctl.deliver.hook import Log

    log = Log()
    try:
        deliver(config, data, args, log)
    except CapctlError as err:
        try:
            log(f"error: {err}")
        except OSError:
            pass
        message = f"capctl-runtime: error: {err}"
        sys.stderr.write(message + "\n")
        report_to_runtime_log(list(global_args), message)
        return 1
    return 0

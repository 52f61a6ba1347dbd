"""``capctl hook``: an OCI prestart / createRuntime hook giving a container exactly its MIG devices.

Flow: state (stdin) -> ``config.json`` -> request (``NVIDIA_*`` of ``process.env``) -> plan
(:mod:`capctl.request.resolve`) -> cgroup grant (:mod:`capctl.cgroup`) -> nodes in the container.
A failure after the grant rolls the grant and the nodes made so far back; the runtime then
aborts the start (a hook's non-zero exit fails ``create``).

Where the nodes go.  At prestart/createRuntime time runc's init process has set up the
container's mounts (its ``/dev`` tmpfs included) in the container's mount namespace but has
not yet called ``pivot_root`` (runc ``libcontainer/rootfs_linux.go``: hooks run from
``prepareRootfs`` before ``pivot_root``).  Those mounts are invisible from the hook's own
namespace, so capctl reaches them through ``/proc/<pid>/root``, which resolves paths in the
container's mount namespace, then walks the rootfs with ``O_NOFOLLOW`` per component: a link
planted by the image at ``/dev`` or ``/dev/nvidia-caps`` is refused, never followed
(CVE-2024-0132 family).  Nothing from the container is executed.

Configuration comes from the arguments and the root-owned config file only: the entry point
(:mod:`capctl.main`) refuses an environment carrying ``LD_*``/``PYTHON*`` variables, which
a runtime passing the container's environment to hooks would hand us (CVE-2025-23266).
"""

from __future__ import annotations

import os
import sys
import syslog
import time

from capctl.devfs import nodes, safefs
from capctl.devfs.nodes import Action, NodeSpec
from capctl.errors import CapctlError, HookError
from capctl.host import Host
from capctl.request import oci

TYPE_CHECKING = False
if TYPE_CHECKING:  # resolve is imported only once a request is known
    from typing import BinaryIO

    from capctl.cgroup.undo import Undo
    from capctl.edits.edits import Edits
    from capctl.edits.rules import DeviceRule

#: Variables that change what a Python process loads before any capctl code runs.
DANGEROUS_ENV_PREFIXES = ("LD_", "PYTHON")
DANGEROUS_ENV_EXACT = frozenset({"GCONV_PATH", "LOCPATH", "HOSTALIASES"})


def dangerous_env(environ: dict[str, str] | os._Environ[str]) -> list[str]:
    """Names in ``environ`` that could inject code into the hook's interpreter."""
    return sorted(
        k for k in environ if k.startswith(DANGEROUS_ENV_PREFIXES) or k in DANGEROUS_ENV_EXACT
    )


class Log:
    """Decision log: syslog (daemon facility) and, if configured, a root-owned file.

    Quiet on stdout: runtimes may treat hook output as an error or drop it.
    """

    def __init__(self, path: str | None = None):
        self.path = path
        self.container = "-"
        # A C module: cheap to import, and silent where there is no /dev/log.
        syslog.openlog("capctl-hook", syslog.LOG_PID, syslog.LOG_DAEMON)

    def __call__(self, message: str) -> None:
        line = f"capctl-hook[{os.getpid()}]: container {self.container}: {message}"
        syslog.syslog(syslog.LOG_INFO, f"container {self.container}: {message}")
        if self.path is not None:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            fd = os.open(
                self.path,
                os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                0o640,
            )
            try:
                os.write(fd, f"{stamp} {line}\n".encode())
            finally:
                os.close(fd)


class Made:
    """What the hook made inside the container, for rollback."""

    def __init__(self) -> None:
        self.nodes: list[tuple[int, str]] = []  # (dir fd, name)
        self.dirs: list[tuple[int, str]] = []
        self.fds: list[int] = []

    def rollback(self) -> None:
        for dir_fd, name in reversed(self.nodes):
            safefs.unlink_if_present(dir_fd, name)
        for dir_fd, name in reversed(self.dirs):
            try:
                os.rmdir(name, dir_fd=dir_fd)
            except OSError:
                pass

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()


def read_limited(stream: BinaryIO, limit: int, what: str) -> bytes:
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise HookError(f"{what}: larger than {limit} bytes; refusing")
    return data


def read_bundle_config(bundle: str) -> bytes:
    path = f"{bundle.rstrip('/')}/config.json"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as err:
        raise HookError(f"{path}: cannot open: {err.strerror}") from err
    with os.fdopen(fd, "rb") as f:
        return read_limited(f, oci.MAX_CONFIG, path)


def _open_dir(parent: int, name: str, made: Made, display: str) -> int:
    existed = safefs.lstat_at(parent, name) is not None
    fd = safefs.open_dir(parent, name, create=True, mode=0o755, display=display)
    made.fds.append(fd)
    if not existed:
        made.dirs.append((parent, name))
    return fd


def _ensure(dir_fd: int, specs: list[NodeSpec], display: str, made: Made) -> list[str]:
    # One spec at a time: when a later node fails, ensure_nodes raises without returning
    # the changes it made, and the nodes made before it must still be rolled back.
    out: list[str] = []
    for spec in specs:
        (change,) = nodes.ensure_nodes(dir_fd, [spec], display_dir=display)
        if change.action is not Action.UNCHANGED:
            made.nodes.append((dir_fd, spec.name))
            out.append(f"{change.action.value} {change.path}")
    return out


def make_container_nodes(
    pid: int, rootfs: str, edits: Edits, made: Made, *, proc: str = "/proc"
) -> list[str]:
    """Create the edits' nodes under the container's rootfs, in its mount namespace."""
    from capctl.edits.edits import CAPS_DIR, DEV_DIR

    where = f"container rootfs {rootfs}"
    try:
        ns_root = os.open(f"{proc}/{pid}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as err:
        raise HookError(f"container process {pid}: cannot open its root: {err.strerror}") from err
    made.fds.append(ns_root)
    # The rootfs path comes from the runtime (trusted): resolve host-side links in it, then
    # walk it inside the container's namespace without following any.
    real = os.path.realpath(rootfs)
    rfd = safefs.open_dir(ns_root, real, display="")
    made.fds.append(rfd)
    did: list[str] = []
    dev_fd = _open_dir(rfd, "dev", made, where)
    for directory, parent_fd, name in ((DEV_DIR, rfd, "dev"), (CAPS_DIR, dev_fd, "nvidia-caps")):
        nodes_here = edits.in_dir(directory)
        if not nodes_here:
            continue
        dir_fd = dev_fd if directory == DEV_DIR else _open_dir(
            parent_fd, name, made, f"{where}/dev")
        specs = [NodeSpec(n.name, n.major, n.minor, n.mode) for n in nodes_here]
        did += _ensure(dir_fd, specs, f"{where}{directory}", made)
    return did


def run(host: Host, stdin: BinaryIO, log: Log, *, proc: str = "/proc") -> None:
    """The whole hook; raises :class:`CapctlError` on any refusal or failure."""
    state = oci.parse_state(read_limited(stdin, oci.MAX_STATE, "container state (stdin)"))
    log.container = state.id
    ctr = oci.parse_config(
        read_bundle_config(state.bundle), state.bundle, f"{state.bundle}/config.json"
    )
    if not os.path.exists(f"{proc}/{state.pid}"):
        raise HookError(f"container {state.id}: process {state.pid} is gone")
    from capctl.request.container import plan_for

    plan = plan_for(host, ctr, log, container_id=state.id)
    if plan is None:
        return

    from capctl import cgroup
    from capctl.edits.edits import from_plan

    edits = from_plan(plan, host.root)
    rules = list(edits.rules)
    backend = cgroup.devices(state.pid, proc=proc)
    if backend.allows_all():
        log(f"cgroup {backend.path} already allows every device (privileged): no rule changes")
        undo = None
    else:
        undo = backend.grant(rules, spec_rules=ctr.spec_rules)
        log(f"cgroup {backend.path}: allowed {', '.join(r.line() for r in rules)}")
    unit_undo = None
    made = Made()
    try:
        if undo is not None:
            unit_undo = unit_grant(backend.path, rules, log)
        did = make_container_nodes(state.pid, ctr.rootfs, edits, made, proc=proc)
        log("nodes: " + ("; ".join(did) or "all present"))
    except BaseException:
        made.rollback()
        try:
            if unit_undo is not None:
                unit_undo.rollback()
        finally:
            if undo is not None:
                undo.rollback()
        log("failed; rolled back the grant and the nodes made")
        raise
    finally:
        made.close()
    for handle in (unit_undo, undo):
        if handle is not None:
            handle.release()


def unit_grant(cgroup_path: str, rules: list[DeviceRule], log: Log) -> Undo | None:
    """Add *rules* to the ``DeviceAllow=`` of the systemd unit owning the cgroup, if any, so
    that ``systemctl daemon-reload`` keeps them (:mod:`capctl.cgroup.systemd`).  A cheap name
    test first: the D-Bus client is imported only for a systemd unit's cgroup."""
    if ".slice/" not in cgroup_path:
        return None
    from capctl.cgroup import systemd

    unit = systemd.unit_of(cgroup_path)
    if unit is None:
        return None
    if not systemd.systemd_booted():
        log(f"cgroup {cgroup_path} is named like unit {unit}, but systemd is not running here")
        return None
    handle = systemd.allow(unit, rules)
    log(f"systemd unit {unit}: DeviceAllow= added for {', '.join(r.line() for r in rules)}")
    return handle


def main(host: Host, *, stdin: BinaryIO | None = None) -> int:
    """Entry for ``capctl hook``: one ``capctl: error:`` line and exit 1 on failure."""
    log = Log()
    bad = dangerous_env(os.environ)
    try:
        log.path = _log_path(host)
        if bad:
            raise HookError(
                f"refusing to run with {', '.join(bad)} in the hook's environment: the runtime "
                "passes an environment to hooks; give the hook an explicit 'env' (see hooks/)"
            )
        run(host, stdin if stdin is not None else sys.stdin.buffer, log)
    except CapctlError as err:
        _report(log, str(err))
        return 1
    except OSError as err:
        where = f"{err.filename}: " if err.filename else ""
        _report(log, f"{where}{err.strerror or err}")
        return 1
    return 0


def _report(log: Log, message: str) -> None:
    try:
        log(f"error: {message}")
    except OSError:
        pass
    sys.stderr.write(f"capctl: error: {message}\n")


def _log_path(host: Host) -> str | None:
    from capctl.policy import settings

    return settings.load(host.config).hook_log

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

Configuration comes from the arguments and the root-owned config file only.  The protection
against an environment a runtime passes to hooks (CVE-2025-23266: ``LD_PRELOAD`` from the
container's image) is the hook *definition's* explicit ``env`` (``hooks/``) and ``python -I``,
which ignores every ``PYTHON*`` variable.  What :func:`main` does with ``LD_*`` and the like
is detection, not protection: the dynamic loader has acted on them before any hook code runs,
so the hook can only refuse to go on and say why.  ``PYTHON*`` variables are refused only
when the interpreter does not run isolated (``sys.flags.isolated``), since ``-I`` ignores them.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import syslog
import time

from capctl.devfs import safefs
from capctl.errors import CapctlError, HookError
from capctl.host import Host
from capctl.request import oci

TYPE_CHECKING = False
if TYPE_CHECKING:  # resolve is imported only once a request is known
    from typing import BinaryIO

    from capctl.cgroup.undo import Undo
    from capctl.edits.edits import Edits, NodeEdit
    from capctl.edits.rules import DeviceRule
    from capctl.policy.settings import Settings

#: Variables that change what a process loads before any capctl code runs: the dynamic
#: loader's and glibc's, and (unless the interpreter runs isolated) Python's.
DANGEROUS_ENV_PREFIXES = ("LD_", "PYTHON")
DANGEROUS_ENV_EXACT = frozenset({"GCONV_PATH", "LOCPATH", "HOSTALIASES"})


def dangerous_env(environ: dict[str, str] | os._Environ[str], *,
                  isolated: bool | None = None) -> list[str]:
    """Names in ``environ`` that could have injected code into the hook's process.

    ``isolated`` (default: ``sys.flags.isolated``, i.e. ``python -I``): the interpreter
    ignores ``PYTHON*``, so those are harmless and not reported.
    """
    if isolated is None:
        isolated = bool(sys.flags.isolated)
    prefixes = ("LD_",) if isolated else DANGEROUS_ENV_PREFIXES
    return sorted(k for k in environ if k.startswith(prefixes) or k in DANGEROUS_ENV_EXACT)


#: What a log line shows for each character that could break it: control characters (C0,
#: DEL, C1) as ``\n``, ``\t``, ``\r`` or ``\xNN``, the Unicode line and paragraph separators
#: as ``\uNNNN``, and the backslash doubled so that every escape reads one way.
LOG_ESCAPES: dict[int, str] = {
    c: {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}.get(c, f"\\x{c:02x}")
    for c in (*range(0x20), *range(0x7F, 0xA0))
}
LOG_ESCAPES |= {0x5C: "\\\\", 0x2028: "\\u2028", 0x2029: "\\u2029"}


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
        # Container-supplied strings (an id, a mount's destination, a device name) are in
        # ``message``: escaped, so none of them can end a line or forge the next one.
        text = f"container {self.container}: {message}".translate(LOG_ESCAPES)
        line = f"capctl-hook[{os.getpid()}]: {text}"
        syslog.syslog(syslog.LOG_INFO, text)
        if self.path is not None:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            # O_NONBLOCK: a FIFO planted at the path must not hold up every container start;
            # anything but a regular file is refused.
            fd = os.open(
                self.path,
                os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
                | os.O_NONBLOCK,
                0o640,
            )
            try:
                if os.fstat(fd).st_mode & 0o170000 != 0o100000:
                    raise OSError(errno.EINVAL, "not a regular file", self.path)
                os.write(fd, f"{stamp} {line}\n".encode())
            finally:
                os.close(fd)


class Made:
    """What the hook made inside the container, for rollback.

    The hook only ever adds: a node or directory that was there before it ran is never
    replaced or changed (:func:`_place`), so undoing what it made restores what existed.
    """

    def __init__(self) -> None:
        self.nodes: list[tuple[int, str]] = []  # (dir fd, name)
        self.dirs: list[tuple[int, str]] = []
        #: Steps made inside a user-namespaced container (:mod:`capctl.deliver.nsmount`).
        self.ns_steps: list[str] = []
        self.fds: list[int] = []
        self.pid = 0  # the container process, whose namespaces those steps are in
        self.rootfs_fd = -1

    def rollback(self) -> list[str]:
        """Undo every step, newest first, going on past failures; the errors, as text."""
        errors: list[str] = []
        if self.ns_steps:
            from capctl.deliver import nsmount

            errors += nsmount.undo(self.pid, self.rootfs_fd, self.ns_steps)
        for dir_fd, name in reversed(self.nodes):
            try:
                os.unlink(name, dir_fd=dir_fd)
            except FileNotFoundError:
                pass
            except OSError as err:
                errors.append(f"cannot remove {name}: {err.strerror}")
        for dir_fd, name in reversed(self.dirs):
            try:
                os.rmdir(name, dir_fd=dir_fd)
            except FileNotFoundError:
                pass
            except OSError as err:
                errors.append(f"cannot remove directory {name}: {err.strerror}")
        return errors

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


def _open_dir(parent: int, name: str, made: Made, display: str,
              host_dirs: HostFilesystems, rel: str) -> int:
    """Open (or make) the container's directory ``rel`` (``dev``, ``dev/nvidia-caps``),
    refusing one that is a host directory mounted into the container.

    A container may bind-mount a host directory at ``/dev`` or ``/dev/nvidia-caps`` (the host's
    own, a volume, an emptyDir); the hook must then not write there, or nodes it makes would
    outlive the container, open to every host user who can reach that directory, around the
    host nodes' modes and grants.  See :class:`HostFilesystems`.
    """
    existed = safefs.lstat_at(parent, name) is not None
    fd = safefs.open_dir(parent, name, create=True, mode=0o755, display=display)
    made.fds.append(fd)
    if not existed:
        made.dirs.append((parent, name))
    why = host_dirs.refuse(os.fstat(fd), rel)
    if why is not None:
        raise HookError(f"{display}/{name}: {why}; refusing to create device nodes in it")
    return fd


class HostFilesystems:
    """Tells the container's own ``/dev`` from a host directory mounted into the container.

    The runtime mounts a fresh tmpfs at a container's ``/dev``, in the container's mount
    namespace: the whole file system (mount root ``/``), mounted nowhere in the hook's (the
    host's) namespace.  A mount at ``<rootfs>/dev`` or ``<rootfs>/dev/nvidia-caps`` that is a
    bind of a directory (mount root not ``/``), or of a file system the host has mounted (a
    volume, the host's ``/dev``), is the host's, and the hook does not write into it.  Mounts
    come from the container's ``/proc/<pid>/mountinfo`` (before ``pivot_root``, mount points
    are host paths under the rootfs) and the host's from ``/proc/self/mountinfo``; the host's
    ``/dev`` and ``/dev/nvidia-caps`` (here and under the driver root) are also compared by
    ``(st_dev, st_ino)``, which no path trick can fake.  A directory that is no mount point
    is part of the rootfs, which the runtime chose.
    """

    def __init__(self, root: str, pid: int, rootfs: str, *, proc: str = "/proc") -> None:
        base = "" if root in ("", "/") else root.rstrip("/")
        found = set()
        for path in {"/dev", "/dev/nvidia-caps", f"{base}/dev", f"{base}/dev/nvidia-caps"}:
            try:
                st = os.stat(path)
            except OSError:
                continue
            found.add((st.st_dev, st.st_ino))
        self.dirs = frozenset(found)
        self.rootfs = rootfs.rstrip("/")
        self.host_file = f"{proc}/self/mountinfo"
        self.container_file = f"{proc}/{pid}/mountinfo"
        # Both read now, before the hook mounts anything (nsmount), and parsed as needed.
        self.container = _read_mountinfo(self.container_file)
        self.host = _read_mountinfo(self.host_file)

    def refuse(self, st: os.stat_result, rel: str) -> str | None:
        """Why the container directory ``rel`` with stat ``st`` must not be written (None:
        it may).

        Only the mount table lines that can matter are parsed (those naming the mount point,
        then the host's naming its device): a node with hundreds of pods has hundreds of
        mounts, and each start would parse them all twice.  The last line that matches wins,
        as the top of a stack of mounts is the one a path reaches."""
        from capctl.cgroup.discovery import escaped, mounts_with

        if (st.st_dev, st.st_ino) in self.dirs:
            return "is a host directory (bind-mounted into the container)"
        point = f"{self.rootfs}/{rel}"
        mounts = [m for m in mounts_with(self.container, f" {escaped(point)} ",
                                         self.container_file) if m.mount_point == point]
        if not mounts:
            return None
        mount = mounts[-1]
        if mount.root != "/":
            return f"is a bind mount of the host directory {mount.root} (of a {mount.fstype})"
        dev = f" {os.major(mount.dev)}:{os.minor(mount.dev)} "
        host = [m for m in mounts_with(self.host, dev, self.host_file) if m.dev == mount.dev]
        if host:
            return (f"is the host file system mounted at {host[-1].mount_point}, bind-mounted "
                    "into the container")
        return None


def _read_mountinfo(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return f.read()
    except OSError as err:
        raise HookError(f"{path}: cannot read: {err.strerror}") from err


def wrong_node(st: os.stat_result, node: NodeEdit) -> str | None:
    """Why an existing node is not ``node`` (None: it is): a char device with its major,
    minor and permission bits.  Owner and ACL are the runtime's business."""
    if not stat.S_ISCHR(st.st_mode):
        return f"is {safefs.file_kind(st.st_mode)}, want a char device"
    if st.st_rdev != os.makedev(node.major, node.minor):
        return (
            f"is {os.major(st.st_rdev)}:{os.minor(st.st_rdev)}, want {node.major}:{node.minor}"
        )
    if stat.S_IMODE(st.st_mode) != node.mode:
        return f"mode {stat.S_IMODE(st.st_mode):04o}, want {node.mode:04o}"
    return None


def already_there(dir_fd: int, node: NodeEdit, path: str) -> bool:
    """Whether ``node`` is in ``dir_fd`` already (False: nothing is there); a wrong one is an
    error, never replaced: the hook does not change what it did not make."""
    st = safefs.lstat_at(dir_fd, node.name)
    if st is None:
        return False
    reason = wrong_node(st, node)
    if reason is not None:
        raise HookError(f"{path}: {reason}; it was there before the hook, which does not "
                        "replace it")
    return True


def _place(dir_fd: int, node: NodeEdit, display: str, made: Made) -> str | None:
    """Make ``node`` where nothing is; leave a correct one; refuse a wrong one (never replace:
    the hook does not change what it did not make)."""
    path = f"{display}/{node.name}"
    if already_there(dir_fd, node, path):
        return None
    with safefs.exact_umask():
        try:
            os.mknod(node.name, stat.S_IFCHR | node.mode, os.makedev(node.major, node.minor),
                     dir_fd=dir_fd)
        except OSError as err:
            raise HookError(f"{path}: cannot create device node: {err.strerror}") from err
    made.nodes.append((dir_fd, node.name))
    return f"created {path}"


def make_container_nodes(
    pid: int, rootfs: str, edits: Edits, made: Made, *, proc: str = "/proc",
    host_root: str = "/", user_namespace: bool = False,
) -> list[str]:
    """Create the edits' nodes under the container's rootfs, in its mount namespace.

    A container in a user namespace cannot be given nodes by ``mknod`` (its ``/dev`` belongs
    to that namespace): it gets bind mounts of the host nodes instead, as runc does for
    ``linux.devices`` there (:mod:`capctl.deliver.nsmount`).
    """
    from capctl.edits.edits import CAPS_DIR, DEV_DIR

    where = f"container rootfs {rootfs}"
    try:
        ns_root = os.open(f"{proc}/{pid}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as err:
        raise HookError(f"container process {pid}: cannot open its root: {err.strerror}") from err
    made.fds.append(ns_root)
    made.pid = pid
    # The rootfs path comes from the runtime (trusted): resolve host-side links in it, then
    # walk it inside the container's namespace without following any.
    real = os.path.realpath(rootfs)
    rfd = safefs.open_dir(ns_root, real, display="")
    made.fds.append(rfd)
    made.rootfs_fd = rfd
    if user_namespace:
        from capctl.deliver import nsmount

        return nsmount.bind_nodes(pid, rfd, edits, made, where,
                                  HostFilesystems(host_root, pid, real, proc=proc))
    did: list[str] = []
    hosts = HostFilesystems(host_root, pid, real, proc=proc)
    dev_fd = _open_dir(rfd, "dev", made, where, hosts, "dev")
    for directory, name in ((DEV_DIR, "dev"), (CAPS_DIR, "nvidia-caps")):
        nodes_here = edits.in_dir(directory)
        if not nodes_here:
            continue
        dir_fd = dev_fd if directory == DEV_DIR else _open_dir(
            dev_fd, name, made, f"{where}/dev", hosts, "dev/nvidia-caps")
        for node in nodes_here:
            change = _place(dir_fd, node, f"{where}{directory}", made)
            if change is not None:
                did.append(change)
    return did


def run(host: Host, stdin: BinaryIO, log: Log, *, proc: str = "/proc",
        settings: Settings | None = None) -> None:
    """The whole hook; raises :class:`CapctlError` on any refusal or failure.  *settings*:
    ``host.config``'s, where :func:`main` has loaded them (for the log) already."""
    state = oci.parse_state(read_limited(stdin, oci.MAX_STATE, "container state (stdin)"))
    log.container = state.id
    ctr = oci.parse_config(
        read_bundle_config(state.bundle), state.bundle, f"{state.bundle}/config.json"
    )
    if not os.path.exists(f"{proc}/{state.pid}"):
        raise HookError(f"container {state.id}: process {state.pid} is gone")
    from capctl.request.container import plan_for

    plan = plan_for(host, ctr, log, container_id=state.id, settings=settings)
    if plan is None:
        return

    from capctl import cgroup
    from capctl.edits.edits import from_plan

    edits = from_plan(plan, host.root)
    rules = list(edits.rules)
    backend = cgroup.devices(state.pid, proc=proc)
    undo = None if backend.allows_all() else backend.grant(rules, spec_rules=ctr.spec_rules)
    unit_undo = None
    made = Made()
    # Everything after the grant, logging included, is undone on any failure: a log file that
    # cannot be written must not leave a grant behind.
    try:
        if undo is None:
            log(f"cgroup {backend.path} already allows every device (privileged): "
                "no rule changes")
        else:
            log(f"cgroup {backend.path}: allowed {', '.join(r.line() for r in rules)}")
            unit_undo = unit_grant(backend.path, rules, log)
        did = make_container_nodes(state.pid, ctr.rootfs, edits, made, proc=proc,
                                   host_root=host.root, user_namespace=ctr.user_namespace)
        log("nodes: " + ("; ".join(did) or "all present"))
    except BaseException as failure:
        errors = rollback(made, undo, unit_undo)
        try:
            log("failed; rolled back the grant and the nodes made"
                + (f" (rollback errors: {'; '.join(errors)})" if errors else ""))
        except OSError:
            pass  # the failure itself is reported below
        if errors and isinstance(failure, CapctlError):
            raise HookError(f"{failure}; and rolling back: {'; '.join(errors)}") from failure
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


def rollback(made: Made, undo: Undo | None, unit_undo: Undo | None = None) -> list[str]:
    """Undo the nodes, then the systemd unit's entries, then the grant: every step is tried;
    the errors of all, as text."""
    errors = made.rollback()
    for what, handle in (("systemd unit", unit_undo), ("cgroup", undo)):
        if handle is not None:
            try:
                handle.rollback()
            except (CapctlError, OSError) as err:
                errors.append(f"{what}: {err}")
    return errors


def main(host: Host, *, stdin: BinaryIO | None = None) -> int:
    """Entry for ``capctl hook``: one ``capctl: error:`` line and exit 1 on failure."""
    log = Log()
    bad = dangerous_env(os.environ)
    try:
        own, host = _settings(host)
        log.path = own.hook_log
        if bad:
            # Detection only: a preloaded library has already run by now.
            raise HookError(
                f"refusing to run with {', '.join(bad)} in the hook's environment: the runtime "
                "passes an environment to hooks; give the hook an explicit 'env' (see hooks/)"
            )
        run(host, stdin if stdin is not None else sys.stdin.buffer, log, settings=own)
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


def _settings(host: Host) -> tuple[Settings, Host]:
    """The config's settings, and ``host`` with its ``[host]`` for what no option gave (the
    one precedence: :func:`capctl.host.with_host_table`); both from the settings cache."""
    from capctl.host import with_host_table
    from capctl.policy import settings

    if host.root_from != "default" and host.topology_from != "default":
        return settings.load(host.config), host
    own, hs = settings.load_with_host(host.config, settings.read_config(host.config))
    return own, with_host_table(host, hs.driver_root, hs.topology)

"""Device nodes for a container in a user namespace: bind mounts made inside its namespaces.

Why not ``mknod``: the container's ``/dev`` is a tmpfs mounted in its user namespace, and the
kernel refuses to create any inode there for an id that namespace does not map (host root
gets ``EOVERFLOW``); a node made by the namespace's own root would be unusable anyway
(``SB_I_NODEV``).  runc meets the same limit for ``linux.devices`` and bind-mounts the host's
nodes instead (runc ``libcontainer/rootfs_linux.go``, ``bindMountDeviceNode``); so does this.

How: a forked child (``setns(2)`` needs a single-threaded caller that shares no
``fs_struct``, which a fork is), in this order:

1. ``setns`` into the container's **mount** namespace, still host root.  At hook time runc
   has not called ``pivot_root``, so the host's tree is visible there; the child opens each
   host node with ``O_PATH | O_NOFOLLOW`` now, because a bind mount's source must be a mount
   of the caller's namespace (``do_loopback``: ``check_mnt``).
2. ``setns`` into the container's **user** namespace and become its root (``setresuid(0)``),
   so that the mount points and ``/dev/nvidia-caps`` are created with ids the container's
   ``/dev`` maps, and keep ``CAP_SYS_ADMIN`` over the mount namespace it owns.
3. Per node: an empty regular file as the mount point (``O_CREAT | O_EXCL``), then
   ``mount(/proc/self/fd/<host node>, /proc/self/fd/<mount point>, MS_BIND)``, then a
   remount adding ``nosuid,noexec`` (:class:`capctl.edits.edits.Mount`'s options) through
   the name opened again, since a remount must name the mount's root (else ``EINVAL``).

``open_tree``/``move_mount`` would not spare the setns: ``move_mount`` also wants its target
in the caller's mount namespace.  The child reports each step on a pipe, so the hook can
undo exactly what it made; nothing that existed before is changed (a correct existing node
is left alone, a wrong one fails the start).
"""

from __future__ import annotations

import os

from capctl.devfs import safefs
from capctl.errors import HookError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from capctl.deliver.hook import HostFilesystems, Made
    from capctl.edits.edits import Edits

# <linux/sched.h>, <linux/mount.h>
CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_NOSUID = 0x2
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MNT_DETACH = 0x2
_PATH = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


def _libc() -> tuple[Callable[..., int], Callable[..., int], Callable[..., int]]:
    import ctypes  # only for user-namespaced containers: not on every hook's path

    libc = ctypes.CDLL(None, use_errno=True)

    def call(name: str) -> Callable[..., int]:
        fn = getattr(libc, name)

        def checked(*args: object) -> int:
            if fn(*args) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"{name}: {os.strerror(err)}")
            return 0

        return checked

    return call("setns"), call("mount"), call("umount2")


def _in_child(pid: int, work: Callable[[Callable[[str], None]], None]) -> list[str]:
    """Run ``work(report)`` in a forked child; the lines it reported.  An ``E`` line (or a
    child that dies) is an error: HookError carrying the lines that came before."""
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - measured through the e2e tests
        code = 0
        os.close(read_fd)

        def report(line: str) -> None:
            os.write(write_fd, (line.replace("\n", " ") + "\n").encode())

        try:
            work(report)
        except BaseException as err:
            try:
                report(f"E {err}")
            finally:
                code = 1
        os._exit(code)
    os.close(write_fd)
    chunks = []
    with os.fdopen(read_fd, "rb") as pipe:
        while chunk := pipe.read(65536):
            chunks.append(chunk)
    _pid, status = os.waitpid(child, 0)
    lines = b"".join(chunks).decode(errors="replace").splitlines()
    errors = [line[2:] for line in lines if line.startswith("E ")]
    if errors or not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
        raise _ChildError(errors[0] if errors else f"child exited with status {status}",
                          [line for line in lines if not line.startswith("E ")])
    return lines


class _ChildError(HookError):
    def __init__(self, message: str, done: list[str]):
        super().__init__(message)
        self.done = done


def _enter(pid: int, setns: Callable[..., int], *, user: bool) -> None:
    fd = os.open(f"/proc/{pid}/ns/{'user' if user else 'mnt'}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(fd, CLONE_NEWUSER if user else CLONE_NEWNS)
    finally:
        os.close(fd)


def bind_nodes(pid: int, rootfs_fd: int, edits: Edits, made: Made, where: str,
               host_dirs: HostFilesystems) -> list[str]:
    """Bind-mount each node's host node at its path in the container (see the module doc).

    Records what it made in ``made.ns_steps`` (for :func:`undo`); returns what it did, as
    text for the log.
    """
    from capctl.deliver.hook import already_there, wrong_node
    from capctl.edits.edits import CAPS_DIR, DEV_DIR

    setns, mount, _umount = _libc()
    groups = [(d, edits.in_dir(d)) for d in (DEV_DIR, CAPS_DIR)]

    def work(report: Callable[[str], None]) -> None:
        _enter(pid, setns, user=False)
        sources = {n.path: os.open(n.host_path, _PATH) for _d, ns in groups for n in ns}
        _enter(pid, setns, user=True)
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
        os.umask(0)
        dirs: dict[str, int] = {}
        for directory, nodes_here in ((DEV_DIR, ()), *groups):
            if not nodes_here and (directory in dirs or directory != DEV_DIR):
                continue  # /dev is opened (and checked) first, other directories when used
            rel = directory.lstrip("/")
            head, _, name = rel.rpartition("/")
            parent = dirs["/" + head] if head else rootfs_fd
            if directory not in dirs:
                existed = safefs.lstat_at(parent, name) is not None
                dir_fd = safefs.open_dir(parent, name, create=True, mode=0o755,
                                         display=f"{where}/{head}".rstrip("/"))
                if not existed:
                    report(f"D {rel}")
                why = host_dirs.refuse(os.fstat(dir_fd), rel)
                if why is not None:
                    raise HookError(f"{where}{directory}: {why}; refusing to mount device "
                                    "nodes in it")
                dirs[directory] = dir_fd
            dir_fd = dirs[directory]
            for node in nodes_here:
                path = f"{where}{node.path}"
                if already_there(dir_fd, node, path):
                    continue
                fd = os.open(node.name, os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                             | os.O_RDONLY, 0o000, dir_fd=dir_fd)
                report(f"F {rel}/{node.name}")
                try:
                    mount(f"/proc/self/fd/{sources[node.path]}".encode(),
                          f"/proc/self/fd/{fd}".encode(), None, MS_BIND, None)
                finally:
                    os.close(fd)
                report(f"M {rel}/{node.name}")
                # The remount must name the new mount's root: open the name again (the fd
                # above is the file underneath).
                fd = os.open(node.name, _PATH, dir_fd=dir_fd)
                try:
                    mount(None, f"/proc/self/fd/{fd}".encode(), None,
                          MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NOEXEC, None)
                finally:
                    os.close(fd)
                mounted = os.stat(node.name, dir_fd=dir_fd, follow_symlinks=False)
                reason = wrong_node(mounted, node)
                if reason is not None:
                    raise HookError(f"{path}: the bind mount of {node.host_path} {reason}")
                report(f"B {path}")

    try:
        lines = _in_child(pid, work)
    except _ChildError as err:
        made.ns_steps += [line for line in err.done if line[:2] in ("D ", "F ", "M ")]
        raise
    made.ns_steps += [line for line in lines if line[:2] in ("D ", "F ", "M ")]
    return [f"bind-mounted {line[2:]}" for line in lines if line.startswith("B ")]


def undo(pid: int, rootfs_fd: int, steps: list[str]) -> list[str]:
    """Undo ``steps`` newest first (unmount, remove the mount point, remove a directory),
    inside the container's namespaces, going on past failures; the errors as text."""
    setns, _mount, umount = _libc()

    def work(report: Callable[[str], None]) -> None:
        _enter(pid, setns, user=False)
        _enter(pid, setns, user=True)
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
        for step in reversed(steps):
            kind, rel = step[0], step[2:]
            try:
                path = f"/proc/self/fd/{rootfs_fd}/{rel}"
                if kind == "M":
                    umount(path.encode(), MNT_DETACH)
                elif kind == "F":
                    os.unlink(path)
                else:
                    os.rmdir(path)
            except OSError as err:
                report(f"X {rel}: {err.strerror}")

    try:
        lines = _in_child(pid, work)
    except HookError as err:
        return [f"undoing the bind mounts: {err}"]
    return [line[2:] for line in lines if line.startswith("X ")]

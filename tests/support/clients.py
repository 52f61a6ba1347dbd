"""What the podman, Docker and containerd harnesses share (no capctl imports, on purpose).

* :func:`make_rootfs`: a busybox-static root filesystem (``/bin/busybox`` plus applet links).
* :func:`make_nodes`: char device nodes of an unregistered major (:data:`TEST_MAJOR`), the
  kernel's answer to opening one tells the device cgroup's verdict: ``ENXIO`` allowed (no
  driver behind the major), ``EPERM`` denied.
* :func:`classify` / :func:`probe_argv`: open a path inside a container with busybox and
  name the result (``"OK"``, ``"ENXIO"``, ``"EPERM"``, ``"ENOENT"``, ``"EACCES"``, or
  ``"?<rc>:<stderr>"`` for anything else, a runtime error included).
* :class:`MountNamespace`: a private mount namespace with cgroup2 on ``/sys/fs/cgroup``
  (how the harnesses run a client on cgroup2 on a hybrid host; nothing on a v2-only host,
  where clients use cgroup2 as they are: ``tests/support/hostcg.py``).
* Cleanup helpers that only ever remove child cgroups (never a hierarchy root), only kill
  processes in cgroups the harness owns, and only remove shared leftovers (``libpod_parent``,
  ``docker``, ``default``, ``/run/containerd/s``...) that the harness saw appear and that are
  empty.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.hostcg import CGROUP_ROOT, LAYOUT

BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "sleep", "cat", "ls", "echo", "true", "test", "stat", "env", "id")
SLEEP = ("/bin/busybox", "sleep", "3600")
TEST_MAJOR = 238  # unregistered: opening a node gives ENXIO when the cgroup allows it
OWN_PREFIX = "capctl-test-"

_ERRNO_TEXT = (
    ("ENXIO", "No such device or address"),
    ("EPERM", "Operation not permitted"),
    ("ENOENT", "No such file or directory"),
    ("ENOENT", "no such file"),  # busybox's own text for ENOENT
    ("EACCES", "Permission denied"),
)


@dataclass
class Container:
    """A container started by one of the harnesses.

    *cgroup*: its cgroup path relative to a hierarchy root (``/capctl-test-…/…``); on the
    host, :meth:`tests.support.hostcg.Layout.device_dir` (v1 devices or cgroup2).
    """

    id: str
    name: str
    cgroup: str
    pid: int = 0


def unique_name(prefix: str = OWN_PREFIX) -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def short_tmpdir(prefix: str) -> Path:
    """A fresh directory directly under /tmp (short: socket and runroot length limits)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


# --- root filesystems and nodes ------------------------------------------------------------


def make_rootfs(path: Path, applets: Iterable[str] = APPLETS) -> Path:
    """A busybox-static root filesystem at *path* (created); returns *path*."""
    for sub in ("bin", "proc", "dev", "sys", "tmp", "etc", "run"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, path / "bin" / "busybox")
    for applet in applets:
        link = path / "bin" / applet
        if not link.is_symlink():
            link.symlink_to("busybox")
    return path


def make_nodes(directory: Path, minors: Iterable[int], major: int = TEST_MAJOR) -> list[Path]:
    """Char device nodes ``n<minor>`` (mode 0666) of an unregistered major."""
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for minor in minors:
        node = directory / f"n{minor}"
        os.mknod(node, 0o20666, os.makedev(major, minor))
        os.chmod(node, 0o666)
        out.append(node)
    return out


# --- probing -------------------------------------------------------------------------------


def probe_argv(path: str, mode: str = "r") -> list[str]:
    """busybox command line that opens *path* (``r``/``w``/``rw``) and exits 0 on success."""
    redirect = {"r": "<", "w": ">", "rw": "<>"}[mode]
    return ["/bin/busybox", "sh", "-c", f"exec 3{redirect} {shlex.quote(path)}"]


def classify(res: subprocess.CompletedProcess[str], path: str) -> str:
    """Name the result of running :func:`probe_argv` (busybox: ``can't open PATH: TEXT``)."""
    if res.returncode == 0:
        return "OK"
    err = res.stderr or ""
    for name, text in _ERRNO_TEXT:
        if f"can't open {path}: {text}" in err or f"can't open '{path}': {text}" in err:
            return name
    return f"?{res.returncode}:{err.strip()}"


def run_cmd(
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float = 60,
    env: dict[str, str] | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run *argv* with captured text output; on *check*, a failure raises with its stderr."""
    res = subprocess.run(
        list(argv),
        text=True,
        capture_output=True,
        timeout=timeout,
        env=env,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
    )
    if check and res.returncode != 0:
        raise RuntimeError(
            f"{shlex.join(argv)} failed ({res.returncode}): {res.stderr.strip() or res.stdout.strip()}"
        )
    return res


# --- namespaces ----------------------------------------------------------------------------


class MountNamespace:
    """A private mount namespace (``unshare -m``, private propagation) with cgroup2 mounted
    on ``/sys/fs/cgroup``, held open by a ``sleep``; :meth:`command` prefixes an argv to run
    there.  Processes started in it (conmon, containers) keep it alive after :meth:`close`.
    *setup*: more shell commands to run there first (mounts of a simulated node's paths);
    with *cgroup2* false, the host's cgroup mounts stay as they are.  On a v2-only host
    cgroup2 is there already: with no *setup* there is nothing to do, and :meth:`command`
    returns the argv as is.
    """

    def __init__(self, setup: str = "", *, cgroup2: bool = True) -> None:
        self._holder: subprocess.Popen[str] | None = None
        self.setup = setup
        self.cgroup2 = cgroup2

    def __enter__(self) -> MountNamespace:
        if self.cgroup2 and LAYOUT.v2 is None:
            raise RuntimeError("no cgroup2 hierarchy on this host")
        mount_v2 = self.cgroup2 and not LAYOUT.v2_only
        if not mount_v2 and not self.setup:
            return self
        cgroup = "mount -t cgroup2 none /sys/fs/cgroup; " if mount_v2 else ""
        script = (
            f"set -e; mount --make-rprivate /; {cgroup}"
            f"{self.setup}\necho ready && exec sleep infinity"
        )
        self._holder = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._holder.stdout is not None
        if self._holder.stdout.readline().strip() != "ready":
            self.close()
            raise RuntimeError("could not set up the private mount namespace")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pid(self) -> int:
        assert self._holder is not None
        return self._holder.pid

    def command(self, argv: Sequence[str]) -> list[str]:
        if self._holder is None:
            return list(argv)
        return ["nsenter", "-t", str(self.pid), "-m", "--", *argv]

    def close(self) -> None:
        if self._holder is None:
            return
        self._holder.kill()
        self._holder.wait()
        if self._holder.stdout:
            self._holder.stdout.close()
        self._holder = None


# --- processes -----------------------------------------------------------------------------


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """SIGTERM the process we started, SIGKILL it after *timeout*, and reap it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()


def terminate(proc: subprocess.Popen[str], timeout: float = 20) -> str:
    """SIGTERM, as systemd and the kubelet stop a watcher; SIGKILL after *timeout*; its
    stderr (the process was started with ``stderr=PIPE``)."""
    proc.send_signal(signal.SIGTERM)
    try:
        _out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _out, err = proc.communicate()
    return err or ""


def kill_pid(pid: int, timeout: float = 10) -> None:
    """SIGTERM a process we started (by PID; not our child), then SIGKILL after *timeout*."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not Path(f"/proc/{pid}").exists() or _is_zombie(pid):
                return
            time.sleep(0.05)


def pids_with_arg(text: str) -> list[int]:
    """PIDs whose command line contains *text* (a path unique to one harness)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(int(entry.name))
    return found


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


def wait_for(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05
) -> None:
    """Poll *predicate* until it returns true; RuntimeError after *timeout*."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


# --- mounts --------------------------------------------------------------------------------


def _unescape(field: str) -> str:
    return field.encode().decode("unicode_escape") if "\\" in field else field


def mounts_under(root: Path) -> list[Path]:
    """Mount points at or below *root* in our mount namespace, deepest first."""
    top = os.path.realpath(root)
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = _unescape(line.split()[4])
            if point == top or point.startswith(top + "/"):
                found.append(Path(point))
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


def unmount_under(root: Path) -> None:
    """Lazily unmount everything left mounted at or below *root* (best effort)."""
    for point in mounts_under(root):
        subprocess.run(["umount", "-l", str(point)], capture_output=True, check=False)


def stop_processes_naming(path: Path, timeout: float = 15.0) -> None:
    """Wait (bounded) for every process naming ``path`` to exit, then kill what is left (a
    harness's state directory: conmon and the ``podman container cleanup`` it runs when a
    container exits); a tree removed while one still runs is written again behind our back."""
    text = str(path)
    with contextlib.suppress(RuntimeError):
        wait_for(lambda: not pids_with_arg(text), timeout, f"processes naming {text}")
    for pid in pids_with_arg(text):
        kill_pid(pid, timeout=5)


def remove_tree(root: Path) -> None:
    """Unmount leftovers under *root*, then delete it."""
    if not root.exists():
        return
    unmount_under(root)
    shutil.rmtree(root, ignore_errors=True)


# --- cgroups -------------------------------------------------------------------------------


def host_hierarchies() -> list[Path]:
    """The cgroup hierarchy mount points under /sys/fs/cgroup (v1 controllers and cgroup2)."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            fstype = fields[fields.index("-") + 1]
            point = Path(_unescape(fields[4]))
            if fstype in ("cgroup", "cgroup2") and CGROUP_ROOT in (point, *point.parents):
                found.append(point)
    return sorted(set(found))


def cgroup_dirs(rel: str) -> list[Path]:
    """The existing host directories of cgroup *rel* (``/a/b``) in every hierarchy."""
    rel = rel.strip("/")
    if not rel:
        return []
    return [h / rel for h in host_hierarchies() if (h / rel).is_dir()]


def _check_child(path: Path) -> None:
    """Refuse anything that is not strictly below a hierarchy root."""
    for hierarchy in host_hierarchies():
        if hierarchy in path.parents:
            assert not os.path.ismount(path), path
            return
    raise AssertionError(f"not a child cgroup: {path}")


def _procs(path: Path) -> list[int]:
    try:
        return [int(p) for p in (path / "cgroup.procs").read_text().split()]
    except OSError:
        return []


def _rmdir(path: Path) -> bool:
    for _ in range(100):
        try:
            path.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError as err:
            if err.errno != errno.EBUSY:
                return False
            time.sleep(0.02)
    return False


def remove_cgroup_tree(path: Path) -> None:
    """Remove our own cgroup *path* and its children, killing what is left in them."""
    if not path.is_dir():
        return
    _check_child(path)
    for child in sorted((p for p in path.iterdir() if p.is_dir()), reverse=True):
        remove_cgroup_tree(child)
    for pid in _procs(path):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _rmdir(path)


def remove_empty_cgroup(path: Path) -> bool:
    """Remove the shared cgroup *path* and its children if none holds a process."""
    if not path.is_dir():
        return True
    _check_child(path)
    ok = all(remove_empty_cgroup(c) for c in path.iterdir() if c.is_dir())
    if not ok or _procs(path):
        return False
    return _rmdir(path)


class Leftovers:
    """Shared names a client creates on first use (``libpod_parent``, ``docker``,
    ``/run/containerd/s``...): remembers which were absent when the harness started, and at
    :meth:`clean` removes those that appeared since, only if they are empty.
    """

    def __init__(self, cgroups: Sequence[str] = (), dirs: Sequence[Path] = ()):
        self.cgroups = [c for c in cgroups if not cgroup_dirs(c)]
        self.dirs = [d for d in dirs if not d.exists()]

    def clean(self) -> None:
        for rel in self.cgroups:
            for path in cgroup_dirs(rel):
                with contextlib.suppress(OSError):
                    remove_empty_cgroup(path)
        # Deepest first, so that /run/containerd/s goes before /run/containerd.  A shim that
        # is still exiting may remove its socket a moment later: wait briefly for that.
        for path in sorted(self.dirs, key=lambda p: len(p.parts), reverse=True):
            for _ in range(10):
                try:
                    path.rmdir()
                except FileNotFoundError:
                    break
                except OSError as err:
                    if err.errno != errno.ENOTEMPTY:
                        break
                    time.sleep(0.05)
                else:
                    break

"""A real systemd as PID 1, in systemd-nspawn, for tests of the systemd cgroup driver.

    rootfs = ensure_rootfs()                          # cached Debian bookworm (minutes, once)
    with SystemdContainer(rootfs, cgroup2=False, binds=[Bind(tmp_path)]) as box:
        box.run(["systemctl", "is-system-running"])    # nsenter -t <pid> -a -- ...
        box.systemd_run(["runc", "--systemd-cgroup", ...])  # systemd-run --wait --pipe
        box.run([box.python(), "-c", "import capctl"])

How this works on the development machine (PID 1 is not systemd; cgroup v1 hybrid with
cgroup2 at ``/sys/fs/cgroup/unified``) is described in ``shared/labs/README.md``, "A real
systemd as PID 1".  In short:

* :func:`ensure_rootfs`: ``debootstrap --variant=minbase`` of bookworm with systemd, dbus,
  runc, busybox-static and python3, cached outside the repository in
  ``/var/cache/capctl-tests/bookworm`` (``$CAPCTL_TEST_CACHE`` replaces
  ``/var/cache/capctl-tests``).  Built in a temporary directory beside it and renamed into place
  when complete; a stamp file inside lists the package set, so a changed set rebuilds.  An
  exclusive ``flock`` on ``bookworm.lock`` keeps concurrent callers from building twice.
* :class:`SystemdContainer`: boots that tree with ``systemd-nspawn -b``.  The root is mounted
  with ``--volatile=overlay`` (a tmpfs over the read-only cache), so every boot starts from
  the pristine tree and containers may run side by side.  nspawn is started from fresh child
  cgroups of the launcher's own cgroups in every host hierarchy (never a root cgroup).  With
  ``cgroup2=False`` the container gets cgroup v1: its controller hierarchies are remounted
  ``rw`` from inside and systemd is re-executed.  The checkout is bind-mounted read-only at
  its own path.  Teardown (also after failures): ``systemctl poweroff``, then kill by PID if
  needed, remove the launch cgroups, the machine's ``/run/systemd/nspawn`` entries, and the
  state directory.

This module does not import capctl: it is the harness, not the code under test.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SUITE = "bookworm"
VARIANT = "minbase"
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "runc",
    "busybox-static",
    "python3",
    "python3-venv",
)
CACHE_ENV = "CAPCTL_TEST_CACHE"
DEFAULT_CACHE = Path("/var/cache/capctl-tests")
DEBIAN_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
SOURCES_LIST = Path("/etc/apt/sources.list")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
STAMP = ".capctl-rootfs.json"
BUILD_TIMEOUT = 1800.0

REPO = Path(__file__).resolve().parents[2]
CGROUP_ROOT = Path("/sys/fs/cgroup")
NSPAWN_RUN = Path("/run/systemd/nspawn")
GUEST_STATE = "/capctl-state"  # where the per-container state directory appears inside


def missing_tools() -> list[str]:
    """Host tools this harness needs and cannot find (empty when it can run)."""
    tools = ("systemd-nspawn", "debootstrap", "nsenter")
    return [t for t in tools if shutil.which(t) is None]


# --- the cached root filesystem --------------------------------------------------------------


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def _stamp() -> dict[str, Any]:
    return {"suite": SUITE, "variant": VARIANT, "packages": sorted(PACKAGES)}


def _stamp_ok(rootfs: Path) -> bool:
    try:
        return bool(json.loads((rootfs / STAMP).read_text()) == _stamp())
    except (OSError, ValueError):
        return False


def debian_mirror() -> str:
    """The host's Debian mirror: the first ``URIs:`` of a deb822 stanza for the suite.

    Falls back to a one-line ``deb URI bookworm ...`` in ``/etc/apt/sources.list``, then to
    ``deb.debian.org`` when neither file names one (``$CAPCTL_TEST_MIRROR`` overrides all).
    """
    if env := os.environ.get("CAPCTL_TEST_MIRROR"):
        return env
    with contextlib.suppress(OSError):
        for stanza in DEBIAN_SOURCES.read_text().split("\n\n"):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                key, sep, value = line.partition(":")
                if sep and not line.startswith(("#", " ", "\t")):
                    fields[key.strip().lower()] = value.strip()
            suites = fields.get("suites", "").split()
            if fields.get("enabled", "yes") != "no" and SUITE in suites and fields.get("uris"):
                return fields["uris"].split()[0]
    with contextlib.suppress(OSError):
        for line in SOURCES_LIST.read_text().splitlines():
            words = [w for w in line.split() if not w.startswith("[")]
            if len(words) >= 3 and words[0] == "deb" and words[2] == SUITE:
                return words[1]
    return DEFAULT_MIRROR


def _mounts_under(path: Path) -> list[str]:
    """Mount points at or below *path* (deepest first)."""
    prefix = str(path.resolve())
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                points.append(point)
    return sorted(points, key=len, reverse=True)


def _remove_tree(path: Path) -> None:
    """``rm -rf`` a build or state directory, never into a mount (a killed debootstrap
    may leave ``proc``/``sys`` mounted in its target)."""
    for point in _mounts_under(path):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    if _mounts_under(path):
        raise RuntimeError(f"{path}: mounts left below it; not removing")
    shutil.rmtree(path, ignore_errors=True)


def ensure_rootfs() -> Path:
    """The cached bookworm root (``<cache>/bookworm``), debootstrapped on first use."""
    cache = cache_dir()
    rootfs = cache / SUITE
    if _stamp_ok(rootfs):
        return rootfs
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f"{SUITE}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second caller waits here, then finds it built
        if _stamp_ok(rootfs):
            return rootfs
        for stale in cache.glob(f"{SUITE}.tmp-*"):  # builds killed half-way (we hold the lock)
            _remove_tree(stale)
        build = Path(tempfile.mkdtemp(prefix=f"{SUITE}.tmp-", dir=cache))
        try:
            build.chmod(0o755)  # the container's "/" (mkdtemp makes it 0700)
            _debootstrap(build)
            old = cache / f"{SUITE}.tmp-old-{uuid.uuid4().hex[:8]}"
            if rootfs.exists():
                rootfs.rename(old)  # an outdated package set: replaced, then removed
            build.rename(rootfs)
            _remove_tree(old)
        except BaseException:
            _remove_tree(build)
            raise
    return rootfs


def _debootstrap(target: Path) -> None:
    log = target.parent / f"{target.name}.log"
    argv = [
        "debootstrap",
        f"--variant={VARIANT}",
        f"--include={','.join(PACKAGES)}",
        SUITE,
        str(target),
        debian_mirror(),
    ]
    try:
        with log.open("w") as out:
            res = subprocess.run(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                timeout=BUILD_TIMEOUT, check=False,
            )  # fmt: skip
        if res.returncode != 0:
            tail = "\n".join(log.read_text().splitlines()[-20:])
            raise RuntimeError(f"{' '.join(argv)} failed ({res.returncode}):\n{tail}")
        # Mount points for binds, and a stamp that marks the tree complete (written last).
        (target / GUEST_STATE.lstrip("/")).mkdir(exist_ok=True)
        (target / STAMP).write_text(json.dumps(_stamp(), indent=1) + "\n")
    finally:
        log.unlink(missing_ok=True)


# --- launch cgroups ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Hierarchy:
    """One host cgroup hierarchy: its mount point and the launcher's own cgroup in it."""

    mount: Path
    current: Path  # the launcher's cgroup directory (may be the mount point itself)
    v2: bool
    controllers: frozenset[str]  # v1 controllers and "name=..." (empty for cgroup2)


def host_hierarchies() -> list[Hierarchy]:
    """Every cgroup hierarchy mounted on the host, with this process's cgroup in each."""
    own: dict[frozenset[str], str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        own[frozenset(ctrls.split(",")) if ctrls else frozenset()] = path
    seen: set[str] = set()
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        sep = fields.index("-")
        fstype, superopts = fields[sep + 1], set(fields[sep + 3].split(","))
        if fstype not in ("cgroup", "cgroup2") or fields[2] in seen:
            continue
        seen.add(fields[2])  # one mount per hierarchy (major:minor)
        root, mount = fields[3], Path(fields[4].replace("\\040", " "))
        if fstype == "cgroup2":
            key: frozenset[str] = frozenset()
        else:
            match = [k for k in own if k and k <= superopts]
            if not match:
                continue
            key = match[0]
        cgpath = own.get(key)
        if cgpath is None or not (cgpath == root or cgpath.startswith(root.rstrip("/") + "/")):
            continue
        rel = cgpath[len(root) :].strip("/")
        found.append(Hierarchy(mount, mount / rel if rel else mount, fstype == "cgroup2", key))
    return found


def _remove_cgroup(path: Path) -> None:
    """Kill what is left in a cgroup we created and remove it, children first."""
    if not path.is_dir():
        return
    for child in (p for p in path.iterdir() if p.is_dir()):
        _remove_cgroup(child)
    for _ in range(250):
        with contextlib.suppress(OSError):
            for pid in (path / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        try:
            path.rmdir()
            return
        except OSError as err:
            if err.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                raise
            time.sleep(0.02)
    raise RuntimeError(f"could not remove cgroup {path}")


def make_launch_cgroups(name: str) -> list[Path]:
    """A fresh child *name* of the launcher's cgroup in every hierarchy (cpuset filled in)."""
    assert name.startswith("capctl-nspawn-"), name
    made: list[Path] = []
    try:
        for h in host_hierarchies():
            path = h.current / name
            assert path.parent != path and path != h.mount and h.mount in path.parents, path
            path.mkdir()
            made.append(path)
            if "cpuset" in h.controllers:
                for knob in ("cpuset.cpus", "cpuset.mems"):
                    if not (path / knob).read_text().strip():
                        (path / knob).write_text((h.current / knob).read_text())
    except BaseException:
        remove_launch_cgroups(made)
        raise
    return made


def remove_launch_cgroups(paths: Sequence[Path]) -> None:
    for path in reversed(paths):
        with contextlib.suppress(OSError, RuntimeError):
            _remove_cgroup(path)


# --- the container ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Bind:
    """``--bind`` (or ``--bind-ro``) of *source* at *destination* (default: the same path)."""

    source: Path
    destination: str | None = None
    readonly: bool = False

    def option(self) -> str:
        flag = "--bind-ro" if self.readonly else "--bind"
        return f"{flag}={self.source}:{self.destination or self.source}"


GUEST_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "TERM": "dumb",
    "SYSTEMD_PAGER": "cat",
    "SYSTEMD_COLORS": "0",
}


class BootError(RuntimeError):
    pass


class SystemdContainer:
    """systemd 252 as PID 1 of a systemd-nspawn container; see the module docstring.

    ``state``: a host temporary directory, bind-mounted at :data:`GUEST_STATE` inside (put
    bundles, nodes and logs there; :meth:`guest_path` maps host paths to guest paths).
    ``log``: nspawn's console output.  ``boot_seconds``: time to ``running``/``degraded``.
    """

    def __init__(
        self,
        rootfs: Path,
        *,
        cgroup2: bool,
        binds: Sequence[Bind | Path] = (),
        bind_checkout: bool = True,
        boot_timeout: float = 120.0,
    ):
        self.rootfs = rootfs
        self.cgroup2 = cgroup2
        self.binds = [b if isinstance(b, Bind) else Bind(Path(b)) for b in binds]
        self.bind_checkout = bind_checkout
        self.boot_timeout = boot_timeout
        self.machine = f"capctl-{uuid.uuid4().hex[:10]}"
        self.state = Path(tempfile.gettempdir()) / f"capctl-nspawn-{self.machine[7:]}"
        self.log = self.state / "nspawn.log"
        self.pid = 0  # the container's systemd, as seen from the host
        self.system_state = ""
        self.boot_seconds = 0.0
        self.failed_units = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._cgroups: list[Path] = []
        self._python: str | None = None
        self._nsenter = shutil.which("nsenter") or "nsenter"

    # --- lifecycle -----------------------------------------------------------------------

    def __enter__(self) -> SystemdContainer:
        try:
            self.boot()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _argv(self) -> list[str]:
        argv = [
            shutil.which("systemd-nspawn") or "systemd-nspawn",
            f"--directory={self.rootfs}",
            f"--machine={self.machine}",
            "--volatile=overlay",
            "--register=no",
            "--keep-unit",
            "--capability=all",
            "--console=read-only",
            "--link-journal=no",
            f"--bind={self.state}:{GUEST_STATE}",
        ]
        extra = list(self.binds)
        if self.bind_checkout:
            extra.append(Bind(REPO, readonly=True))
            site = host_site_packages()
            if site is not None and REPO not in site.parents:
                extra.append(Bind(site, readonly=True))
        argv += [b.option() for b in extra]
        return [*argv, "--boot"]

    def boot(self) -> None:
        start = time.monotonic()
        self.state.mkdir(mode=0o700)
        self._cgroups = make_launch_cgroups(self.state.name)
        env = dict(os.environ)
        env["SYSTEMD_SECCOMP"] = "0"
        env["SYSTEMD_NSPAWN_UNIFIED_HIERARCHY"] = "1" if self.cgroup2 else "0"
        with self.log.open("wb") as out:
            # A gate: the shell waits until it sits in the launch cgroups, then execs nspawn.
            self._proc = subprocess.Popen(
                ["sh", "-c", 'read -r _ && exec "$@" </dev/null', "sh", *self._argv()],
                stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT, env=env,
                start_new_session=True,
            )  # fmt: skip
        assert self._proc.stdin is not None
        for cg in self._cgroups:
            (cg / "cgroup.procs").write_text(str(self._proc.pid))
        self._proc.stdin.write(b"go\n")
        self._proc.stdin.close()
        deadline = start + self.boot_timeout
        self.pid = self._find_init(deadline)
        self._wait_running(deadline)
        if not self.cgroup2:
            self._make_v1_writable()
            self._wait_running(deadline)
        self.boot_seconds = time.monotonic() - start
        if self.system_state == "degraded":
            self.failed_units = self.run(
                ["systemctl", "--failed", "--no-legend", "--plain"], check=False
            ).stdout.strip()

    def _alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _boot_failed(self, why: str) -> BootError:
        tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])
        return BootError(f"{self.machine}: {why}\n--- nspawn output ---\n{tail}")

    def _find_init(self, deadline: float) -> int:
        """The container's PID 1 (host PID): a descendant of nspawn whose last NSpid is 1."""
        assert self._proc is not None
        while time.monotonic() < deadline:
            if not self._alive():
                raise self._boot_failed(f"systemd-nspawn exited ({self._proc.returncode})")
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit() and _is_init_below(int(entry.name), self._proc.pid):
                    return int(entry.name)
            time.sleep(0.05)
        raise self._boot_failed("no PID 1 appeared")

    def _wait_running(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if not self._alive():
                raise self._boot_failed("systemd-nspawn exited during boot")
            res = self.run(["systemctl", "is-system-running"], check=False, timeout=10)
            self.system_state = res.stdout.strip()
            if self.system_state in ("running", "degraded"):
                return
            if self.system_state in ("maintenance", "stopping"):
                raise self._boot_failed(f"system state {self.system_state}")
            time.sleep(0.1)
        raise self._boot_failed(f"not booted in time (state {self.system_state!r})")

    def _make_v1_writable(self) -> None:
        """nspawn mounts the v1 controller hierarchies read-only: remount, re-exec systemd."""
        mountinfo = self.run(["cat", "/proc/self/mountinfo"]).stdout
        for line in mountinfo.splitlines():
            fields = line.split()
            sep = fields.index("-")
            if fields[sep + 1] == "cgroup" and "ro" in fields[5].split(","):
                self.run(["mount", "-o", "remount,bind,rw", fields[4]])
        self.run(["systemctl", "daemon-reexec"], timeout=60)

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            self._stop(proc)
        remove_launch_cgroups(self._cgroups)
        self._cgroups = []
        self._clean_locks()
        self._clean_nspawn_run()
        if self.state.exists():
            _remove_tree(self.state)
        self.pid = 0

    def _stop(self, proc: subprocess.Popen[bytes]) -> None:
        """``systemctl poweroff`` (else SIGTERM to nspawn, which halts the container); after
        30 s SIGKILL to the container's PID 1 (ends its PID namespace), then to nspawn."""
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()  # a gate still waiting (boot failed before "go") ends too
        if proc.poll() is None:
            asked = False
            if self.pid:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    res = self.run(["systemctl", "poweroff"], check=False, timeout=15)
                    asked = res.returncode == 0
            if not asked:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
        if proc.poll() is None and self.pid and _is_init_below(self.pid, proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    def _clean_locks(self) -> None:
        """nspawn's lock files for the image, when a killed nspawn left them and no other
        holds them (nspawn uses record locks and re-checks the file after locking, so
        unlinking while holding the lock is safe)."""
        with contextlib.suppress(OSError):
            st = self.rootfs.stat()
            paths = [
                NSPAWN_RUN / "locks" / f"inode-{st.st_dev}:{st.st_ino}",
                self.rootfs.parent / f".#{self.rootfs.name}.lck",
            ]
            for path in paths:
                try:
                    fd = os.open(path, os.O_RDWR)
                except OSError:
                    continue
                try:
                    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    path.unlink()
                except OSError:
                    pass  # held by another nspawn of the same image
                finally:
                    os.close(fd)

    def _clean_nspawn_run(self) -> None:
        """This machine's entries in ``/run/systemd/nspawn``; then the empty directories."""
        if not NSPAWN_RUN.is_dir():
            return
        for sub in sorted(NSPAWN_RUN.iterdir()):
            mine = sub / self.machine
            if mine.exists() or mine.is_symlink():
                if mine.is_dir() and not mine.is_symlink():
                    _remove_tree(mine)
                else:
                    mine.unlink()
            with contextlib.suppress(OSError):
                sub.rmdir()
        with contextlib.suppress(OSError):
            NSPAWN_RUN.rmdir()

    # --- commands ------------------------------------------------------------------------

    def command(self, argv: Sequence[str]) -> list[str]:
        """*argv* to run inside: ``nsenter -t <pid> -a -- argv``."""
        if not self.pid:
            raise RuntimeError(f"{self.machine} is not running")
        return [self._nsenter, "-t", str(self.pid), "-a", "--", *argv]

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 60,
        input: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run *argv* in every namespace of the container (with a clean guest environment)."""
        cmd = self.command(argv)
        res = subprocess.run(
            cmd, input=input, stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True, text=True, timeout=timeout, env={**GUEST_ENV, **(env or {})},
            check=False,
        )  # fmt: skip
        if check and res.returncode != 0:
            raise RuntimeError(
                f"in {self.machine}: {' '.join(argv)} failed ({res.returncode}):"
                f" {res.stderr.strip()}"
            )
        return res

    def systemd_run(
        self,
        argv: Sequence[str],
        *,
        properties: Sequence[str] = (),
        check: bool = True,
        timeout: float = 60,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """``systemd-run --wait --pipe``: *argv* as a transient service of the container's
        systemd (its own cgroup, like a real daemon).  *properties*: ``-p`` assignments."""
        props = [f"--property={p}" for p in properties]
        cmd = ["systemd-run", "--wait", "--pipe", "--quiet", "--collect", *props, "--", *argv]
        return self.run(cmd, check=check, timeout=timeout, input=input)

    def guest_path(self, host_path: Path) -> str:
        """Where a path below :attr:`state` (or a bind's source) is seen inside."""
        host_path = Path(host_path)
        if host_path == self.state or self.state in host_path.parents:
            return str(GUEST_STATE / host_path.relative_to(self.state))
        for b in self.binds:
            if host_path == b.source or b.source in host_path.parents:
                return str(Path(b.destination or b.source) / host_path.relative_to(b.source))
        if self.bind_checkout and (host_path == REPO or REPO in host_path.parents):
            return str(host_path)
        raise ValueError(f"{host_path} is not visible in {self.machine}")

    def python(self) -> str:
        """A python inside that can ``import capctl`` (and its dependencies) from the checkout.

        A venv made with the container's ``python3`` (``--without-pip``), with a ``.pth``
        naming the checkout and the host venv's site-packages (capctl's dependencies are pure
        Python).  Checked with ``import click, capctl`` before it is returned.
        """
        if self._python is not None:
            return self._python
        if not self.bind_checkout:
            raise RuntimeError("python() needs bind_checkout=True")
        venv = self.state / "venv"
        guest_venv = self.guest_path(venv)
        self.run(["python3", "-m", "venv", "--without-pip", guest_venv])
        version = self.run(
            ["python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"]
        ).stdout.strip()
        site = host_site_packages()
        paths = [str(REPO)] + ([str(site)] if site is not None else [])
        if site is not None and f"python{version}" not in site.parts[-2]:
            print(
                f"nspawn: guest python {version} vs host site-packages {site}:"
                " relying on pure-Python dependencies",
                file=sys.stderr,
            )
        (venv / "lib" / f"python{version}" / "site-packages" / "capctl-checkout.pth").write_text(
            "\n".join(paths) + "\n"
        )
        python = f"{guest_venv}/bin/python"
        self.run([python, "-c", "import click, capctl"])
        self._python = python
        return python


# --- runc inside, with the systemd cgroup driver ----------------------------------------------

GUEST_SLEEP = ("/bin/busybox", "sleep", "3600")
_ERRNO_TEXT = (
    ("ENXIO", "No such device or address"),
    ("EPERM", "Operation not permitted"),
    ("ENOENT", "No such file or directory"),
    ("EACCES", "Permission denied"),
)


@dataclass
class GuestContainer:
    id: str
    bundle: Path  # host path (below the box's state directory)
    unit: str  # the systemd scope, e.g. "capctl-<id>.scope"
    pid: int = 0  # as seen inside the box
    log: str = ""  # runc's output at start


class GuestRunc:
    """runc inside a :class:`SystemdContainer`, driven by the container's systemd.

        runc = GuestRunc(box)
        b = runc.bundle(mounts=[(nodes_dir, "/nodes")], device_rules=[...], devices=[...])
        ctr = runc.run_detached(b)      # runc --systemd-cgroup, cgroupsPath slice:prefix:id
        runc.probe(ctr, "/nodes/n0")     # "ENXIO" (allowed) / "EPERM" (denied) / ...
        runc.device_cgroup(ctr)          # the scope's device cgroup, as a path inside the box

    Bundles live below ``box.state`` (busybox-static from the box's own ``/bin/busybox``);
    runc's state root is ``/run/capctl-runc`` inside.  ``runc run`` goes through
    ``systemd-run`` so that runc runs as a service of the box's systemd, like a real engine.
    """

    def __init__(
        self, box: SystemdContainer, *, slice: str = "system.slice", prefix: str = "capctl"
    ):
        self.box = box
        self.slice = slice
        self.prefix = prefix
        self.root = "/run/capctl-runc"
        self.containers: list[GuestContainer] = []

    def __enter__(self) -> GuestRunc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def runc(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.box.run(["runc", "--systemd-cgroup", "--root", self.root, *args], check=check)

    def bundle(
        self,
        *,
        args: Sequence[str] = GUEST_SLEEP,
        mounts: Sequence[tuple[Path, str]] = (),
        devices: Sequence[dict[str, Any]] = (),
        device_rules: Sequence[dict[str, Any]] = (),
    ) -> Path:
        """A bundle below ``box.state``; *mounts*: (host path visible in the box, destination);
        *devices*: ``linux.devices``; *device_rules*: appended to ``linux.resources.devices``.
        The caller sets ``linux.cgroupsPath`` by :meth:`run_detached`."""
        path = Path(tempfile.mkdtemp(prefix="bundle-", dir=self.box.state))
        rootfs = path / "rootfs"
        for sub in ("bin", "proc", "dev", "sys", "tmp"):
            (rootfs / sub).mkdir(parents=True)
        guest = self.box.guest_path(path)
        self.box.run(["cp", "/bin/busybox", f"{guest}/rootfs/bin/busybox"])
        for applet in ("sh", "sleep", "cat", "ls"):
            (rootfs / "bin" / applet).symlink_to("busybox")
        self.box.run(["runc", "spec", "--bundle", guest])
        config: dict[str, Any] = json.loads((path / "config.json").read_text())
        config["process"]["terminal"] = False
        config["process"]["args"] = list(args)
        config["root"]["readonly"] = False
        for source, dest in mounts:
            src = self.box.guest_path(source)
            bind = {"destination": dest, "type": "bind", "source": src, "options": ["rbind"]}
            config["mounts"].append(bind)
        linux = config["linux"]
        linux.setdefault("devices", []).extend(dict(d) for d in devices)
        linux.setdefault("resources", {}).setdefault("devices", []).extend(
            dict(r) for r in device_rules
        )
        (path / "config.json").write_text(json.dumps(config, indent=2))
        return path

    def run_detached(self, bundle: Path) -> GuestContainer:
        """``runc --systemd-cgroup run --detach`` with cgroupsPath ``slice:prefix:<id>``."""
        ctr = GuestContainer(f"t{uuid.uuid4().hex[:12]}", bundle, "")
        ctr.unit = f"{self.prefix}-{ctr.id}.scope"
        config = json.loads((bundle / "config.json").read_text())
        config["linux"]["cgroupsPath"] = f"{self.slice}:{self.prefix}:{ctr.id}"
        (bundle / "config.json").write_text(json.dumps(config, indent=2))
        guest = self.box.guest_path(bundle)
        log = f"{guest}/runc-{ctr.id}.log"
        script = (
            f"exec runc --systemd-cgroup --root {self.root} run --detach --bundle {guest}"
            f" {ctr.id} >{log} 2>&1 </dev/null"
        )
        self.containers.append(ctr)
        res = self.box.systemd_run(["sh", "-c", script], check=False)
        ctr.log = (bundle / f"runc-{ctr.id}.log").read_text()
        if res.returncode != 0:
            raise RuntimeError(f"runc run failed ({res.returncode}): {ctr.log.strip()}")
        ctr.pid = int(json.loads(self.runc("state", ctr.id).stdout)["pid"])
        return ctr

    def exec(
        self, ctr: GuestContainer, argv: Sequence[str], *, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        return self.runc("exec", ctr.id, *argv, check=check)

    def probe(self, ctr: GuestContainer, path: str, mode: str = "r") -> str:
        """Open *path* in the container: ``"OK"``, ``"ENXIO"``, ``"EPERM"``, ``"ENOENT"``..."""
        redirect = {"r": f"< {path}", "w": f"> {path}", "rw": f"<> {path}"}[mode]
        res = self.exec(ctr, ["/bin/busybox", "sh", "-c", f"exec 3{redirect}"])
        if res.returncode == 0:
            return "OK"
        for name, text in _ERRNO_TEXT:
            if text in res.stderr:
                return name
        return f"?{res.returncode}:{res.stderr.strip()}"

    def device_cgroup(self, ctr: GuestContainer) -> str:
        """The container's device cgroup directory inside the box (v1 devices or cgroup2),
        read from ``/proc/<pid>/cgroup``; always the container's own scope."""
        lines = self.box.run(["cat", f"/proc/{ctr.pid}/cgroup"]).stdout.splitlines()
        if self.box.cgroup2:
            rel = next(line.split(":", 2)[2] for line in lines if line.startswith("0::"))
            path = f"/sys/fs/cgroup{rel}"
        else:
            rel = next(line.split(":", 2)[2] for line in lines if ":devices:" in line)
            path = f"/sys/fs/cgroup/devices{rel}"
        if not path.endswith(f"/{ctr.unit}"):
            raise RuntimeError(f"{ctr.id} is not in its own scope: {path}")
        return path

    def delete(self, ctr: GuestContainer) -> None:
        self.runc("delete", "-f", ctr.id, check=False)
        if ctr in self.containers:
            self.containers.remove(ctr)

    def close(self) -> None:
        for ctr in reversed(self.containers):
            with contextlib.suppress(Exception):
                self.delete(ctr)


def _is_init_below(pid: int, ancestor: int) -> bool:
    """*pid* is PID 1 of a child PID namespace and a descendant of *ancestor*."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    nspid = fields.get("NSpid", "").split()
    if len(nspid) < 2 or nspid[-1] != "1":
        return False
    for _ in range(8):
        try:
            ppid = int(fields.get("PPid", "0").strip() or 0)
        except ValueError:
            return False
        if ppid == ancestor:
            return True
        if ppid <= 1:
            return False
        try:
            status = Path(f"/proc/{ppid}/status").read_text()
        except OSError:
            return False
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return False


def host_site_packages() -> Path | None:
    """The host venv's site-packages (the running venv's, else the checkout's ``.venv``)."""
    if sys.prefix != sys.base_prefix:
        purelib = Path(sysconfig.get_paths()["purelib"])
        if purelib.is_dir():
            return purelib
    found = sorted((REPO / ".venv" / "lib").glob("python3*/site-packages"))
    return found[-1] if found else None

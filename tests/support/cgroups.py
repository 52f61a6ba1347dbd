"""Real-kernel helpers for device cgroup tests: fresh child cgroups, test nodes, a prober.

Safety: every cgroup these helpers touch is one they created, a direct child of a hierarchy
mount, checked before use (never the root cgroup: a device rule there could lock up the
host).  Everything is removed again in ``finally`` blocks.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

from capctl.cgroup import asm, devfilter
from capctl.cgroup.bpf import BPF_F_ALLOW_MULTI, Bpf
from capctl.edits.rules import DENY_ALL
from tests.support.hostcg import V1_DEVICES, V2_ROOT

__all__ = [
    "V1_DEVICES", "V2_ROOT", "Prober", "attach_deny_all", "child_cgroup", "make_nodes",
    "remove_cgroup", "rules_text",
]

TEST_MAJOR = 238  # unregistered: opening a node gives ENXIO when the cgroup allows it

_PROBER = r"""
import errno, os, sys
for line in sys.stdin:
    path, flag = line.split()
    try:
        os.close(os.open(path, {"r": os.O_RDONLY, "w": os.O_WRONLY, "rw": os.O_RDWR}[flag]))
        print("OK", flush=True)
    except OSError as e:
        print(errno.errorcode.get(e.errno, str(e.errno)), flush=True)
"""


def unique_name() -> str:
    return f"capctl-test-{uuid.uuid4().hex[:12]}"


def assert_child_cgroup(path: Path, hierarchy: Path) -> None:
    """The test's own guard: *path* is a direct child of *hierarchy* named by us."""
    assert path.parent == hierarchy, path
    assert path != hierarchy and path.name.startswith("capctl-test-"), path
    assert not os.path.ismount(path), path


def detach_all(path: Path) -> None:
    """Detach every device program attached to the (child) cgroup *path*."""
    bpf = Bpf()
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for prog_id in bpf.prog_query(fd).ids:
            pfd = bpf.prog_get_fd_by_id(prog_id)
            try:
                bpf.prog_detach(pfd, fd)
            finally:
                os.close(pfd)
    finally:
        os.close(fd)


def attach_deny_all(path: Path) -> None:
    """Attach a default-deny device program to the (child) cgroup2 *path*, the way runc
    attaches its own (BPF_F_ALLOW_MULTI)."""
    assert_child_cgroup(path, V2_ROOT)
    bpf = Bpf()
    prog = bpf.prog_load(asm.encode(devfilter.full_filter([DENY_ALL])), name="test_deny_all")
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        bpf.prog_attach(prog, fd, flags=BPF_F_ALLOW_MULTI)
    finally:
        os.close(fd)
        os.close(prog)


def rules_text(path: Path | str) -> str:
    """A device cgroup's rules as ``devices.list`` lines: v1's own list, or on cgroup2 the
    rules capctl's program adds (read back from the kernel by :mod:`capctl.cgroup.v2`)."""
    listing = os.path.join(path, "devices.list")
    if os.path.exists(listing):
        with open(listing) as f:
            return f.read()
    from capctl.cgroup.v2 import V2Devices

    return "".join(f"{rule.line()}\n" for rule in V2Devices(str(path)).allowed())


def remove_cgroup(path: Path) -> None:
    """Kill what is left in a test cgroup and remove it (best effort, child cgroups only)."""
    if not path.is_dir():
        return
    for child in sorted((p for p in path.iterdir() if p.is_dir()), reverse=True):
        remove_cgroup(child)
    with contextlib.suppress(OSError):
        for pid in (path / "cgroup.procs").read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), 9)
    for _ in range(100):
        try:
            path.rmdir()
            return
        except OSError as err:
            if err.errno != errno.EBUSY:
                raise
            import time

            time.sleep(0.02)


@contextlib.contextmanager
def child_cgroup(hierarchy: Path) -> Iterator[Path]:
    """A fresh child cgroup of *hierarchy* (v1 devices or cgroup2), removed afterwards."""
    path = hierarchy / unique_name()
    assert_child_cgroup(path, hierarchy)
    path.mkdir()
    try:
        yield path
    finally:
        if hierarchy == V2_ROOT:
            with contextlib.suppress(OSError):
                detach_all(path)
        remove_cgroup(path)


def make_nodes(directory: Path, minors: range | list[int], major: int = TEST_MAJOR) -> list[Path]:
    """Char device nodes ``n<minor>`` (mode 0666) of an unregistered major."""
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for minor in minors:
        node = directory / f"n{minor}"
        os.mknod(node, 0o20666, os.makedev(major, minor))
        os.chmod(node, 0o666)
        out.append(node)
    return out


class Prober:
    """A child process that lives in a cgroup and opens nodes on request.

    ``open(path, "r")`` returns ``"ENXIO"`` (allowed; no driver behind the major), ``"EPERM"``
    (denied by the device cgroup), or another errno name / ``"OK"``.
    """

    def __init__(self, cgroup: Path):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _PROBER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            (cgroup / "cgroup.procs").write_text(str(self.proc.pid))
        except BaseException:
            self.close()
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def open(self, path: Path, flag: str = "r") -> str:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(f"{path} {flag}\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            if f:
                f.close()

    def __enter__(self) -> Prober:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

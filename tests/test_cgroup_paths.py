"""Finding a process's device cgroup from fake /proc trees (and once from the real one)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from capctl.cgroup.paths import (
    CGROUP2_SUPER_MAGIC,
    Cgroup,
    Version,
    find_cgroup,
    fs_magic,
    is_cgroup2,
    parse_mountinfo,
    parse_proc_cgroup,
)
from capctl.errors import CgroupError, ParseError

TMPFS_MAGIC = 0x01021994


def mountinfo(cg: Path, *, v2_at_root: bool, devices_root: str = "/", v2_dev: str = "0:33") -> str:
    lines = [
        "22 1 0:21 / / rw,relatime - ext4 /dev/vda rw",
        f"30 22 0:26 / {cg} rw,relatime - tmpfs tmpfs rw,mode=755",
        f"35 30 0:31 {devices_root} {cg}/devices rw,relatime shared:15 - cgroup cgroup rw,devices",
        f"36 30 0:32 / {cg}/cpu\\040x rw,relatime - cgroup cgroup rw,cpu",
        f"37 30 {v2_dev} / {cg}/unified rw,relatime - cgroup2 cgroup2 rw",
    ]
    if v2_at_root:
        lines.append(f"90 30 {v2_dev} / {cg} rw,relatime - cgroup2 none rw")
    return "\n".join(lines) + "\n"


PROC_CGROUP = "5:devices:/kubepods/pod1/ctr\n1:cpu:/kubepods\n0::/ctr-v2\n"


def fake(
    tmp_path: Path,
    proc_cgroup: str,
    *,
    v2_at_root: bool,
    devices_root: str = "/",
    v2_dev: str = "0:33",
) -> tuple[Path, Path]:
    proc, cg = tmp_path / "proc", tmp_path / "sys/fs/cgroup"
    (proc / "self").mkdir(parents=True)
    (proc / "42").mkdir()
    (proc / "42" / "cgroup").write_text(proc_cgroup)
    (proc / "self" / "mountinfo").write_text(
        mountinfo(cg, v2_at_root=v2_at_root, devices_root=devices_root, v2_dev=v2_dev)
    )
    (cg / "devices/kubepods/pod1/ctr").mkdir(parents=True)
    (cg / "devices/ctr").mkdir(parents=True)
    (cg / "ctr-v2").mkdir(parents=True)
    return proc, cg


def magic_of(value: int):  # type: ignore[no-untyped-def]
    return lambda _path: value


def test_hybrid_host_uses_v1_devices(tmp_path: Path) -> None:
    proc, cg = fake(tmp_path, PROC_CGROUP, v2_at_root=False)
    got = find_cgroup(42, proc=proc, cgroup_root=cg, magic=magic_of(TMPFS_MAGIC))
    assert got == Cgroup(Version.V1, cg / "devices/kubepods/pod1/ctr")


def test_unified_mount_wins_over_v1_lines(tmp_path: Path) -> None:
    # runc in a private namespace with cgroup2 on /sys/fs/cgroup: the process still lists
    # v1 lines, but the mount decides.
    proc, cg = fake(tmp_path, PROC_CGROUP, v2_at_root=True)
    got = find_cgroup(42, proc=proc, cgroup_root=cg, magic=magic_of(CGROUP2_SUPER_MAGIC))
    assert got == Cgroup(Version.V2, cg / "ctr-v2")


def dev_of(path: Path) -> str:
    """The mountinfo ``major:minor`` of the file system *path* is on."""
    st = os.stat(path)
    return f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"


@pytest.mark.parametrize(
    ("v2_at_root", "v2_dev_is_roots", "version"),
    [(True, True, Version.V2), (False, False, Version.V1), (True, False, Version.V1)],
    ids=["unified", "hybrid", "cgroup2-listed-but-another-fs-on-top"],
)
def test_version_from_mountinfo_device(
    tmp_path: Path, v2_at_root: bool, v2_dev_is_roots: bool, version: Version
) -> None:
    # Without a magic probe the version comes from is_cgroup2: the device stat() gives for
    # cgroup_root must be a cgroup2 mount's in mountinfo.  The fake cgroup2 mounts carry the
    # device of the file system the fake cgroup_root is on, or one of their own.
    (tmp_path / "sys/fs/cgroup").mkdir(parents=True)
    v2_dev = dev_of(tmp_path / "sys/fs/cgroup") if v2_dev_is_roots else "0:9999"
    proc, cg = fake(tmp_path, PROC_CGROUP, v2_at_root=v2_at_root, v2_dev=v2_dev)
    got = find_cgroup(42, proc=proc, cgroup_root=cg)
    expected = cg / ("ctr-v2" if version is Version.V2 else "devices/kubepods/pod1/ctr")
    assert got == Cgroup(version, expected)


def test_is_cgroup2_follows_the_device_and_fails_closed(tmp_path: Path) -> None:
    mounts = parse_mountinfo(f"90 30 {dev_of(tmp_path)} / /elsewhere rw - cgroup2 none rw\n")
    assert is_cgroup2(tmp_path, mounts)  # the type belongs to the file system, wherever mounted
    assert not is_cgroup2(
        tmp_path, parse_mountinfo(f"90 30 {dev_of(tmp_path)} / /x rw - ext4 x rw\n")
    )
    with pytest.raises(CgroupError, match="missing: stat"):
        is_cgroup2(tmp_path / "missing", mounts)


def test_mount_root_is_stripped(tmp_path: Path) -> None:
    # Inside a container the hierarchy is mounted from a sub-cgroup (mountinfo root field).
    proc, cg = fake(
        tmp_path, "5:devices:/kubepods/pod1/ctr\n", v2_at_root=False, devices_root="/kubepods/pod1"
    )
    got = find_cgroup(42, proc=proc, cgroup_root=cg, magic=magic_of(TMPFS_MAGIC))
    assert got.path == cg / "devices/ctr"


@pytest.mark.parametrize(
    ("proc_cgroup", "v2", "message"),
    [
        ("5:devices:/\n0::/x\n", False, "root devices cgroup"),
        ("5:devices:/a\n0::/\n", True, "root cgroup2 cgroup"),
        ("1:cpu:/a\n0::/a\n", False, "no cgroup v1 'devices' line"),
        ("5:devices:/a\n", True, "no cgroup v2"),
        ("5:devices:/../../etc\n", False, "'..'"),
        ("5:devices:/elsewhere\n", False, "outside the mounted hierarchy"),
        ("5:devices:/missing\n", False, "does not exist"),
    ],
    ids=[
        "v1-root",
        "v2-root",
        "no-devices-line",
        "no-v2-line",
        "dotdot",
        "outside-mount",
        "missing-dir",
    ],
)
def test_refusals(tmp_path: Path, proc_cgroup: str, v2: bool, message: str) -> None:
    root = "/kubepods" if "elsewhere" in proc_cgroup else "/"
    proc, cg = fake(tmp_path, proc_cgroup, v2_at_root=v2, devices_root=root)
    magic = magic_of(CGROUP2_SUPER_MAGIC if v2 else TMPFS_MAGIC)
    with pytest.raises(CgroupError, match=message):
        find_cgroup(42, proc=proc, cgroup_root=cg, magic=magic)


def test_vanished_process(tmp_path: Path) -> None:
    proc, cg = fake(tmp_path, PROC_CGROUP, v2_at_root=False)
    with pytest.raises(CgroupError, match="cgroup"):
        find_cgroup(4242, proc=proc, cgroup_root=cg, magic=magic_of(TMPFS_MAGIC))


@pytest.mark.parametrize("line", ["5:devices", "x:devices:/a", "5:devices:relative", ""], ids=repr)
def test_parse_proc_cgroup_fails_closed(line: str) -> None:
    with pytest.raises(ParseError):
        parse_proc_cgroup(line + "\nx")


def test_parse_mountinfo_unescapes_and_fails_closed() -> None:
    mounts = parse_mountinfo("36 30 0:32 / /a\\040b rw - cgroup cgroup rw,cpu,devices\n")
    assert mounts[0].mount_point == "/a b" and "devices" in mounts[0].super_options
    with pytest.raises(ParseError):
        parse_mountinfo("36 30 0:32 / /a rw cgroup cgroup rw\n")


@pytest.mark.skipif(not Path("/sys/fs/cgroup/devices").is_dir(), reason="no v1 devices hierarchy")
def test_real_system_self_is_refused_or_found() -> None:
    """Against the real /proc: our own process (in the root devices cgroup here) is refused."""
    assert fs_magic(Path("/sys/fs/cgroup")) != CGROUP2_SUPER_MAGIC
    line = next(
        ln for ln in Path("/proc/self/cgroup").read_text().splitlines() if ":devices:" in ln
    )
    if line.endswith(":/"):
        with pytest.raises(CgroupError, match="root devices cgroup"):
            find_cgroup(os.getpid())
    else:
        assert find_cgroup(os.getpid()).version is Version.V1


@pytest.mark.skipif(not Path("/sys/fs/cgroup/unified").is_dir(), reason="no cgroup2 mount")
def test_real_statfs_magic() -> None:
    assert fs_magic(Path("/sys/fs/cgroup/unified")) == CGROUP2_SUPER_MAGIC


@pytest.mark.parametrize(
    "path", ["/sys/fs/cgroup", "/sys/fs/cgroup/unified", "/sys/fs/cgroup/devices", "/proc", "/"]
)
def test_real_is_cgroup2_agrees_with_statfs(path: str) -> None:
    if not Path(path).exists():
        pytest.skip(f"no {path}")
    mounts = parse_mountinfo(Path("/proc/self/mountinfo").read_text())
    assert is_cgroup2(Path(path), mounts) == (fs_magic(Path(path)) == CGROUP2_SUPER_MAGIC)


def test_v1_path_imports_stay_cheap() -> None:
    # The OCI hook imports these on every container start; ctypes (bpf, statfs), logging,
    # typing and dataclasses would cost it milliseconds before any work.
    code = (
        "import sys, capctl.cgroup, capctl.rules, capctl.cgroup.v1\n"
        "heavy = {'ctypes', 'platform', 'logging', 'typing', 'dataclasses', 'capctl.cgroup.v2'}\n"
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"

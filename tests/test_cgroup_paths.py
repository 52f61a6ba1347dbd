"""Finding a process's device cgroup from fake /proc trees (and once from the real one)."""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest

from capctl._lite.strpath import exists, is_dir, join, normalized
from capctl.cgroup.discovery import (
    CGROUP2_SUPER_MAGIC,
    Cgroup,
    CgroupLine,
    Mount,
    Version,
    check_not_root,
    escaped,
    find_cgroup,
    fs_magic,
    is_cgroup2,
    mounts_with,
    parse_cgroup_line,
    parse_mountinfo,
    parse_mountinfo_line,
    parse_proc_cgroup,
    resolve,
)
from capctl.errors import CgroupError, ParseError
from tests.support.fuzz import Op, mutants, outcome
from tests.support.hostcg import CGROUP_ROOT, LAYOUT, NO_V2, V1_DEVICES, V2_ROOT
from tests.support.source import CAPCTL_PATH

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
    assert got.path == str(cg / "devices/ctr")


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


MANY = "".join(f"{100 + i} 30 8:{i % 7} /v{i} /var/lib/pods/p{i}/vol rw - ext4 /dev/x rw\n"
               for i in range(300)) + "36 30 0:32 / /a\\040b rw - cgroup cgroup rw,devices\n"


def test_mounts_with_parses_only_the_lines_that_matter() -> None:
    """As :func:`parse_mountinfo` on the lines containing the needle, and as strict there; a
    line elsewhere is not looked at (a node's hundreds of pod mounts)."""
    every = parse_mountinfo(MANY)
    lines = MANY.splitlines()
    for needle in (" - cgroup", " 8:3 ", " /var/lib/pods/p7/vol ", " /nowhere "):
        assert mounts_with(MANY, needle) == [m for m, ln in zip(every, lines, strict=True)
                                               if needle in ln]
    assert mounts_with(MANY, " - cgroup")[0].mount_point == "/a b"
    bad = MANY + "37 30 0:33 / /c rw cgroup2 cgroup2 rw\n"  # no "-": malformed
    with pytest.raises(ParseError, match=":302: malformed"):
        mounts_with(bad, " /c ", "mi")
    assert mounts_with(bad, " - cgroup") == mounts_with(MANY, " - cgroup")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mount in a private namespace)")
def test_escaped_is_how_the_kernel_prints_a_mount_point(tmp_path: Path) -> None:
    """A tmpfs mounted at a path with every character the kernel escapes, in a private
    mount namespace: its mountinfo line holds the path exactly as :func:`escaped` writes it."""
    point = tmp_path / "a b\tc\nd\\e"
    point.mkdir()
    res = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                          'mount -t tmpfs none "$1" && cat /proc/self/mountinfo', "sh",
                          str(point)], capture_output=True, text=True, check=True)
    [line] = [ln for ln in res.stdout.splitlines() if f" {escaped(str(point))} " in ln]
    mount = parse_mountinfo_line(line)
    assert mount is not None and mount.mount_point == str(point)


@pytest.mark.skipif(LAYOUT.v1_devices is None and LAYOUT.v2 is None, reason=NO_V2)
def test_real_system_self_is_refused_or_found() -> None:
    """Against the real /proc: our own process is refused if it is in a root cgroup of the
    hierarchy that controls devices here (v1 devices, else cgroup2), else found there."""
    v1 = LAYOUT.v1_devices is not None
    assert (fs_magic(Path("/sys/fs/cgroup")) == CGROUP2_SUPER_MAGIC) == LAYOUT.v2_only
    marker = ":devices:" if v1 else "0::"
    line = next(ln for ln in Path("/proc/self/cgroup").read_text().splitlines() if marker in ln)
    if line.endswith(":/"):
        with pytest.raises(CgroupError, match="root"):
            find_cgroup(os.getpid())
    else:
        assert find_cgroup(os.getpid()).version is (Version.V1 if v1 else Version.V2)


@pytest.mark.skipif(LAYOUT.v2 is None, reason=NO_V2)
def test_real_statfs_magic() -> None:
    assert fs_magic(V2_ROOT) == CGROUP2_SUPER_MAGIC


@pytest.mark.parametrize(
    "path",
    sorted({str(p) for p in (CGROUP_ROOT, V2_ROOT, V1_DEVICES, Path("/proc"), Path("/")) if p.exists()}),
)
def test_real_is_cgroup2_agrees_with_statfs(path: str) -> None:
    mounts = parse_mountinfo(Path("/proc/self/mountinfo").read_text())
    assert is_cgroup2(Path(path), mounts) == (fs_magic(Path(path)) == CGROUP2_SUPER_MAGIC)


# --- the str parsers against the regular expressions they replaced -----------------------------
#
# capctl parsed these lines with re.fullmatch before the hook dropped re (it costs the hook 5 ms at start).
# The expressions stay here, verbatim, as the oracle: the parsers must accept exactly the
# lines they accept, give the same fields, and raise the same errors.  One deliberate change:
# \d of a str pattern matches any script's decimal digit (and int() reads them); the parsers
# take ASCII digits only, so the oracle reads \d as [0-9] (see test_only_ascii_digits).

OLD_MOUNTINFO_RE = re.compile(
    r"(?P<id>\d+) (?P<parent>\d+) (?P<dev>\d+:\d+) (?P<root>\S+) (?P<mnt>\S+) (?P<opts>\S+)"
    r"(?P<optional>(?: \S+)*) - (?P<fstype>\S+) (?P<source>\S+) (?P<super>\S+)"
)
OLD_CGROUP_RE = re.compile(r"(?P<id>\d+):(?P<controllers>[^:]*):(?P<path>/.*)")
ASCII_MOUNTINFO_RE = re.compile(OLD_MOUNTINFO_RE.pattern.replace(r"\d", "[0-9]"))
ASCII_CGROUP_RE = re.compile(OLD_CGROUP_RE.pattern.replace(r"\d", "[0-9]"))


def old_unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), field)


def old_mount(line: str) -> Mount | None:
    m = ASCII_MOUNTINFO_RE.fullmatch(line)
    if m is None:
        return None
    major, minor = m["dev"].split(":")
    return Mount(
        old_unescape(m["root"]),
        old_unescape(m["mnt"]),
        m["fstype"],
        frozenset(m["super"].split(",")),
        os.makedev(int(major), int(minor)),
    )


def old_cgroup_line(line: str) -> CgroupLine | None:
    m = ASCII_CGROUP_RE.fullmatch(line)
    if m is None:
        return None
    controllers = frozenset(c for c in m["controllers"].split(",") if c)
    return CgroupLine(int(m["id"]), controllers, m["path"])


#: The edits of the mutation corpora: insert, delete, replace, duplicate a slice.
EDITS: tuple[Op, ...] = ("insert", "delete", "replace", "repeat_slice")


MOUNTINFO_SEEDS = [
    "22 1 0:21 / / rw,relatime - ext4 /dev/vda rw",
    "35 30 0:31 / /sys/fs/cgroup/devices rw,nosuid shared:15 - cgroup cgroup rw,devices",
    "36 30 0:32 /kube\\040pods /a\\040b\\011c\\134d rw master:1 shared:2 - cgroup cgroup rw,cpu",
    "37 30 0:33 / /u rw - - cgroup2 cgroup2 rw",  # an optional field that is "-" itself
    "38 30 0:33 / /u rw - - - x y z",
    "39 30 259:1 /\\0 /\\8888\\\\1234\\77 rw - ext4 /dev/x rw,errors=remount-ro",
    "40 30 4095:1048575 / /big rw - tmpfs tmpfs rw",
]
MOUNTINFO_EDGES = [
    "",
    " ",
    "22 1 0:21 / / rw,relatime - ext4 /dev/vda rw ",
    " 22 1 0:21 / / rw,relatime - ext4 /dev/vda rw",
    "22 1 0:21 / / rw,relatime  - ext4 /dev/vda rw",
    "22 1 0:21 / / rw,relatime - ext4 /dev/vda",
    "22 1 0:21 / / - ext4 /dev/vda rw",
    "22 1 0:21 / / rw - ext4 /dev/vda rw x",
    "22 1 0:21 / / rw x - ext4 /dev/vda rw",
    "22 1 0:21 / / rw -- ext4 /dev/vda rw",
    "22 1 0:21 / / rw\t- ext4 /dev/vda rw",
    "22 1 0:21 / / rw\xa0- ext4 /dev/vda rw",
    "22 1 0:21 / /a\xa0b rw - ext4 /dev/vda rw",
    "22 1 0:21 / /a\u2028b rw - ext4 /dev/vda rw",
    "22 1 0:21 / /a\x1cb rw - ext4 /dev/vda rw",
    "22 1 0:21 / /a\x00b rw - ext4 /dev/vda rw",
    "22 1 0:21 / / rw - ext4 /dev/vda rw\n",
    "x 1 0:21 / / rw - ext4 /dev/vda rw",
    "22 1 021 / / rw - ext4 /dev/vda rw",
    "22 1 0:21:3 / / rw - ext4 /dev/vda rw",
    "22 1 :21 / / rw - ext4 /dev/vda rw",
    "22 1 0: / / rw - ext4 /dev/vda rw",
    "22 1 +0:21 / / rw - ext4 /dev/vda rw",
    "22 -1 0:21 / / rw - ext4 /dev/vda rw",
    "22 1 0:2\xb2 / / rw - ext4 /dev/vda rw",  # superscript two: isdigit() but no digit
    "22 1 0:21 \\ \\0 rw - ext4 /dev/vda rw",
    "22 1 0:21 \\040\\ \\\\0400 rw - ext4 /dev/vda rw",
    "1 2 99999999999:1 / / rw - x y z",  # os.makedev overflows: the same error either way
]
MOUNTINFO_ALPHABET = [
    " ",
    " ",
    "-",
    " - ",
    ":",
    "\\",
    "\\0",
    "0",
    "4",
    "7",
    "8",
    "9",
    "a",
    "/",
    ",",
    "\t",
    "\n",
    "\xa0",
    "\u2003",
    "\x1c",
    "\x00",
    "\xb2",
    "\u0663",
    "é",
]


def mountinfo_corpus() -> list[str]:
    seeds = MOUNTINFO_SEEDS + Path("/proc/self/mountinfo").read_text().splitlines()
    return seeds + MOUNTINFO_EDGES + mutants(seeds, MOUNTINFO_ALPHABET, 20000, seed=5, ops=EDITS)


def test_mountinfo_parser_equals_the_old_expression() -> None:
    corpus = mountinfo_corpus()
    got = [outcome(parse_mountinfo_line, line) for line in corpus]
    want = [outcome(old_mount, line) for line in corpus]
    diffs = [(line, g, w) for line, g, w in zip(corpus, got, want, strict=True) if g != w]
    assert diffs[:5] == []
    # the corpus exercises both sides (and an error), so the comparison means something
    accepted = sum(1 for g in got if g[0] == "ok" and g[1] is not None)
    assert 0.2 * len(corpus) < accepted < 0.8 * len(corpus)
    assert any(g[0] == "OverflowError" for g in got)


def test_mountinfo_fields() -> None:
    mount = parse_mountinfo_line(MOUNTINFO_SEEDS[2])
    assert mount == Mount("/kube pods", "/a b\tc\\d", "cgroup", frozenset({"rw", "cpu"}), 32)
    assert parse_mountinfo_line(MOUNTINFO_SEEDS[3]) == Mount(
        "/", "/u", "cgroup2", frozenset({"rw"}), os.makedev(0, 33)
    )
    assert parse_mountinfo_line(MOUNTINFO_SEEDS[5]) == Mount(
        "/\\0", "/\\8888\\S4\\77", "ext4", frozenset({"rw", "errors=remount-ro"}), 259 << 8 | 1
    )


CGROUP_SEEDS = [
    "5:devices:/kubepods/pod1/ctr",
    "0::/",
    "0::/ctr-v2",
    "12:cpu,cpuacct:/a:b/c",
    "1:name=systemd:/user.slice/x y",
    "3:::/",
]
CGROUP_EDGES = [
    "",
    ":",
    "::",
    "::/",
    "5:devices",
    "5:devices:",
    "5:devices:a",
    "x:devices:/a",
    " 5:devices:/a",
    "5 :devices:/a",
    "5:devices:/a\n",
    "5:devices:/a\nb",
    "5:dev\nices:/a",
    "5:devices:/a\r",
    "-5:devices:/a",
    "+5::/a",
    "\xb2::/a",
    "\u0663::/a",
    "0001::/",
]
CGROUP_ALPHABET = [":", "/", "0", "9", "a", ",", " ", "\n", "\r", "\xb2", "\u0663", "-", "é"]


def test_cgroup_line_parser_equals_the_old_expression() -> None:
    seeds = CGROUP_SEEDS + Path("/proc/self/cgroup").read_text().splitlines()
    corpus = seeds + CGROUP_EDGES + mutants(seeds, CGROUP_ALPHABET, 20000, seed=5, ops=EDITS)
    got = [outcome(parse_cgroup_line, line) for line in corpus]
    want = [outcome(old_cgroup_line, line) for line in corpus]
    diffs = [(line, g, w) for line, g, w in zip(corpus, got, want, strict=True) if g != w]
    assert diffs[:5] == []
    accepted = sum(1 for g in got if g[1] is not None)
    assert 0.2 * len(corpus) < accepted < 0.8 * len(corpus)


def test_cgroup_line_fields() -> None:
    assert parse_cgroup_line("12:cpu,cpuacct:/a:b/c") == CgroupLine(
        12, frozenset({"cpu", "cpuacct"}), "/a:b/c"
    )
    assert parse_cgroup_line("0::/") == CgroupLine(0, frozenset(), "/")


@pytest.mark.parametrize(
    "line",
    [
        "\u0663 1 0:21 / / rw - ext4 /dev/vda rw",
        "3 1 0:\u0662\u0661 / / rw - ext4 /dev/vda rw",
        "\u0663:devices:/a",
        "\uff15::/a",
    ],
    ids=repr,
)
def test_only_ascii_digits(line: str) -> None:
    # The old expressions took any script's digits (and int() read them); the kernel prints
    # ASCII ones, and capctl fails closed on anything else.
    old = OLD_MOUNTINFO_RE if " " in line else OLD_CGROUP_RE
    assert old.fullmatch(line) is not None
    assert parse_mountinfo_line(line) is None and parse_cgroup_line(line) is None
    with pytest.raises(ParseError, match="malformed"):
        (parse_mountinfo if " " in line else parse_proc_cgroup)(line)


# --- paths as str, with pathlib's meaning ------------------------------------------------------

PATH_PIECES = ["", "/", "//", "///", ".", "..", "a", "b c", "a/", "/a", "./", "\\"]


def random_paths(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choices(PATH_PIECES, k=rng.randint(0, 5))) for _ in range(count)]


def test_normalized_and_join_are_pathlibs() -> None:
    paths = PATH_PIECES + random_paths(3000, seed=5)
    for path in paths:
        assert normalized(path) == str(PurePosixPath(path)), path
        assert normalized(PurePosixPath(path)) == str(PurePosixPath(path)), path
    rng = random.Random(6)
    for _ in range(3000):
        base, *names = rng.choices(paths, k=rng.randint(1, 4))
        assert join(base, *names) == str(PurePosixPath(base, *names)), (base, names)
    assert join(Path("/proc"), "42", "cgroup") == "/proc/42/cgroup"


def test_file_kinds_are_pathlibs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("")
    (tmp_path / "to-dir").symlink_to("dir")
    (tmp_path / "dangling").symlink_to("missing")
    (tmp_path / "loop").symlink_to("loop")
    names = ["dir", "file", "to-dir", "dangling", "loop", "missing", "file/x", "loop/x", "a\0b"]
    seen = set()
    for name in names:
        path = tmp_path / name
        got = (exists(str(path)), is_dir(str(path)))
        assert got == (path.exists(), path.is_dir()), name
        seen.add(got)
    assert len(seen) == 3  # a directory (or a link to one), a file, nothing

    # Errors other than "not there" are raised, as pathlib raises them (never "absent").
    def denied(*args: object, **kwargs: object) -> os.stat_result:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "stat", denied)
    for probe in (exists, is_dir):
        with pytest.raises(PermissionError):
            probe(str(tmp_path / "dir"))


def test_cgroup_keeps_a_normalized_str() -> None:
    cg = Cgroup(Version.V1, Path("/sys/fs/cgroup/devices/a"))
    assert cg.path == "/sys/fs/cgroup/devices/a" and type(cg.path) is str
    assert cg == Cgroup(Version.V1, "/sys/fs/cgroup//devices/./a/")
    assert str(cg) == "cgroup v1 /sys/fs/cgroup/devices/a"
    assert str(Cgroup(Version.V2, "/sys/fs/cgroup/x")) == "cgroup v2 /sys/fs/cgroup/x"


def old_resolve(
    lines: list[CgroupLine], mounts: list[Mount], version: Version, cgroup_root: Path, where: str
) -> tuple[Version, str]:
    """resolve() as it was with pathlib, verbatim but for the result: (version, str(path))."""
    from capctl.errors import CgroupError

    def relative(cg_path: str, mount_root: str) -> PurePosixPath:
        cg, root = PurePosixPath(cg_path), PurePosixPath(mount_root)
        if ".." in cg.parts:
            raise CgroupError(f"{where}: cgroup path {cg_path!r} contains '..'")
        try:
            return cg.relative_to(root)
        except ValueError:
            raise CgroupError(
                f"{where}: cgroup {cg_path} is outside the mounted hierarchy (root {mount_root})"
            ) from None

    if version is Version.V2:
        mount = next(
            (
                m
                for m in reversed(mounts)
                if m.mount_point == str(cgroup_root) and m.fstype == "cgroup2"
            ),
            None,
        )
        if mount is None:
            raise CgroupError(f"{cgroup_root} is cgroup2 but has no cgroup2 line in mountinfo")
        line = next((ln for ln in lines if ln.hierarchy == 0 and not ln.controllers), None)
        if line is None:
            raise CgroupError(f"{where}: no cgroup v2 ('0::') line")
    else:
        candidates = [m for m in mounts if m.fstype == "cgroup" and "devices" in m.super_options]
        if not candidates:
            raise CgroupError(
                f"no cgroup v1 'devices' hierarchy is mounted (and {cgroup_root} is not cgroup2)"
            )
        candidates.sort(key=lambda m: not Path(m.mount_point).is_relative_to(cgroup_root))
        mount = candidates[0]
        line = next((ln for ln in lines if "devices" in ln.controllers), None)
        if line is None:
            raise CgroupError(f"{where}: no cgroup v1 'devices' line")
    rel = relative(line.path, mount.root)
    if rel == PurePosixPath("."):
        kind = "cgroup2" if version is Version.V2 else "devices"
        raise CgroupError(
            f"{where}: the process is in the root {kind}"
            f" cgroup ({mount.mount_point}); capctl never changes device access of a root cgroup"
        )
    return (version, str(Path(mount.mount_point, rel)))


def test_resolve_equals_the_pathlib_version() -> None:
    rng = random.Random(5)
    names = ["", "/", "//", "/sys/fs/cgroup", "/sys/fs/cgroup/", "sys", "/a", "/a/b", "/a/..",
             "/./a", "/a/./b/", "//a", "/a b", "."]  # fmt: skip
    seen: set[str] = set()
    for _ in range(5000):
        version = rng.choice([Version.V1, Version.V2])
        root = rng.choice(names)
        mounts = [
            Mount(
                rng.choice(names),
                rng.choice([root, *names]),
                rng.choice(["cgroup", "cgroup2", "tmpfs"]),
                frozenset(rng.choice([{"devices"}, {"cpu"}, {"rw", "devices"}])),
                1,
            )
            for _ in range(rng.randint(0, 3))
        ]
        lines = [
            CgroupLine(rng.choice([0, 5]), frozenset(rng.choice([(), ("devices",)])), path)
            for path in rng.choices(["/", "/a", "/a/b", "/a/../b", "/a//b/.", "//a", "/b"], k=2)
        ]
        got = outcome(resolve, lines, mounts, version, root, "cg")
        want = outcome(old_resolve, lines, mounts, version, Path(root), "cg")
        if isinstance(got[1], Cgroup):
            got = ("ok", (got[1].version, got[1].path))
        assert got == want, (lines, mounts, version, root)
        seen.add(got[0] if got[0] == "ok" else str(got[1]).split(":")[-1][:25])
    assert "ok" in seen and len(seen) >= 6


def test_locations_as_str_or_path_agree(tmp_path: Path) -> None:
    proc, cg = fake(tmp_path, PROC_CGROUP, v2_at_root=False)
    magic = magic_of(TMPFS_MAGIC)
    want = Cgroup(Version.V1, str(cg / "devices/kubepods/pod1/ctr"))
    assert find_cgroup(42, proc=proc, cgroup_root=cg, magic=magic) == want
    assert find_cgroup(42, proc=f"{proc}/", cgroup_root=f"{cg}//", magic=magic) == want
    with pytest.raises(CgroupError) as err:
        find_cgroup(4242, proc=f"{proc}//", cgroup_root=str(cg), magic=magic)
    assert str(err.value) == f"{proc}/4242/cgroup: cannot read: No such file or directory"


# --- what the hook's imports cost ----------------------------------------------------------

#: Never imported on the hook's v1 path (docs/hook-startup.md: measured costs at start): re, enum (with
#: functools and collections), pathlib, json, contextlib, typing, dataclasses (inspect),
#: logging (failure paths only), ctypes/platform and the v2 backend.
HEAVY = frozenset({
    "re", "enum", "functools", "collections", "contextlib", "pathlib", "json", "typing",
    "dataclasses", "inspect", "logging", "ctypes", "platform", "warnings", "tomllib",
    "capctl.cgroup.v2", "capctl.cgroup.bpf", "capctl.cgroup.asm", "capctl.cgroup.devfilter",
})  # fmt: skip
#: What they may import besides capctl's own modules: cheap, and most loaded at every start
#: already (site imports os).
CHEAP = frozenset({
    "os", "os.path", "posixpath", "genericpath", "stat", "_stat", "errno", "abc", "_abc",
    "_collections_abc", "_operator", "itertools", "__future__", "io", "time", "sys",
    "_json",  # the OCI parser's strict JSON (capctl._lite.jsonload), on the hook's path anyway
})  # fmt: skip

# Run with site disabled (-S): the repo venv's site imports re and pathlib for the editable
# install, which would hide what capctl itself imports.  After the imports, the v1 path's
# pure work runs too (parsers, emulator, a fake cgroup), so lazy imports are caught as well.
_HOOK_PATH = """
import sys
sys.path.insert(0, sys.argv[1])
before = set(sys.modules)
import capctl.cgroup, capctl.cgroup.v1, capctl.edits.rules
imported = set(sys.modules) - before
from capctl import cgroup
from capctl.cgroup import emulator
from capctl.edits import rules
from capctl.request import oci
from capctl.cgroup import discovery
proc, cg = sys.argv[2:]
target = cgroup.detect(42, proc=proc, cgroup_root=cg)
backend = cgroup.devices(target)
assert not backend.allows_all() and backend.allowed()
emu = emulator.Emulator.from_list("c 1:3 rwm\\nc 195:* rw\\n")
emu.transition(emu.with_allowed([rules.char(238, 5, "r"), rules.parse_rule("c 1:5 m")]))
oci.oci_device_rules({"linux": {"resources": {"devices": [{"allow": False, "access": "rwm"}]}}})
discovery.parse_mountinfo("1 2 0:3 /a\\\\040b /c rw - x y z\\n")
worked = set(sys.modules) - before
print(target)
print(*sorted(imported))
print(*sorted(worked))
"""


def test_hook_path_imports_only_cheap_modules(tmp_path: Path) -> None:
    proc, cg = fake(tmp_path, PROC_CGROUP, v2_at_root=False)
    ctr = cg / "devices/kubepods/pod1/ctr"
    (ctr / "devices.list").write_text("c 1:3 rwm\n")
    res = subprocess.run(
        [sys.executable, "-I", "-S", "-c", _HOOK_PATH, CAPCTL_PATH, str(proc), str(cg)],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    target, imported, worked = res.stdout.splitlines()
    assert target == f"cgroup v1 {ctr}"  # it did the v1 path's work
    ours = {"capctl.cgroup", "capctl.cgroup.v1", "capctl.cgroup.discovery", "capctl.edits.rules"}
    assert ours <= set(imported.split())
    for modules in (set(imported.split()), set(worked.split())):
        assert sorted(modules & HEAVY) == []
        assert sorted(m for m in modules - CHEAP if m.split(".")[0] != "capctl") == []


def test_check_not_root_wants_a_real_directory_below_a_mount(tmp_path: Path) -> None:
    (tmp_path / "cg").mkdir()
    (tmp_path / "file").write_text("")
    (tmp_path / "to-cg").symlink_to("cg")
    check_not_root(tmp_path / "cg")  # a plain directory: fine
    for name in ("to-cg", "file", "missing"):
        with pytest.raises(CgroupError, match="not a cgroup directory"):
            check_not_root(tmp_path / name)
    with pytest.raises(CgroupError, match="root cgroup"):
        check_not_root("/")  # a mount point

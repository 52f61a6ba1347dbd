"""Find the device cgroup of a process, and which cgroup version governs it.

The version is decided as runc decides it, from our own mount namespace: unified (v2) iff
``/sys/fs/cgroup`` itself is a cgroup2 mount (statfs magic ``CGROUP2_SUPER_MAGIC``, runc
``libcontainer/cgroups/utils.go: IsCgroup2UnifiedMode``), else the v1 ``devices``
controller (hybrid hosts put cgroup2 at ``/sys/fs/cgroup/unified``, which runc ignores).
A process lists v1 lines in ``/proc/<pid>/cgroup`` even when the runtime ran in unified mode
in a private mount namespace, so the mount decides, never the lines.

The hook asks the same question without ``statfs(2)``, which Python reaches only through
ctypes (about 1.5 ms to import, on every container start): the device number ``stat(2)``
gives for ``/sys/fs/cgroup`` names the file system (superblock) mounted there, and
``mountinfo``, which :func:`find_cgroup` reads anyway, gives that device's file system type
(see :func:`is_cgroup2`).  :func:`fs_magic` remains for callers that want the magic itself.

Locations are arguments (``proc``, ``cgroup_root``), defaulting to the real ones: cgroups and
processes are always the host's, never under capctl's ``--root``.  Parsing is pure and strict.
"""

from __future__ import annotations

import enum
import os
import re
from pathlib import Path, PurePosixPath

from capctl.errors import CgroupError, ParseError
from capctl.record import record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

CGROUP2_SUPER_MAGIC = 0x63677270  # include/uapi/linux/magic.h

PROC = Path("/proc")
CGROUP_ROOT = Path("/sys/fs/cgroup")


class Version(enum.IntEnum):
    V1 = 1
    V2 = 2


@record
class Cgroup:
    """A device cgroup: its version and its directory (v1: in the ``devices`` hierarchy)."""

    version: Version
    path: Path

    def __str__(self) -> str:
        return f"cgroup v{int(self.version)} {self.path}"


@record
class Mount:
    """One line of ``/proc/<pid>/mountinfo`` (proc(5)), the fields capctl needs.

    ``dev`` is the file system's device number (``major:minor``, as ``os.makedev`` makes
    it): what ``os.stat().st_dev`` gives for a file on it.
    """

    root: str
    mount_point: str
    fstype: str
    super_options: frozenset[str]
    dev: int


@record
class CgroupLine:
    """One line of ``/proc/<pid>/cgroup``: ``hierarchy-ID:controller-list:path``."""

    hierarchy: int
    controllers: frozenset[str]
    path: str


_MOUNTINFO_RE = re.compile(
    r"(?P<id>\d+) (?P<parent>\d+) (?P<dev>\d+:\d+) (?P<root>\S+) (?P<mnt>\S+) (?P<opts>\S+)"
    r"(?P<optional>(?: \S+)*) - (?P<fstype>\S+) (?P<source>\S+) (?P<super>\S+)"
)
_CGROUP_RE = re.compile(r"(?P<id>\d+):(?P<controllers>[^:]*):(?P<path>/.*)")


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo (fs/proc_namespace.c).
    if "\\" not in field:  # nearly always: skip the substitution (and compiling it)
        return field
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), field)


def parse_mountinfo(text: str, path: str = "mountinfo") -> list[Mount]:
    mounts = []
    for lineno, line in enumerate(text.splitlines(), 1):
        m = _MOUNTINFO_RE.fullmatch(line)
        if m is None:
            raise ParseError(path, "malformed mountinfo line", lineno)
        major, minor = m["dev"].split(":")
        mounts.append(
            Mount(
                _unescape(m["root"]),
                _unescape(m["mnt"]),
                m["fstype"],
                frozenset(m["super"].split(",")),
                os.makedev(int(major), int(minor)),
            )
        )
    return mounts


def parse_proc_cgroup(text: str, path: str = "cgroup") -> list[CgroupLine]:
    lines = []
    for lineno, line in enumerate(text.splitlines(), 1):
        m = _CGROUP_RE.fullmatch(line)
        if m is None:
            raise ParseError(path, "malformed cgroup line", lineno)
        controllers = frozenset(c for c in m["controllers"].split(",") if c)
        lines.append(CgroupLine(int(m["id"]), controllers, m["path"]))
    return lines


def fs_magic(path: Path) -> int:
    """``statfs(2)`` f_type of *path* (os.statvfs does not expose it)."""
    import ctypes  # only here: the hook decides the version with is_cgroup2 instead

    buf = ctypes.create_string_buffer(256)  # > sizeof(struct statfs) on every Linux arch
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.statfs(os.fsencode(path), buf) != 0:
        err = ctypes.get_errno()
        raise CgroupError(f"{path}: statfs: {os.strerror(err)}")
    # f_type is the first member: a long (__fsword_t), except s390x where it is unsigned int.
    ctype = ctypes.c_uint if os.uname().machine == "s390x" else ctypes.c_long
    return int(ctype.from_buffer(buf).value) & 0xFFFFFFFF


def is_cgroup2(path: Path, mounts: list[Mount]) -> bool:
    """Whether *path* is on a cgroup2 file system: ``fs_magic(path) == CGROUP2_SUPER_MAGIC``.

    Decided without statfs: ``stat(2)`` follows *path* to the file system mounted there (the
    top one, where several are stacked), whose device number appears in *mounts* (our
    ``mountinfo``) on every mount of that file system, with its type.
    """
    try:
        dev = os.stat(path).st_dev
    except OSError as err:
        raise CgroupError(f"{path}: stat: {err.strerror}") from err
    return any(m.dev == dev and m.fstype == "cgroup2" for m in mounts)


def _relative(cg_path: str, mount_root: str, where: str) -> PurePosixPath:
    cg, root = PurePosixPath(cg_path), PurePosixPath(mount_root)
    if ".." in cg.parts:
        raise CgroupError(f"{where}: cgroup path {cg_path!r} contains '..'")
    try:
        return cg.relative_to(root)
    except ValueError:
        raise CgroupError(
            f"{where}: cgroup {cg_path} is outside the mounted hierarchy (root {mount_root})"
        ) from None


def resolve(
    lines: list[CgroupLine], mounts: list[Mount], version: Version, cgroup_root: Path, where: str
) -> Cgroup:
    """Pure part of :func:`find_cgroup`: map the process's cgroup onto the mounted hierarchy."""
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
        # Prefer the mount under cgroup_root (where runc looks), then the first.
        candidates.sort(key=lambda m: not Path(m.mount_point).is_relative_to(cgroup_root))
        mount = candidates[0]
        line = next((ln for ln in lines if "devices" in ln.controllers), None)
        if line is None:
            raise CgroupError(f"{where}: no cgroup v1 'devices' line")
    rel = _relative(line.path, mount.root, where)
    if rel == PurePosixPath("."):
        kind = "cgroup2" if version is Version.V2 else "devices"
        raise CgroupError(
            f"{where}: the process is in the root {kind}"
            f" cgroup ({mount.mount_point}); capctl never changes device access of a root cgroup"
        )
    return Cgroup(version, Path(mount.mount_point, rel))


def find_cgroup(
    pid: int,
    *,
    proc: Path = PROC,
    cgroup_root: Path = CGROUP_ROOT,
    magic: Callable[[Path], int] | None = None,
) -> Cgroup:
    """The device cgroup of process *pid* as our mount namespace sees it.

    *magic*, if given, is a statfs probe to use instead of :func:`is_cgroup2` (so fake trees
    can say "cgroup2").  Raises :class:`CgroupError` for a root cgroup, a missing hierarchy
    or a vanished process.
    """
    unified = None if magic is None else magic(cgroup_root) == CGROUP2_SUPER_MAGIC
    cgroup_file = proc / str(pid) / "cgroup"
    mountinfo_file = proc / "self" / "mountinfo"
    try:
        lines = parse_proc_cgroup(cgroup_file.read_text(), str(cgroup_file))
        mounts = parse_mountinfo(mountinfo_file.read_text(), str(mountinfo_file))
    except OSError as err:
        raise CgroupError(f"{err.filename}: {err.strerror}") from err
    if unified is None:
        unified = is_cgroup2(cgroup_root, mounts)
    version = Version.V2 if unified else Version.V1
    cg = resolve(lines, mounts, version, cgroup_root, str(cgroup_file))
    if not cg.path.is_dir():
        raise CgroupError(f"{cgroup_file}: cgroup directory {cg.path} does not exist")
    return cg


def check_not_root(path: Path) -> None:
    """Refuse a cgroup hierarchy's root (a mount point): changing it could lock up the host."""
    try:
        if os.path.ismount(path):
            raise CgroupError(f"{path}: refusing to change device access of a root cgroup")
        if not path.is_dir() or path.is_symlink():
            raise CgroupError(f"{path}: not a cgroup directory")
    except OSError as err:
        raise CgroupError(f"{path}: {err.strerror}") from err

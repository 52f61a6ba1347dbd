"""Find the device cgroup of a process, and which cgroup version governs it.

The version is decided as runc decides it, from our own mount namespace: unified (v2) iff
``/sys/fs/cgroup`` itself is a cgroup2 mount (statfs magic ``CGROUP2_SUPER_MAGIC``, runc
``libcontainer/cgroups/utils.go: IsCgroup2UnifiedMode``), else the v1 ``devices``
controller (hybrid hosts put cgroup2 at ``/sys/fs/cgroup/unified``, which runc ignores).
A process lists v1 lines in ``/proc/<pid>/cgroup`` even when the runtime ran in unified mode
in a private mount namespace, so the mount decides, never the lines.

The hook asks the same question without ``statfs(2)``, which Python reaches only through
ctypes (:mod:`capctl.cgroup.libc`; ``_ctypes`` alone costs the v1 path about 0.3 ms at
every container start): the device number ``stat(2)``
gives for ``/sys/fs/cgroup`` names the file system (superblock) mounted there, and
``mountinfo``, which :func:`find_cgroup` reads anyway, gives that device's file system type
(see :func:`is_cgroup2`).  :func:`fs_magic` remains for callers that want the magic itself.

Locations are arguments (``proc``, ``cgroup_root``), defaulting to the real ones: cgroups and
processes are always the host's, never under capctl's ``--root``.  Parsing is pure and strict.

The OCI hook imports this module at every container start, so it does without ``pathlib``
(9 ms at start), ``re`` (5.5 ms) and ``enum`` (3 ms; docs/hook-startup.md): paths are ``str``, kept as
``str(PurePosixPath(...))`` would give them (:mod:`capctl._lite.strpath`; arguments may
be any path-like), and each line kind has a parser of ``str`` methods held by the tests to
the regular expression it replaces.
"""

from __future__ import annotations

import os
import stat

from capctl._lite.litenum import IntEnum
from capctl._lite.record import Record
from capctl._lite.record import set_field as _set
from capctl._lite.strpath import _mode, _split, _within, is_dir, join, normalized
from capctl.errors import CgroupError, ParseError, translate

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeVar

    from _typeshed import StrPath

    _T = TypeVar("_T")

CGROUP2_SUPER_MAGIC = 0x63677270  # include/uapi/linux/magic.h

PROC = "/proc"
CGROUP_ROOT = "/sys/fs/cgroup"


class Version(IntEnum):
    V1 = 1
    V2 = 2


# --- records and line parsers -----------------------------------------------------------------
class Cgroup(Record):
    """A device cgroup: its version and its directory (v1: in the ``devices`` hierarchy).

    *path* may be given as any path-like; it is kept as :func:`normalized` gives it.
    """

    version: Version
    path: str

    def __init__(self, version: Version, path: StrPath):
        _set(self, "version", version)
        _set(self, "path", normalized(path))

    def __str__(self) -> str:
        return f"cgroup v{int(self.version)} {self.path}"


class Mount(Record):
    """One line of ``/proc/<pid>/mountinfo`` (proc(5)), the fields capctl needs.

    ``dev`` is the file system's device number (``major:minor``, as ``os.makedev`` makes
    it): what ``os.stat().st_dev`` gives for a file on it.
    """

    root: str
    mount_point: str
    fstype: str
    super_options: frozenset[str]
    dev: int


class CgroupLine(Record):
    """One line of ``/proc/<pid>/cgroup``: ``hierarchy-ID:controller-list:path``."""

    hierarchy: int
    controllers: frozenset[str]
    path: str


# The line parsers below use str methods, not re (5 ms to import at every hook start), each
# exactly as strict as the expression in its docstring (held to it by tests/test_cgroup_paths.py),
# except that a \d there means an ASCII digit: the kernel prints nothing else, and str.isdigit()
# alone would take '²' and int() any script's digits.


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo (fs/proc_namespace.c):
    # re.sub(r"\\([0-7]{3})", octal, field).  A match never spans a backslash, so each piece
    # after one is decoded on its own.
    if "\\" not in field:  # nearly always
        return field
    first, *rest = field.split("\\")
    out = [first]
    for piece in rest:
        code = piece[:3]
        if len(code) == 3 and not code.strip("01234567"):
            out.append(chr(int(code, 8)) + piece[3:])
        else:
            out.append("\\" + piece)
    return "".join(out)


def parse_mountinfo_line(line: str) -> Mount | None:
    r"""One ``mountinfo`` line, or None if it is not one.

    ``(\d+) (\d+) (\d+):(\d+) (\S+) (\S+) (\S+)(?: \S+)* - (\S+) (\S+) (\S+)``: fields
    without white space, single spaces between them, optional fields up to the ``-``.
    """
    fields = line.split()
    n = len(fields)
    # n >= 10: six fixed fields, "-", three more; the optional fields (any number, "-" too)
    # are what lies between; joined by single spaces only if there was no other white space.
    if n < 10 or fields[n - 4] != "-" or " ".join(fields) != line:
        return None
    major, _, minor = fields[2].partition(":")  # no ':': minor "" is refused
    if not (_digits(major) and _digits(minor)):
        return None
    if not (_digits(fields[0]) and _digits(fields[1])):
        return None
    return Mount(
        _unescape(fields[3]),
        _unescape(fields[4]),
        fields[n - 3],
        frozenset(fields[n - 1].split(",")),
        os.makedev(int(major), int(minor)),
    )


def parse_cgroup_line(line: str) -> CgroupLine | None:
    r"""One ``/proc/<pid>/cgroup`` line, or None: ``(\d+):([^:]*):(/.*)``."""
    hierarchy, _, rest = line.partition(":")
    controllers, _, path = rest.partition(":")  # a ':' missing leaves path "": refused
    if not (_digits(hierarchy) and path[:1] == "/" and "\n" not in path):
        return None
    return CgroupLine(int(hierarchy), frozenset(c for c in controllers.split(",") if c), path)


def _parsed_lines(text: str, parse: Callable[[str], _T | None], what: str, path: str,
                  needle: str = "") -> list[_T]:
    """Each line of ``text`` that contains ``needle`` (every line, by default), parsed;
    :class:`ParseError` naming the file and line for one ``parse`` refuses."""
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if needle in line:
            parsed = parse(line)
            if parsed is None:
                raise ParseError(path, f"malformed {what} line", lineno)
            out.append(parsed)
    return out


def parse_mountinfo(text: str, path: str = "mountinfo") -> list[Mount]:
    return _parsed_lines(text, parse_mountinfo_line, "mountinfo", path)


def mounts_with(text: str, needle: str, path: str = "mountinfo") -> list[Mount]:
    """The mounts of the ``mountinfo`` text on the lines that contain ``needle``, each as
    strict as :func:`parse_mountinfo`: what a caller that wants a few mounts of a host with
    hundreds (a node's pods add several each) reads, in a fraction of the time.  The kernel
    escapes white space and ``\\`` in paths (:func:`escaped`), so a needle of whole fields
    with their spaces matches only where the fields do; callers still compare the parsed
    mounts."""
    if needle not in text:
        return []
    return _parsed_lines(text, parse_mountinfo_line, "mountinfo", path, needle)


def escaped(path: str) -> str:
    """``path`` as ``mountinfo`` prints it: space, tab, newline and ``\\`` as ``\\ooo``."""
    for char in "\\ \t\n":
        path = path.replace(char, f"\\{ord(char):03o}")
    return path


def parse_proc_cgroup(text: str, path: str = "cgroup") -> list[CgroupLine]:
    return _parsed_lines(text, parse_cgroup_line, "cgroup", path)


def fs_magic(path: StrPath) -> int:
    """``statfs(2)`` f_type of *path* (os.statvfs does not expose it)."""
    from _struct import unpack_from

    from capctl.cgroup import libc  # only here: the hook decides the version with is_cgroup2

    buf = libc.buffer(256)  # > sizeof(struct statfs) on every Linux arch
    if libc.function("statfs")(os.fsencode(path), buf) != 0:
        err = libc.get_errno()
        raise CgroupError(f"{os.fspath(path)}: statfs: {os.strerror(err)}")
    # f_type is the first member: a long (__fsword_t), except s390x where it is unsigned int.
    fmt = "I" if os.uname().machine == "s390x" else "l"  # native size and byte order
    return int(unpack_from(fmt, buf)[0]) & 0xFFFFFFFF


def is_cgroup2(path: StrPath, mounts: list[Mount]) -> bool:
    """Whether *path* is on a cgroup2 file system: ``fs_magic(path) == CGROUP2_SUPER_MAGIC``.

    Decided without statfs: ``stat(2)`` follows *path* to the file system mounted there (the
    top one, where several are stacked), whose device number appears in *mounts* (our
    ``mountinfo``) on every mount of that file system, with its type.
    """
    with translate(CgroupError, path, "stat"):
        dev = os.stat(path).st_dev
    return any(m.dev == dev and m.fstype == "cgroup2" for m in mounts)


def _relative(cg_path: str, mount_root: str, where: str) -> list[str]:
    """The components of *cg_path* below *mount_root* (``PurePosixPath.relative_to``)."""
    cg, root = _split(cg_path), _split(mount_root)
    if ".." in cg:
        raise CgroupError(f"{where}: cgroup path {cg_path!r} contains '..'")
    if not _within(cg, root):
        raise CgroupError(
            f"{where}: cgroup {cg_path} is outside the mounted hierarchy (root {mount_root})"
        )
    return cg[len(root) :]


def resolve(
    lines: list[CgroupLine],
    mounts: list[Mount],
    version: Version,
    cgroup_root: StrPath,
    where: str,
) -> Cgroup:
    """Pure part of :func:`find_cgroup`: map the process's cgroup onto the mounted hierarchy."""
    root = normalized(cgroup_root)
    if version is Version.V2:
        mount = next(
            (m for m in reversed(mounts) if m.mount_point == root and m.fstype == "cgroup2"),
            None,
        )
        if mount is None:
            raise CgroupError(f"{root} is cgroup2 but has no cgroup2 line in mountinfo")
        line = next((ln for ln in lines if ln.hierarchy == 0 and not ln.controllers), None)
        if line is None:
            raise CgroupError(f"{where}: no cgroup v2 ('0::') line")
    else:
        candidates = [m for m in mounts if m.fstype == "cgroup" and "devices" in m.super_options]
        if not candidates:
            raise CgroupError(
                f"no cgroup v1 'devices' hierarchy is mounted (and {root} is not cgroup2)"
            )
        # Prefer the mount under cgroup_root (where runc looks), then the first.
        under = _split(root)
        candidates.sort(key=lambda m: not _within(_split(m.mount_point), under))
        mount = candidates[0]
        line = next((ln for ln in lines if "devices" in ln.controllers), None)
        if line is None:
            raise CgroupError(f"{where}: no cgroup v1 'devices' line")
    rel = _relative(line.path, mount.root, where)
    if not rel:
        kind = "cgroup2" if version is Version.V2 else "devices"
        raise CgroupError(
            f"{where}: the process is in the root {kind}"
            f" cgroup ({mount.mount_point}); capctl never changes device access of a root cgroup"
        )
    return Cgroup(version, join(mount.mount_point, *rel))


def _read(path: str) -> str:
    # As Path.read_text() reads (the locale's encoding: UTF-8 in the hook's C locale, PEP 538).
    with translate(CgroupError, path, "cannot read"), open(path, encoding="locale") as f:
        return f.read()


def find_cgroup(
    pid: int,
    *,
    proc: StrPath = PROC,
    cgroup_root: StrPath = CGROUP_ROOT,
    magic: Callable[[str], int] | None = None,
) -> Cgroup:
    """The device cgroup of process *pid* as our mount namespace sees it.

    *magic*, if given, is a statfs probe to use instead of :func:`is_cgroup2` (so fake trees
    can say "cgroup2").  Raises :class:`CgroupError` for a root cgroup, a missing hierarchy
    or a vanished process.
    """
    root = normalized(cgroup_root)
    unified = None if magic is None else magic(root) == CGROUP2_SUPER_MAGIC
    cgroup_file = join(proc, str(pid), "cgroup")
    mountinfo_file = join(proc, "self", "mountinfo")
    lines = parse_proc_cgroup(_read(cgroup_file), cgroup_file)
    # Only the cgroup and cgroup2 mounts matter (a path's " - " is escaped: this is the
    # separator before the file system type).
    mounts = mounts_with(_read(mountinfo_file), " - cgroup", mountinfo_file)
    if unified is None:
        unified = is_cgroup2(root, mounts)
    version = Version.V2 if unified else Version.V1
    cg = resolve(lines, mounts, version, root, cgroup_file)
    with translate(CgroupError, cg.path, "stat"):
        found = is_dir(cg.path)
    if not found:
        raise CgroupError(f"{cgroup_file}: cgroup directory {cg.path} does not exist")
    return cg


def check_not_root(path: StrPath) -> None:
    """Refuse a cgroup hierarchy's root (a mount point): changing it could lock up the host."""
    path = normalized(path)
    with translate(CgroupError, path):
        if os.path.ismount(path):
            raise CgroupError(f"{path}: refusing to change device access of a root cgroup")
        mode = _mode(path, follow=False)  # one lstat: a symlink is not a directory here
    if mode is None or not stat.S_ISDIR(mode):
        raise CgroupError(f"{path}: not a cgroup directory")

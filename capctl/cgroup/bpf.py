"""The only module that calls ``bpf(2)``: cgroup device programs through ctypes' C core.

No compiler, no libbpf: the handful of commands capctl needs, with ``union bpf_attr`` laid
out per ``include/uapi/linux/bpf.h``.  Each command gets its own ``_struct`` format holding
just the fields of that command's member of the union; the kernel accepts a shorter
``size`` and treats the rest as zero (``bpf_check_uarg_tail_zero``).

:class:`Bpf` is the kernel interface the v2 backend takes as an argument, so tests can put a
different reader in front of it (e.g. one that returns zeroed instructions, as a hardened
kernel does) without patching module globals.
"""

from __future__ import annotations

import errno
import os
from _struct import calcsize, unpack_from

from capctl._lite.record import Record
from capctl.cgroup import libc
from capctl.cgroup.libc import Char, Long, VoidP, addressof, buffer, packed
from capctl.cgroup.undo import WARNING, log
from capctl.errors import CgroupError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ctypes import Array


# enum bpf_cmd
BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_DETACH = 9
BPF_PROG_GET_FD_BY_ID = 13
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_PROG_QUERY = 16
# enum bpf_prog_type / enum bpf_attach_type
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
# attach flags
BPF_F_ALLOW_OVERRIDE = 1 << 0
BPF_F_ALLOW_MULTI = 1 << 1
BPF_F_REPLACE = 1 << 2
# query flags
BPF_F_QUERY_EFFECTIVE = 1 << 0
# kernel/bpf/cgroup.c: BPF_CGROUP_MAX_PROGS
MAX_PROGS = 64
#: The verifier log's size, for a load that failed without one.
LOG_SIZE = 1 << 24

# __NR_bpf per architecture (arch/*/entry/syscalls, include/uapi/asm-generic/unistd.h).
_SYSCALL_NR = {
    "x86_64": 321,
    "aarch64": 280,
    "riscv64": 280,
    "loongarch64": 280,
    "ppc64le": 361,
    "ppc64": 361,
    "s390x": 351,
    "i686": 357,
    "i386": 357,
    "armv7l": 386,
}

# Each command's member of ``union bpf_attr`` as a _struct format (:mod:`capctl.cgroup.libc`;
# checked against ctypes Structures of the C structs in tests/test_bpf_layout.py) (include/uapi/linux/bpf.h): native byte order,
# no implicit alignment, padding written out so that each size is the C struct's (aligned
# to its widest member, as a ctypes Structure of the same fields is).
#: BPF_PROG_LOAD: prog_type, insn_cnt, insns, license, log_level, log_size, log_buf,
#: kern_version, prog_flags, prog_name[16], prog_ifindex, expected_attach_type
PROG_LOAD_ATTR = "=IIQQIIQII16sII"
#: BPF_PROG_ATTACH / BPF_PROG_DETACH: target_fd, attach_bpf_fd, attach_type, attach_flags,
#: replace_bpf_fd
ATTACH_ATTR = "=IIIII"
#: BPF_PROG_GET_FD_BY_ID: prog_id, next_id, open_flags
GET_FD_BY_ID_ATTR = "=III"
#: BPF_OBJ_GET_INFO_BY_FD: bpf_fd, info_len, info
INFO_ATTR = "=IIQ"
#: BPF_PROG_QUERY: target_fd, attach_type, query_flags, attach_flags, prog_ids, prog_cnt
QUERY_ATTR = "=IIIIQI4x"
#: The head of ``struct bpf_prog_info`` (the kernel fills what fits in info_len): type, id,
#: tag[8], jited_prog_len, xlated_prog_len, jited_prog_insns, xlated_prog_insns, load_time,
#: created_by_uid, nr_map_ids, map_ids, name[16]
PROG_INFO = "=II8sIIQQQIIQ16s"


class BpfError(CgroupError):
    """A ``bpf(2)`` command failed; ``errno`` is the kernel's answer."""

    errno: int

    def __init__(self, command: str, err: int, detail: str = ""):
        self.command = command
        self.errno = err
        msg = f"bpf({command}) failed: {os.strerror(err)}"
        super().__init__(f"{msg}: {detail}" if detail else msg)


class Attached(Record):
    """Programs attached to a cgroup for one attach type (``BPF_PROG_QUERY``)."""

    ids: tuple[int, ...]
    flags: int


class ProgInfo(Record):
    id: int
    type: int
    name: str
    xlated: bytes  # may be empty or all zero where the kernel withholds it


def kernel_version(release: str | None = None) -> tuple[int, int]:
    """``(major, minor)`` of a kernel release string (``"5.4.0-150-generic"``); (0, 0) if it
    does not start with ``<digits>.<digits>``."""
    text = release or os.uname().release
    major, _, rest = text.partition(".")
    minor = rest
    for i, ch in enumerate(rest):
        if not ("0" <= ch <= "9"):
            minor = rest[:i]
            break
    if not (major and minor and major.isascii() and major.isdigit()):
        return (0, 0)
    return (int(major), int(minor))


class Bpf:
    """Thin typed wrappers around the bpf(2) commands capctl uses."""

    def __init__(self) -> None:
        machine = os.uname().machine
        if machine not in _SYSCALL_NR:
            raise CgroupError(f"bpf(2): unsupported architecture {machine!r}")
        self._nr = _SYSCALL_NR[machine]
        self._syscall = libc.function("syscall", returns_long=True)

    def _call(self, cmd: int, name: str, attr: Array[Char], fmt: str, detail: str = "") -> int:
        """``bpf(cmd, attr, size)``, the size that of ``fmt``, ``attr``'s layout (the buffer
        may be longer: :func:`capctl.cgroup.libc.buffer`)."""
        ret = int(
            self._syscall(
                Long(self._nr),
                Long(cmd),
                VoidP(addressof(attr)),
                Long(calcsize(fmt)),
            )
        )
        if ret < 0:
            raise BpfError(name, libc.get_errno(), detail)
        return ret

    def prog_query(self, cgroup_fd: int, *, effective: bool = False) -> Attached:
        """IDs of the device programs attached to (or, *effective*, in force on) a cgroup."""
        ids = buffer(4 * MAX_PROGS)
        attr = packed(
            QUERY_ATTR,
            cgroup_fd,
            BPF_CGROUP_DEVICE,
            BPF_F_QUERY_EFFECTIVE if effective else 0,
            0,
            addressof(ids),
            MAX_PROGS,
        )
        self._call(BPF_PROG_QUERY, "PROG_QUERY", attr, QUERY_ATTR)
        _fd, _type, _query, flags, _ids, count = unpack_from(QUERY_ATTR, attr)
        return Attached(unpack_from(f"={min(count, MAX_PROGS)}I", ids), flags)

    def prog_get_fd_by_id(self, prog_id: int) -> int:
        return self._call(
            BPF_PROG_GET_FD_BY_ID,
            "PROG_GET_FD_BY_ID",
            packed(GET_FD_BY_ID_ATTR, prog_id, 0, 0),
            GET_FD_BY_ID_ATTR,
            f"id {prog_id}",
        )

    def prog_info(self, prog_fd: int) -> ProgInfo:
        """Type, name and translated instructions of a program (two calls: size, then data)."""
        info = buffer(calcsize(PROG_INFO))
        attr = packed(INFO_ATTR, prog_fd, calcsize(PROG_INFO), addressof(info))
        self._call(BPF_OBJ_GET_INFO_BY_FD, "OBJ_GET_INFO_BY_FD", attr, INFO_ATTR)
        type_, id_, _tag, _jlen, size, _j, _x, _t, _uid, _nmaps, _maps, name = unpack_from(
            PROG_INFO, info
        )
        buf = buffer(size)
        info2 = packed(PROG_INFO, 0, 0, b"", 0, size, 0, addressof(buf), 0, 0, 0, 0, b"")
        attr = packed(INFO_ATTR, prog_fd, calcsize(PROG_INFO), addressof(info2))
        self._call(BPF_OBJ_GET_INFO_BY_FD, "OBJ_GET_INFO_BY_FD", attr, INFO_ATTR)
        fields = unpack_from(PROG_INFO, info2)
        got, where = fields[4], fields[6]
        # The kernel sets xlated_prog_insns to 0 when it withholds the image (constant
        # blinding without raw-dump permission: kernel/bpf/syscall.c); the buffer then stays zero.
        data = buf.raw[: min(size, got)] if where else b""
        # A char[16] field reads as ctypes' c_char arrays read: up to the first NUL.
        return ProgInfo(id_, type_, name.split(b"\0", 1)[0].decode(errors="replace"), data)

    def prog_load(self, insns: bytes, *, name: str, license: str = "Apache-2.0") -> int:
        """Load a ``BPF_PROG_TYPE_CGROUP_DEVICE`` program; the verifier log goes into errors.

        Loads without a verifier log first: a log costs verifier time on every container
        start, and a log buffer too small for a large program (MIG config grants ~140 rules)
        makes the load itself fail with ENOSPC (kernel/bpf/verifier.c, bpf_vlog_finalize).
        Only a failed load is repeated with a log, to say why.
        """
        code = buffer(len(insns))
        code.raw = insns  # the first len(insns) bytes; the rest stays zero
        lic_bytes = license.encode()
        lic = buffer(len(lic_bytes) + 1)  # NUL-terminated
        lic.raw = lic_bytes + b"\0"

        def attempt(logbuf: Array[Char] | None) -> int:
            attr = packed(
                PROG_LOAD_ATTR,
                BPF_PROG_TYPE_CGROUP_DEVICE,
                len(insns) // 8,
                addressof(code),
                addressof(lic),
                0 if logbuf is None else 1,
                0 if logbuf is None else LOG_SIZE,
                0 if logbuf is None else addressof(logbuf),
                0,
                0,
                name.encode()[:15],
                0,
                0,
            )
            return self._call(BPF_PROG_LOAD, "PROG_LOAD", attr, PROG_LOAD_ATTR)

        with memlock_for_bpf():
            try:
                return attempt(None)
            except BpfError as first:
                logbuf = buffer(LOG_SIZE)
                try:
                    return attempt(logbuf)  # a load that fails only without a log: take it
                except BpfError as err:
                    verifier = logbuf.value.decode(errors="replace").strip()
                    if verifier:
                        raise BpfError("PROG_LOAD", first.errno, verifier[-2000:]) from err
                    raise first from err

    def prog_attach(self, prog_fd: int, cgroup_fd: int, *, flags: int, replace_fd: int = 0) -> None:
        attr = packed(ATTACH_ATTR, cgroup_fd, prog_fd, BPF_CGROUP_DEVICE, flags, replace_fd)
        self._call(BPF_PROG_ATTACH, "PROG_ATTACH", attr, ATTACH_ATTR)

    def prog_detach(self, prog_fd: int, cgroup_fd: int) -> None:
        attr = packed(ATTACH_ATTR, cgroup_fd, prog_fd, BPF_CGROUP_DEVICE, 0, 0)
        self._call(BPF_PROG_DETACH, "PROG_DETACH", attr, ATTACH_ATTR)


class memlock_for_bpf:  # a context manager named like a function, as contextlib's are
    """Raise RLIMIT_MEMLOCK around a load on kernels that charge bpf memory to it.

    Before 5.11 bpf programs and maps were charged to RLIMIT_MEMLOCK; since then to the
    memory cgroup (commit "bpf: eliminate rlimit-based memory accounting", v5.11), where
    touching the limit is needless.  The previous limit is restored afterwards.  A class, not
    a ``contextlib`` generator: the hook's v2 path does not import contextlib.
    """

    def __init__(self, release: str | None = None) -> None:
        self._release = release
        self._old: tuple[int, int] | None = None

    def __enter__(self) -> None:
        if kernel_version(self._release) >= (5, 11):
            return
        import resource  # only for kernels before 5.11

        old = resource.getrlimit(resource.RLIMIT_MEMLOCK)
        inf = resource.RLIM_INFINITY
        try:
            resource.setrlimit(resource.RLIMIT_MEMLOCK, (inf, inf))
        except (ValueError, OSError):
            # Without CAP_SYS_RESOURCE the hard limit cannot grow: take the soft one up to it.
            try:
                resource.setrlimit(resource.RLIMIT_MEMLOCK, (old[1], old[1]))
            except (ValueError, OSError) as err:
                log(WARNING, "cannot raise RLIMIT_MEMLOCK for bpf: %s", err)
                return
        self._old = old

    def __exit__(self, *exc: object) -> None:
        if self._old is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_MEMLOCK, self._old)
            self._old = None


def is_missing_replace(err: BpfError) -> bool:
    """Whether an attach with BPF_F_REPLACE failed because the kernel predates it (< 5.6)."""
    return err.errno == errno.EINVAL

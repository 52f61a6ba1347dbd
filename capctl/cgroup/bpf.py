"""The only module that calls ``bpf(2)``: cgroup device programs through ctypes.

No compiler, no libbpf: the handful of commands capctl needs, with ``union bpf_attr`` laid
out per ``include/uapi/linux/bpf.h``.  Each command gets its own ctypes structure holding
just the fields of that command's member of the union; the kernel accepts a shorter
``size`` and treats the rest as zero (``bpf_check_uarg_tail_zero``).

:class:`Bpf` is the kernel interface the v2 backend takes as an argument, so tests can put a
different reader in front of it (e.g. one that returns zeroed instructions, as a hardened
kernel does) without patching module globals.
"""

from __future__ import annotations

import ctypes
import errno
import os
import resource

from capctl._lite.record import record
from capctl.cgroup.undo import WARNING, log
from capctl.errors import CgroupError

TYPE_CHECKING = False
if TYPE_CHECKING:
    pass

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

u32, u64 = ctypes.c_uint32, ctypes.c_uint64


class _ProgLoadAttr(ctypes.Structure):
    _fields_ = (
        ("prog_type", u32),
        ("insn_cnt", u32),
        ("insns", u64),
        ("license", u64),
        ("log_level", u32),
        ("log_size", u32),
        ("log_buf", u64),
        ("kern_version", u32),
        ("prog_flags", u32),
        ("prog_name", ctypes.c_char * 16),
        ("prog_ifindex", u32),
        ("expected_attach_type", u32),
    )


class _AttachAttr(ctypes.Structure):
    _fields_ = (
        ("target_fd", u32),
        ("attach_bpf_fd", u32),
        ("attach_type", u32),
        ("attach_flags", u32),
        ("replace_bpf_fd", u32),
    )


class _GetFdByIdAttr(ctypes.Structure):
    _fields_ = (("prog_id", u32), ("next_id", u32), ("open_flags", u32))


class _InfoAttr(ctypes.Structure):
    _fields_ = (("bpf_fd", u32), ("info_len", u32), ("info", u64))


class _QueryAttr(ctypes.Structure):
    _fields_ = (
        ("target_fd", u32),
        ("attach_type", u32),
        ("query_flags", u32),
        ("attach_flags", u32),
        ("prog_ids", u64),
        ("prog_cnt", u32),
    )


class _ProgInfo(ctypes.Structure):
    """The head of ``struct bpf_prog_info`` (the kernel fills what fits in info_len)."""

    _fields_ = (
        ("type", u32),
        ("id", u32),
        ("tag", ctypes.c_uint8 * 8),
        ("jited_prog_len", u32),
        ("xlated_prog_len", u32),
        ("jited_prog_insns", u64),
        ("xlated_prog_insns", u64),
        ("load_time", u64),
        ("created_by_uid", u32),
        ("nr_map_ids", u32),
        ("map_ids", u64),
        ("name", ctypes.c_char * 16),
    )


class BpfError(CgroupError):
    """A ``bpf(2)`` command failed; ``errno`` is the kernel's answer."""

    errno: int

    def __init__(self, command: str, err: int, detail: str = ""):
        self.command = command
        self.errno = err
        msg = f"bpf({command}) failed: {os.strerror(err)}"
        super().__init__(f"{msg}: {detail}" if detail else msg)


@record
class Attached:
    """Programs attached to a cgroup for one attach type (``BPF_PROG_QUERY``)."""

    ids: tuple[int, ...]
    flags: int


@record
class ProgInfo:
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
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.syscall.restype = ctypes.c_long

    def _call(self, cmd: int, name: str, attr: ctypes.Structure, detail: str = "") -> int:
        ret = int(
            self._libc.syscall(
                ctypes.c_long(self._nr),
                ctypes.c_long(cmd),
                ctypes.c_void_p(ctypes.addressof(attr)),
                ctypes.c_long(ctypes.sizeof(attr)),
            )
        )
        if ret < 0:
            raise BpfError(name, ctypes.get_errno(), detail)
        return ret

    def prog_query(self, cgroup_fd: int, *, effective: bool = False) -> Attached:
        """IDs of the device programs attached to (or, *effective*, in force on) a cgroup."""
        ids = (u32 * MAX_PROGS)()
        attr = _QueryAttr(
            target_fd=cgroup_fd,
            attach_type=BPF_CGROUP_DEVICE,
            query_flags=BPF_F_QUERY_EFFECTIVE if effective else 0,
            prog_ids=ctypes.addressof(ids),
            prog_cnt=MAX_PROGS,
        )
        self._call(BPF_PROG_QUERY, "PROG_QUERY", attr)
        return Attached(tuple(ids[: attr.prog_cnt]), attr.attach_flags)

    def prog_get_fd_by_id(self, prog_id: int) -> int:
        return self._call(
            BPF_PROG_GET_FD_BY_ID,
            "PROG_GET_FD_BY_ID",
            _GetFdByIdAttr(prog_id=prog_id),
            f"id {prog_id}",
        )

    def prog_info(self, prog_fd: int) -> ProgInfo:
        """Type, name and translated instructions of a program (two calls: size, then data)."""
        info = _ProgInfo()
        attr = _InfoAttr(bpf_fd=prog_fd, info_len=ctypes.sizeof(info), info=ctypes.addressof(info))
        self._call(BPF_OBJ_GET_INFO_BY_FD, "OBJ_GET_INFO_BY_FD", attr)
        size = info.xlated_prog_len
        buf = ctypes.create_string_buffer(size)
        info2 = _ProgInfo(xlated_prog_len=size, xlated_prog_insns=ctypes.addressof(buf))
        attr = _InfoAttr(
            bpf_fd=prog_fd, info_len=ctypes.sizeof(info2), info=ctypes.addressof(info2)
        )
        self._call(BPF_OBJ_GET_INFO_BY_FD, "OBJ_GET_INFO_BY_FD", attr)
        # The kernel sets xlated_prog_insns to 0 when it withholds the image (constant
        # blinding without raw-dump permission: kernel/bpf/syscall.c); the buffer then stays zero.
        data = buf.raw[: min(size, info2.xlated_prog_len)] if info2.xlated_prog_insns else b""
        return ProgInfo(info.id, info.type, info.name.decode(errors="replace"), data)

    def prog_load(self, insns: bytes, *, name: str, license: str = "Apache-2.0") -> int:
        """Load a ``BPF_PROG_TYPE_CGROUP_DEVICE`` program; the verifier log goes into errors.

        Loads without a verifier log first: a log costs verifier time on every container
        start, and a log buffer too small for a large program (MIG config grants ~140 rules)
        makes the load itself fail with ENOSPC (kernel/bpf/verifier.c, bpf_vlog_finalize).
        Only a failed load is repeated with a log, to say why.
        """
        code = ctypes.create_string_buffer(insns, len(insns))
        lic = ctypes.create_string_buffer(license.encode())

        def attempt(logbuf: ctypes.Array[ctypes.c_char] | None) -> int:
            attr = _ProgLoadAttr(
                prog_type=BPF_PROG_TYPE_CGROUP_DEVICE,
                insn_cnt=len(insns) // 8,
                insns=ctypes.addressof(code),
                license=ctypes.addressof(lic),
                log_level=0 if logbuf is None else 1,
                log_size=0 if logbuf is None else len(logbuf),
                log_buf=0 if logbuf is None else ctypes.addressof(logbuf),
                prog_name=name.encode()[:15],
            )
            return self._call(BPF_PROG_LOAD, "PROG_LOAD", attr)

        with memlock_for_bpf():
            try:
                return attempt(None)
            except BpfError as first:
                logbuf = ctypes.create_string_buffer(1 << 24)
                try:
                    return attempt(logbuf)  # a load that fails only without a log: take it
                except BpfError as err:
                    verifier = logbuf.value.decode(errors="replace").strip()
                    if verifier:
                        raise BpfError("PROG_LOAD", first.errno, verifier[-2000:]) from err
                    raise first from err

    def prog_attach(self, prog_fd: int, cgroup_fd: int, *, flags: int, replace_fd: int = 0) -> None:
        attr = _AttachAttr(
            target_fd=cgroup_fd,
            attach_bpf_fd=prog_fd,
            attach_type=BPF_CGROUP_DEVICE,
            attach_flags=flags,
            replace_bpf_fd=replace_fd,
        )
        self._call(BPF_PROG_ATTACH, "PROG_ATTACH", attr)

    def prog_detach(self, prog_fd: int, cgroup_fd: int) -> None:
        attr = _AttachAttr(
            target_fd=cgroup_fd, attach_bpf_fd=prog_fd, attach_type=BPF_CGROUP_DEVICE
        )
        self._call(BPF_PROG_DETACH, "PROG_DETACH", attr)


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
            resource.setrlimit(resource.RLIMIT_MEMLOCK, self._old)
            self._old = None


def is_missing_replace(err: BpfError) -> bool:
    """Whether an attach with BPF_F_REPLACE failed because the kernel predates it (< 5.6)."""
    return err.errno == errno.EINVAL

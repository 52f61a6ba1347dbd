"""capctl.cgroup.libc's buffers, and bpf(2)'s attribute blocks: each ``_struct`` format of :mod:`capctl.cgroup.bpf` has the
size and field offsets of the C struct (include/uapi/linux/bpf.h), written as ctypes
Structures with the compiler's alignment rules, as the module had them before."""

from __future__ import annotations

import ctypes
import struct

import pytest

from capctl.cgroup import bpf, libc

u32, u64 = ctypes.c_uint32, ctypes.c_uint64


class ProgLoadAttr(ctypes.Structure):
    _fields_ = (
        ("prog_type", u32), ("insn_cnt", u32), ("insns", u64), ("license", u64),
        ("log_level", u32), ("log_size", u32), ("log_buf", u64), ("kern_version", u32),
        ("prog_flags", u32), ("prog_name", ctypes.c_char * 16), ("prog_ifindex", u32),
        ("expected_attach_type", u32),
    )  # fmt: skip


class AttachAttr(ctypes.Structure):
    _fields_ = (("target_fd", u32), ("attach_bpf_fd", u32), ("attach_type", u32),
                ("attach_flags", u32), ("replace_bpf_fd", u32))  # fmt: skip


class GetFdByIdAttr(ctypes.Structure):
    _fields_ = (("prog_id", u32), ("next_id", u32), ("open_flags", u32))


class InfoAttr(ctypes.Structure):
    _fields_ = (("bpf_fd", u32), ("info_len", u32), ("info", u64))


class QueryAttr(ctypes.Structure):
    _fields_ = (("target_fd", u32), ("attach_type", u32), ("query_flags", u32),
                ("attach_flags", u32), ("prog_ids", u64), ("prog_cnt", u32))  # fmt: skip


class ProgInfo(ctypes.Structure):
    _fields_ = (
        ("type", u32), ("id", u32), ("tag", ctypes.c_char * 8), ("jited_prog_len", u32),
        ("xlated_prog_len", u32), ("jited_prog_insns", u64), ("xlated_prog_insns", u64),
        ("load_time", u64), ("created_by_uid", u32), ("nr_map_ids", u32), ("map_ids", u64),
        ("name", ctypes.c_char * 16),
    )  # fmt: skip


@pytest.mark.parametrize(("fmt", "cstruct"), [
    (bpf.PROG_LOAD_ATTR, ProgLoadAttr), (bpf.ATTACH_ATTR, AttachAttr),
    (bpf.GET_FD_BY_ID_ATTR, GetFdByIdAttr), (bpf.INFO_ATTR, InfoAttr),
    (bpf.QUERY_ATTR, QueryAttr), (bpf.PROG_INFO, ProgInfo),
])  # fmt: skip
def test_formats_lay_out_the_c_structs(fmt: str, cstruct: type[ctypes.Structure]) -> None:
    assert struct.calcsize(fmt) == ctypes.sizeof(cstruct)
    # Distinct values for every field, packed by the format, read back by the Structure.
    values: list[int | bytes] = []
    for i, (name, ctype, *_) in enumerate(cstruct._fields_):
        if issubclass(ctype, ctypes.Array):  # char[n]
            values.append(f"{name[:5]}{i}".encode())
        else:
            values.append(0x01020304 + i if ctypes.sizeof(ctype) == 4 else 0x0102030405060708 + i)
    c = cstruct.from_buffer_copy(struct.pack(fmt, *values))
    for (name, *_), value in zip(cstruct._fields_, values, strict=True):
        assert getattr(c, name) == value, name


def test_buffers_are_c_char_arrays() -> None:
    for mine, theirs in ((libc.Char, ctypes.c_char), (libc.Long, ctypes.c_long),
                         (libc.VoidP, ctypes.c_void_p), (libc.Int, ctypes.c_int)):
        assert ctypes.sizeof(mine) == ctypes.sizeof(theirs)
        assert mine._type_ == theirs._type_
    buf = libc.packed(bpf.ATTACH_ATTR, 1, 2, 3, 4, 5)
    assert len(buf) >= ctypes.sizeof(AttachAttr) and ctypes.addressof(buf)
    assert AttachAttr.from_buffer_copy(buf.raw[:ctypes.sizeof(AttachAttr)]).replace_bpf_fd == 5
    assert not buf.raw[ctypes.sizeof(AttachAttr):].strip(b"\0")  # zeros after the block
    text = libc.buffer(8)
    text.raw = b"ab\0cd\0\0\0"
    assert text.value == b"ab"  # up to the NUL, as a verifier log is read


def test_buffers_come_in_few_lengths() -> None:
    """Each buffer length is an array type ctypes makes once per process (about 60 µs): the
    lengths are powers of two, so a grant's dozen sizes make two or three types."""
    lengths = {len(libc.buffer(n)) for n in (1, 12, 16, 20, 28, 72, 112, 256, 257, 4000)}
    assert lengths == {libc.MIN_BUFFER, 512, 4096}
    assert all(len(libc.buffer(n)) >= n for n in (1, 255, 256, 257, 1 << 20))

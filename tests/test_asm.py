"""The eBPF assembler and the device filter generator (pure): golden listings."""

from __future__ import annotations

import pytest

from capctl.cgroup import asm, devfilter
from capctl.edits.rules import DENY_ALL, Access, DeviceRule, DeviceType, char
from capctl.errors import CgroupError

MANY = [
    char(238, 5, "r"),
    char(195, None, "rw"),
    DeviceRule(DeviceType.BLOCK, 8, 0, Access("rwm")),
    char(238, 1, "r"),
    char(238, 1, "w"),  # merged with the one above: one block, rw
]
SPEC = [
    DENY_ALL,
    char(195, None, "rw"),
    DeviceRule(DeviceType.CHAR, None, None, Access("m")),
    char(1, 3, "rwm"),
]

EMPTY_FILTER = """\
  0: r2 = *(u32 *)(r1 +0)
  1: w2 &= 0xffff
  2: r3 = *(u32 *)(r1 +0)
  3: w3 >>= 16
  4: r4 = *(u32 *)(r1 +4)
  5: r5 = *(u32 *)(r1 +8)
  6: r0 = 0
  7: exit
"""

ONE_RULE_PREFIX = """\
  0: r0 = 1667330147
  1: r0 = 16
  2: r2 = *(u32 *)(r1 +0)
  3: w2 &= 0xffff
  4: r3 = *(u32 *)(r1 +0)
  5: w3 >>= 16
  6: r4 = *(u32 *)(r1 +4)
  7: r5 = *(u32 *)(r1 +8)
  8: if r2 != 0x2 goto pc+7
  9: w6 = w3
 10: w6 &= 0xfffd
 11: if r6 != 0x0 goto pc+4
 12: if r4 != 0xee goto pc+3
 13: if r5 != 0x1 goto pc+2
 14: r0 = 1
 15: exit
"""

MANY_RULES_PREFIX = """\
  0: r0 = 1667330147
  1: r0 = 36
  2: r2 = *(u32 *)(r1 +0)
  3: w2 &= 0xffff
  4: r3 = *(u32 *)(r1 +0)
  5: w3 >>= 16
  6: r4 = *(u32 *)(r1 +4)
  7: r5 = *(u32 *)(r1 +8)
  8: if r2 != 0x1 goto pc+4
  9: if r4 != 0x8 goto pc+3
 10: if r5 != 0x0 goto pc+2
 11: r0 = 1
 12: exit
 13: if r2 != 0x2 goto pc+6
 14: w6 = w3
 15: w6 &= 0xfff9
 16: if r6 != 0x0 goto pc+3
 17: if r4 != 0xc3 goto pc+2
 18: r0 = 1
 19: exit
 20: if r2 != 0x2 goto pc+7
 21: w6 = w3
 22: w6 &= 0xfff9
 23: if r6 != 0x0 goto pc+4
 24: if r4 != 0xee goto pc+3
 25: if r5 != 0x1 goto pc+2
 26: r0 = 1
 27: exit
 28: if r2 != 0x2 goto pc+7
 29: w6 = w3
 30: w6 &= 0xfffd
 31: if r6 != 0x0 goto pc+4
 32: if r4 != 0xee goto pc+3
 33: if r5 != 0x5 goto pc+2
 34: r0 = 1
 35: exit
"""

SPEC_FILTER = """\
  0: r2 = *(u32 *)(r1 +0)
  1: w2 &= 0xffff
  2: r3 = *(u32 *)(r1 +0)
  3: w3 >>= 16
  4: r4 = *(u32 *)(r1 +4)
  5: r5 = *(u32 *)(r1 +8)
  6: if r2 != 0x2 goto pc+5
  7: w6 = w3
  8: w6 &= 0xfffe
  9: if r6 != 0x0 goto pc+2
 10: r0 = 1
 11: exit
 12: if r2 != 0x2 goto pc+4
 13: if r4 != 0x1 goto pc+3
 14: if r5 != 0x3 goto pc+2
 15: r0 = 1
 16: exit
 17: if r2 != 0x2 goto pc+6
 18: w6 = w3
 19: w6 &= 0xfff9
 20: if r6 != 0x0 goto pc+3
 21: if r4 != 0xc3 goto pc+2
 22: r0 = 1
 23: exit
 24: r0 = 0
 25: exit
"""


def test_no_rules_no_prefix() -> None:
    assert devfilter.prefix([]) == []
    original = devfilter.full_filter([])
    assert devfilter.build([], original) == original


def test_golden_empty_filter() -> None:
    assert asm.listing(devfilter.full_filter([])) == EMPTY_FILTER


def test_golden_one_rule_prefix() -> None:
    assert asm.listing(devfilter.prefix([char(238, 1, "r")])) == ONE_RULE_PREFIX


def test_golden_many_rules_prefix() -> None:
    assert asm.listing(devfilter.prefix(MANY)) == MANY_RULES_PREFIX


def test_golden_spec_filter() -> None:
    assert asm.listing(devfilter.full_filter(SPEC)) == SPEC_FILTER


def test_prefix_never_writes_r1_or_r10() -> None:
    for insn in devfilter.prefix(MANY):
        writes = insn.cls in (asm.ALU, asm.ALU64, asm.LDX)
        assert not (writes and insn.dst in (asm.R1, asm.R10)), insn


def test_prefix_jumps_stay_inside_and_fall_through() -> None:
    insns = devfilter.prefix(MANY)
    for pc, insn in enumerate(insns):
        if insn.cls == asm.JMP and insn.op == asm.JNE:
            assert 0 < pc + 1 + insn.off <= len(insns)  # == len: the original's first insn


@pytest.mark.parametrize("rules", [[char(238, 1, "r")], MANY], ids=["one", "many"])
def test_split_round_trip(rules: list[DeviceRule]) -> None:
    original = devfilter.full_filter(SPEC)
    program = devfilter.build(rules, original)
    got, base = devfilter.split(program)
    assert got == devfilter.canonical(rules) and base == original


def test_regrant_is_idempotent() -> None:
    original = devfilter.full_filter(SPEC)
    once = devfilter.build(MANY, original)
    old, base = devfilter.split(once)
    twice = devfilter.build(devfilter.canonical([*old, *MANY]), base)
    assert twice == once


def test_split_without_marker_is_all_original() -> None:
    original = devfilter.full_filter(SPEC)
    assert devfilter.split(original) == ([], original)


def test_split_refuses_a_tampered_prefix() -> None:
    program = devfilter.build(MANY, devfilter.full_filter([]))
    program[12] = asm.jmp_imm(asm.JNE, asm.R4, 999, program[12].off)
    with pytest.raises(CgroupError):
        devfilter.split(program)


def test_canonical_refuses_deny_and_all() -> None:
    with pytest.raises(CgroupError):
        devfilter.canonical([char(1, 3, "r", False)])
    with pytest.raises(CgroupError):
        devfilter.canonical([DeviceRule(DeviceType.ALL, None, None, Access("rwm"))])


def test_encode_decode_round_trip() -> None:
    insns = devfilter.build(MANY, devfilter.full_filter(SPEC))
    data = asm.encode(insns)
    assert len(data) == 8 * len(insns)
    assert asm.decode(data) == insns
    with pytest.raises(ValueError):
        asm.decode(data[:-1])


def test_encoding_matches_the_kernel_layout() -> None:
    # r2 = *(u32 *)(r1 + 4): code 0x61, dst 2 (low nibble), src 1 (high nibble), off 4
    assert asm.ldx_w(asm.R2, asm.R1, 4).encode() == bytes([0x61, 0x12, 4, 0, 0, 0, 0, 0])
    assert asm.exit_().encode() == bytes([0x95, 0, 0, 0, 0, 0, 0, 0])


REUSE_CASES = [
    ("generated", devfilter.full_filter(SPEC), None),
    ("empty", [], "no instructions"),
    ("zeroed", [asm.Insn(0)] * 4, "unsupported opcode"),
    ("blinded", [asm.Insn(asm.ALU64 | asm.MOV | asm.K, 11, 0, 0, 7), asm.exit_()], "r11"),
    ("helper-call", [asm.Insn(asm.JMP | asm.CALL, 0, 0, 0, 14), asm.exit_()], "call"),
    (
        "map-reference",
        [asm.Insn(asm.LD | asm.DW | asm.IMM, 1, 1, 0, 0), asm.Insn(0), asm.exit_()],
        "opcode",
    ),
    ("no-exit", devfilter.full_filter([])[:-1], "exit"),
]


@pytest.mark.parametrize(
    ("insns", "why"), [c[1:] for c in REUSE_CASES], ids=[c[0] for c in REUSE_CASES]
)
def test_reusable(insns: list[asm.Insn], why: str | None) -> None:
    got = asm.reusable(insns)
    if why is None:
        assert got is None
    else:
        assert got is not None and why in got


def test_listing_of_unknown_opcode_is_raw() -> None:
    assert "code 0xff" in asm.disasm(asm.Insn(0xFF))

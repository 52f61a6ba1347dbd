"""A tiny eBPF assembler: the few instructions a device filter needs, encoding and listing.

Pure.  Instruction encoding per the kernel's ``include/uapi/linux/bpf.h`` (``struct bpf_insn``:
u8 code, 4-bit dst_reg, 4-bit src_reg, s16 off, s32 imm) and ``bpf_common.h`` (opcodes).
The listing syntax imitates ``bpftool prog dump xlated`` so golden tests read like the kernel's.
"""

from __future__ import annotations

import sys
from _struct import iter_unpack, pack  # struct's C module (struct.py only re-exports it)

from capctl._lite.record import Record
from capctl._lite.record import set_field as _set

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

# Instruction classes (bpf_common.h, bpf.h)
LD, LDX, ST, STX, ALU, JMP, JMP32, ALU64 = range(8)
# Sizes and modes
W, H, B, DW = 0x00, 0x08, 0x10, 0x18
IMM, MEM, ATOMIC = 0x00, 0x60, 0xC0
# Source operand
K, X = 0x00, 0x08
# ALU operations
ADD, SUB, MUL, DIV, OR, AND, LSH, RSH = 0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70
NEG, MOD, XOR, MOV, ARSH, END = 0x80, 0x90, 0xA0, 0xB0, 0xC0, 0xD0
# Jump operations
JA, JEQ, JGT, JGE, JSET, JNE, JSGT, JSGE = 0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70
CALL, EXIT, JLT, JLE, JSLT, JSLE = 0x80, 0x90, 0xA0, 0xB0, 0xC0, 0xD0

R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10 = range(11)
INSN_SIZE = 8

_ALU_SYMBOL = {
    ADD: "+=", SUB: "-=", MUL: "*=", DIV: "/=", OR: "|=", AND: "&=", LSH: "<<=", RSH: ">>=",
    MOD: "%=", XOR: "^=", MOV: "=", ARSH: "s>>=",
}  # fmt: skip
_JMP_SYMBOL = {
    JEQ: "==", JGT: ">", JGE: ">=", JSET: "&", JNE: "!=", JSGT: "s>", JSGE: "s>=",
    JLT: "<", JLE: "<=", JSLT: "s<", JSLE: "s<=",
}  # fmt: skip
_SIZE_NAME = {W: "u32", H: "u16", B: "u8", DW: "u64"}

# Byte order of the dst/src nibbles follows the C bitfield layout of the host.
_LITTLE = sys.byteorder == "little"


class Insn(Record):
    """One 8-byte eBPF instruction."""

    code: int
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0

    def __init__(self, code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0):
        # Programs run to thousands of instructions: set the fields directly (fastest).
        _set(self, "code", code)
        _set(self, "dst", dst)
        _set(self, "src", src)
        _set(self, "off", off)
        _set(self, "imm", imm)

    @property
    def cls(self) -> int:
        return self.code & 0x07

    @property
    def op(self) -> int:
        return self.code & 0xF0

    def encode(self) -> bytes:
        regs = (self.src << 4 | self.dst) if _LITTLE else (self.dst << 4 | self.src)
        return pack("=BBhi", self.code, regs, self.off, self.imm)

    def __str__(self) -> str:
        return disasm(self)


def encode(insns: Iterable[Insn]) -> bytes:
    return b"".join(i.encode() for i in insns)


def decode(data: bytes) -> list[Insn]:
    """Split raw instructions (e.g. a program's xlated image) into :class:`Insn`."""
    if len(data) % INSN_SIZE:
        raise ValueError(f"instruction image of {len(data)} bytes is not a multiple of 8")
    out = []
    for code, regs, off, imm in iter_unpack("=BBhi", data):
        hi, lo = regs >> 4, regs & 0x0F
        dst, src = (lo, hi) if _LITTLE else (hi, lo)
        out.append(Insn(code, dst, src, off, imm))
    return out


# --- builders --------------------------------------------------------------------------------


def mov64_imm(dst: int, imm: int) -> Insn:
    return Insn(ALU64 | MOV | K, dst, 0, 0, imm)


def mov32_reg(dst: int, src: int) -> Insn:
    return Insn(ALU | MOV | X, dst, src)


def alu32_imm(op: int, dst: int, imm: int) -> Insn:
    return Insn(ALU | op | K, dst, 0, 0, imm)


def ldx_w(dst: int, src: int, off: int) -> Insn:
    """``dst = *(u32 *)(src + off)``."""
    return Insn(LDX | MEM | W, dst, src, off)


def jmp_imm(op: int, dst: int, imm: int, off: int) -> Insn:
    """``if dst <op> imm goto pc+off`` (64-bit compare; kernels >= 4.x)."""
    return Insn(JMP | op | K, dst, 0, off, imm)


def exit_() -> Insn:
    return Insn(JMP | EXIT)


# --- listing ---------------------------------------------------------------------------------


def _reg(n: int, wide: bool) -> str:
    return f"{'r' if wide else 'w'}{n}"


def disasm(insn: Insn) -> str:
    """One instruction in bpftool's C-like syntax (unknown encodings as raw fields)."""
    cls, op, src_x = insn.cls, insn.op, insn.code & X
    if cls in (ALU, ALU64) and op in _ALU_SYMBOL:
        wide = cls == ALU64
        if src_x:
            rhs = _reg(insn.src, wide)
        else:  # masks read better in hex, like the kernel's own listings of them
            rhs = f"{insn.imm:#x}" if op in (AND, OR, XOR) else str(insn.imm)
        return f"{_reg(insn.dst, wide)} {_ALU_SYMBOL[op]} {rhs}"
    if cls in (ALU, ALU64) and op == NEG:
        return f"{_reg(insn.dst, cls == ALU64)} = -{_reg(insn.dst, cls == ALU64)}"
    if cls == LDX and insn.code & 0xE0 == MEM:
        size = _SIZE_NAME[insn.code & 0x18]
        return f"r{insn.dst} = *({size} *)(r{insn.src} {insn.off:+d})"
    if cls in (ST, STX) and insn.code & 0xE0 == MEM:
        size = _SIZE_NAME[insn.code & 0x18]
        rhs = f"r{insn.src}" if cls == STX else str(insn.imm)
        return f"*({size} *)(r{insn.dst} {insn.off:+d}) = {rhs}"
    if cls in (JMP, JMP32):
        if op == EXIT:
            return "exit"
        if op == JA:
            return f"goto pc{insn.off:+d}"
        if op == CALL:
            return f"call {insn.imm}"
        if op in _JMP_SYMBOL:
            wide = cls == JMP
            rhs = _reg(insn.src, wide) if src_x else f"{insn.imm:#x}"
            return f"if {_reg(insn.dst, wide)} {_JMP_SYMBOL[op]} {rhs} goto pc{insn.off:+d}"
    if insn.code == LD | DW | IMM:
        return f"r{insn.dst} = {insn.imm:#x} ll (src {insn.src})"
    return f"(code {insn.code:#04x} dst {insn.dst} src {insn.src} off {insn.off} imm {insn.imm})"


def listing(insns: Sequence[Insn]) -> str:
    """Numbered listing, one instruction per line (the golden-test format)."""
    return "".join(f"{i:3d}: {insn}\n" for i, insn in enumerate(insns))


# --- reuse of a loaded program -----------------------------------------------------------------


def reusable(insns: Sequence[Insn]) -> str | None:
    """Why *insns* (a program's xlated image) cannot be loaded again as is, or None if it can.

    Only self-contained code is accepted: ALU, jumps other than calls, and memory access
    through registers, plus plain 64-bit immediates.  Anything the kernel rewrites on the
    way to the xlated image refuses: helper calls (imm rewritten relative to
    ``__bpf_call_base``), map references (``ld_imm64`` with a pseudo source, sanitised when
    ``kptr_restrict`` applies), constant blinding (``net.core.bpf_jit_harden``: uses the
    hidden register AX = r11), and an all-zero image (``bpf_prog_info`` withheld).
    """
    if not insns:
        return "no instructions"
    skip = False
    for i, insn in enumerate(insns):
        if skip:
            skip = False
            if insn.code or insn.dst or insn.src or insn.off:
                return f"insn {i}: malformed second half of ld_imm64"
            continue
        if insn.dst > R10 or insn.src > R10:
            return f"insn {i}: register r{max(insn.dst, insn.src)} (constant blinding?)"
        cls, mode = insn.cls, insn.code & 0xE0
        if cls in (ALU, ALU64):
            continue
        if cls in (JMP, JMP32):
            if insn.op == CALL:
                return f"insn {i}: helper or function call"
            if insn.op in (JA, EXIT) or insn.op in _JMP_SYMBOL:
                continue
            return f"insn {i}: unknown jump {insn.code:#04x}"
        if cls in (LDX, ST, STX) and mode == MEM:
            continue
        if insn.code == LD | DW | IMM and insn.src == 0 and i + 1 < len(insns):
            skip = True
            continue
        return f"insn {i}: unsupported opcode {insn.code:#04x}"
    last = insns[-1]
    if not (last.cls in (JMP, JMP32) and last.op in (EXIT, JA)):
        return "program does not end in exit"
    return None

"""Generate ``BPF_PROG_TYPE_CGROUP_DEVICE`` programs from device rules.  Pure.

Two shapes:

* :func:`full_filter` -- a whole filter from a runtime's rule list (default deny), in the
  spirit of runc's ``devices/devicefilter.go``.  Used when a container's own program cannot
  be read back and must be rebuilt from its OCI spec.
* :func:`build` -- capctl's *prefix* of allow blocks in front of an existing program (the
  runtime's).  A matching block returns 1 (allow); everything else falls through to the
  original instructions, appended unchanged, so their relative jumps stay valid.  The prefix
  never writes r1 (the context pointer the original reads) and uses only r0, r2..r6: at
  program entry the verifier lets a program read nothing but r1 and r10, so the original
  cannot depend on any other register we clobber.

The prefix is also capctl's record of what it granted: it starts with a marker
(``r0 = 0x63617063`` "capc", then ``r0 = <prefix length>``), and :func:`split` parses the
blocks back into rules and re-generates them to check the parse is exact.  Re-granting the
same rules therefore rebuilds the same program (idempotent, no growth).

The program's context is ``struct bpf_cgroup_dev_ctx`` (include/uapi/linux/bpf.h):
``u32 access_type`` (``BPF_DEVCG_ACC_* << 16 | BPF_DEVCG_DEV_*``), ``u32 major``, ``u32 minor``.
"""

from __future__ import annotations

from capctl.cgroup.asm import (
    AND,
    JMP,
    JNE,
    R0,
    R1,
    R2,
    R3,
    R4,
    R5,
    R6,
    RSH,
    Insn,
    alu32_imm,
    exit_,
    jmp_imm,
    ldx_w,
    mov32_reg,
    mov64_imm,
)
from capctl.edits.rules import Access, DeviceRule, DeviceType
from capctl.errors import CgroupError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

# include/uapi/linux/bpf.h: enum bpf_devcg_... values.
DEVCG_DEV_BLOCK, DEVCG_DEV_CHAR = 1, 2
DEVCG_ACC_MKNOD, DEVCG_ACC_READ, DEVCG_ACC_WRITE = 1, 2, 4
_TYPE_CODE = {DeviceType.BLOCK: DEVCG_DEV_BLOCK, DeviceType.CHAR: DEVCG_DEV_CHAR}
_ACC_BITS = {"m": DEVCG_ACC_MKNOD, "r": DEVCG_ACC_READ, "w": DEVCG_ACC_WRITE}

MARKER = 0x63617063  # "capc"
HEADER_LEN = 2

# Registers after the prelude: r2 device type, r3 access, r4 major, r5 minor; r6 scratch.
PRELUDE: tuple[Insn, ...] = (
    ldx_w(R2, R1, 0),
    alu32_imm(AND, R2, 0xFFFF),
    ldx_w(R3, R1, 0),
    alu32_imm(RSH, R3, 16),
    ldx_w(R4, R1, 4),
    ldx_w(R5, R1, 8),
)


def _is_jne(insn: Insn) -> bool:
    # Compare the class too: ALU AND and JMP JNE share the op value 0x50.
    return insn.cls == JMP and insn.op == JNE


def access_bits(access: Access) -> int:
    return sum(_ACC_BITS[c] for c in access)


def _block(rule: DeviceRule, verdict: int) -> list[Insn]:
    """Instructions for one rule; every ``off`` is relative to the end of the block."""
    # (jump template, argument) pairs; offsets are patched once the block length is known.
    conds: list[Insn] = []
    if rule.type is not DeviceType.ALL:
        conds.append(jmp_imm(JNE, R2, _TYPE_CODE[rule.type], 0))
    if not rule.access.is_full:
        # Requested access must be a subset: (access & ~allowed) == 0.  Unknown future
        # bits are outside the mask too, so they are denied (fail closed).
        conds += [
            mov32_reg(R6, R3),
            alu32_imm(AND, R6, 0xFFFF & ~access_bits(rule.access)),
            jmp_imm(JNE, R6, 0, 0),
        ]
    if rule.major is not None:
        conds.append(jmp_imm(JNE, R4, rule.major, 0))
    if rule.minor is not None:
        conds.append(jmp_imm(JNE, R5, rule.minor, 0))
    body = [mov64_imm(R0, verdict), exit_()]
    n = len(conds) + len(body)
    out = []
    for i, insn in enumerate(conds):
        if _is_jne(insn):
            insn = Insn(insn.code, insn.dst, insn.src, n - i - 1, insn.imm)
        out.append(insn)
    return out + body


def _sort_key(rule: DeviceRule) -> tuple[str, int, int, str]:
    return (
        rule.type.value,
        -1 if rule.major is None else rule.major,
        -1 if rule.minor is None else rule.minor,
        str(rule.access),
    )


def canonical(rules: Iterable[DeviceRule]) -> list[DeviceRule]:
    """Merge allow rules by (type, major, minor), sorted: the order the prefix stores them."""
    merged: dict[tuple[DeviceType, int | None, int | None], Access] = {}
    for rule in rules:
        if not rule.allow:
            raise CgroupError(f"capctl only adds allow rules, not '{rule}'")
        if rule.type is DeviceType.ALL:
            raise CgroupError(f"refusing to grant access to all devices: '{rule}'")
        merged[rule.key] = merged.get(rule.key, Access()) | rule.access
    return sorted(
        (DeviceRule(t, ma, mi, acc, True) for (t, ma, mi), acc in merged.items()), key=_sort_key
    )


def prefix(rules: Iterable[DeviceRule]) -> list[Insn]:
    """capctl's allow prefix for *rules* (empty for no rules)."""
    blocks: list[Insn] = []
    for rule in canonical(rules):
        blocks += _block(rule, 1)
    if not blocks:
        return []
    n = HEADER_LEN + len(PRELUDE) + len(blocks)
    return [mov64_imm(R0, MARKER), mov64_imm(R0, n), *PRELUDE, *blocks]


def build(rules: Iterable[DeviceRule], original: Sequence[Insn]) -> list[Insn]:
    """Our prefix for *rules* followed by *original* (a program without our prefix)."""
    if not original:
        raise CgroupError("cannot extend an empty program")
    return [*prefix(rules), *original]


def split(insns: Sequence[Insn]) -> tuple[list[DeviceRule], list[Insn]]:
    """Split a program into (rules capctl granted in its prefix, the original program).

    A program without our marker is all original.  A marker whose prefix does not parse
    back exactly raises :class:`CgroupError` (someone else's program, or corruption).
    """
    if len(insns) < HEADER_LEN or insns[0] != mov64_imm(R0, MARKER):
        return [], list(insns)
    head = insns[1]
    if head.code != mov64_imm(R0, 0).code or head.dst != R0 or not 0 < head.imm <= len(insns):
        raise CgroupError("capctl marker without a valid prefix length")
    n = head.imm
    body = insns[HEADER_LEN + len(PRELUDE) : n]
    rules = _parse_blocks(body)
    if prefix(rules) != list(insns[:n]):
        raise CgroupError("capctl prefix does not match what capctl generates")
    return rules, list(insns[n:])


def _parse_blocks(body: Sequence[Insn]) -> list[DeviceRule]:
    rules = []
    i = 0
    while i < len(body):
        dtype, major, minor, access = DeviceType.ALL, None, None, Access("rwm")
        while i < len(body) and body[i] != mov64_imm(R0, 1):
            insn = body[i]
            if _is_jne(insn) and insn.dst == R2:
                codes = {v: k for k, v in _TYPE_CODE.items()}
                if insn.imm not in codes:
                    raise CgroupError(f"capctl prefix: unknown device type {insn.imm}")
                dtype = codes[insn.imm]
            elif insn == mov32_reg(R6, R3) and i + 1 < len(body):
                mask = body[i + 1].imm
                access = Access(c for c, bit in _ACC_BITS.items() if not mask & bit)
                i += 2
            elif _is_jne(insn) and insn.dst == R4:
                major = insn.imm
            elif _is_jne(insn) and insn.dst == R5:
                minor = insn.imm
            else:
                raise CgroupError(f"capctl prefix: unexpected instruction '{insn}'")
            i += 1
        i += 2  # r0 = 1; exit
        try:
            rules.append(DeviceRule(dtype, major, minor, access, True))
        except ValueError as err:
            raise CgroupError(f"capctl prefix: {err}") from err
    return rules


def full_filter(rules: Sequence[DeviceRule]) -> list[Insn]:
    """A complete filter for a runtime's rule list, default deny (as runc's DeviceFilter).

    The rules go through the v1 emulator first, starting from deny-all, so the result means
    what the same rules would on cgroup v1 and refuses the same misconfigurations.
    """
    # Imported here: only a program that cannot be read back is rebuilt (the hook's grant
    # path extends the runtime's program and never needs the emulator).
    from capctl.cgroup.emulator import Emulator

    emu = Emulator.from_rules(rules, default_allow=False)
    verdict = 0 if emu.default_allow else 1
    out = list(PRELUDE)
    for rule in sorted(emu.rules(), key=_sort_key):
        out += _block(rule, verdict)
    return [*out, mov64_imm(R0, 1 if emu.default_allow else 0), exit_()]

"""cgroup v2 backend: extend the container's own eBPF device filter.

A runtime such as runc attaches a ``BPF_PROG_TYPE_CGROUP_DEVICE`` program to the container's
cgroup with ``BPF_F_ALLOW_MULTI``.  The kernel runs *every* program in force and allows an
access only if all of them do, so a second "allow" program would change nothing.  capctl
therefore replaces each program attached to the cgroup by *our allow prefix + the program's
own instructions* (see :mod:`capctl.cgroup.devfilter`), atomically with ``BPF_F_REPLACE``.

Decisions, written down:

* **No program attached, none inherited**: every device is allowed already (a privileged
  container); grant is a no-op.  Programs only on ancestors: capctl does not touch ancestors
  (they govern other cgroups too) and cannot extend what is not there: CgroupError.
* **Several programs attached**: each must allow, so each is extended with the same prefix.
* **Ancestor programs in force too** (``BPF_F_QUERY_EFFECTIVE``): logged as a warning; they
  may still deny, capctl cannot change that.
* **Program not readable** (no or zeroed translated image, blinded constants, helper calls;
  see :func:`capctl.cgroup.asm.reusable`): with exactly one program and the container's
  rules (*spec_rules*, e.g. from :func:`capctl.request.oci.oci_device_rules`), the filter is rebuilt
  from those rules, default deny, and the fact is logged; otherwise CgroupError (fail closed).
  The defaults in those rules are the ones every OCI runtime gives (docs/runtimes.md).
  capctl's earlier grants cannot be read back then either: only this call's rules are kept.
* **Idempotent**: the prefix is parsed back and regenerated; the same grant gives the same
  instructions, and an unchanged program is not reloaded.
* **Kernels without BPF_F_REPLACE** (< 5.6): attach the new program, then detach the old
  one; the window is safe (the new program allows a superset), but needs a free slot out of
  the kernel's 64 per cgroup.
"""

from __future__ import annotations

import errno
import os

from capctl._lite.strpath import normalized
from capctl.cgroup import DeviceCgroup, asm, devfilter
from capctl.cgroup.bpf import (
    BPF_F_ALLOW_MULTI,
    BPF_F_REPLACE,
    MAX_PROGS,
    Attached,
    Bpf,
    BpfError,
    is_missing_replace,
)
from capctl.cgroup.discovery import CGROUP2_SUPER_MAGIC, check_not_root, fs_magic
from capctl.cgroup.undo import ERROR, INFO, WARNING, Undo, log
from capctl.edits.rules import ALLOW_ALL, Access, DeviceRule
from capctl.errors import CgroupError, translate

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from _typeshed import StrPath

PROG_NAME = "capctl_devices"


class _Prog:
    __slots__ = ("fd", "id", "insns", "unreadable")

    def __init__(self, id: int, fd: int, insns: list[asm.Insn], unreadable: str | None):
        self.id = id
        self.fd = fd
        self.insns = insns
        self.unreadable = unreadable  # why the image cannot be reused


class _State:
    __slots__ = ("attached", "cgroup_fd", "effective", "progs")

    def __init__(self, cgroup_fd: int, attached: Attached, effective: Attached):
        self.cgroup_fd = cgroup_fd
        self.attached = attached
        self.effective = effective
        self.progs: list[_Prog] = []

    def close(self) -> None:
        for p in self.progs:
            os.close(p.fd)
        os.close(self.cgroup_fd)


class V2Devices(DeviceCgroup):
    """The device programs of one (non-root) cgroup2 cgroup."""

    def __init__(
        self, path: StrPath, *, bpf: Bpf | None = None, magic: Callable[[str], int] = fs_magic
    ):
        path = normalized(path)
        check_not_root(path)
        if magic(path) != CGROUP2_SUPER_MAGIC:
            raise CgroupError(f"{path}: not on a cgroup2 file system")
        self.path = path
        self.bpf = bpf if bpf is not None else Bpf()

    def __repr__(self) -> str:
        return f"V2Devices({str(self.path)!r})"

    # --- reading -------------------------------------------------------------------------

    def _open_state(self, *, read_progs: bool) -> _State:
        with translate(CgroupError, self.path, "cannot open"):
            cgfd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        state = _State(cgfd, Attached((), 0), Attached((), 0))
        try:
            state.attached = self.bpf.prog_query(cgfd)
            state.effective = self.bpf.prog_query(cgfd, effective=True)
            if read_progs:
                for prog_id in state.attached.ids:
                    pfd = self.bpf.prog_get_fd_by_id(prog_id)
                    state.progs.append(_Prog(prog_id, pfd, [], None))
                    state.progs[-1].insns, state.progs[-1].unreadable = self._read(pfd)
        except CgroupError as err:
            state.close()
            raise CgroupError(f"{self.path}: {err}") from err
        return state

    def _read(self, prog_fd: int) -> tuple[list[asm.Insn], str | None]:
        data = self.bpf.prog_info(prog_fd).xlated
        if not data.strip(b"\0"):
            return [], "the kernel withholds its instructions (empty or zeroed image)"
        try:
            insns = asm.decode(data)
        except ValueError as err:
            return [], str(err)
        return insns, asm.reusable(insns)

    def allows_all(self) -> bool:
        """No device program in force at all: every device is allowed (privileged)."""
        state = self._open_state(read_progs=False)
        state.close()
        return not state.effective.ids

    def program_ids(self) -> tuple[int, ...]:
        """IDs of the device programs attached to this cgroup itself."""
        state = self._open_state(read_progs=False)
        state.close()
        return state.attached.ids

    def programs(self) -> list[list[asm.Insn]]:
        """The translated instructions of each attached program (empty where withheld)."""
        state = self._open_state(read_progs=True)
        state.close()
        return [p.insns for p in state.progs]

    def allowed(self) -> list[DeviceRule]:
        """``[a *:* rwm]`` if nothing is in force, else the rules *capctl* granted here.

        The runtime's own rules live in its program, which capctl does not interpret.
        """
        state = self._open_state(read_progs=True)
        state.close()
        if not state.effective.ids:
            return [ALLOW_ALL]
        if not state.progs:
            raise CgroupError(f"{self.path}: only ancestor cgroups have device programs")
        first = state.progs[0]
        if first.unreadable:
            raise CgroupError(
                f"{self.path}: cannot read device program {first.id}: {first.unreadable}"
            )
        return devfilter.split(first.insns)[0]

    # --- changing ------------------------------------------------------------------------

    def grant(
        self, rules: Iterable[DeviceRule], *, spec_rules: Sequence[DeviceRule] | None = None
    ) -> Undo:
        """Allow *rules* in addition to what the container's filter allows.

        *spec_rules*: the container's full rule list (OCI spec + runtime defaults), used only
        when the existing program cannot be read back.  Returns an :class:`Undo`.
        """
        add = devfilter.canonical(rules)
        what = f"grant {', '.join(r.line() for r in add)} on {self.path}"
        return self._update(what, lambda old: devfilter.canonical([*old, *add]), spec_rules)

    def revoke(
        self, rules: Iterable[DeviceRule], *, spec_rules: Sequence[DeviceRule] | None = None
    ) -> Undo:
        """Take away access capctl granted here (its prefix); the runtime's rules stay.

        Revoking what capctl did not grant raises CgroupError (it would not take effect).
        """
        drop = devfilter.canonical(rules)
        what = f"revoke {', '.join(r.line() for r in drop)} on {self.path}"

        def remove(old: list[DeviceRule]) -> list[DeviceRule]:
            have = {r.key: r.access for r in old}
            for rule in drop:
                if not rule.access <= have.get(rule.key, Access()):
                    raise CgroupError(
                        f"{self.path}: revoking '{rule.line()}' would not take effect:"
                        " capctl did not grant it here"
                    )
                have[rule.key] = have[rule.key] - rule.access
            return devfilter.canonical(
                DeviceRule(t, ma, mi, acc, True) for (t, ma, mi), acc in have.items() if acc
            )

        return self._update(what, remove, spec_rules)

    def _update(
        self,
        what: str,
        change: Callable[[list[DeviceRule]], list[DeviceRule]],
        spec_rules: Sequence[DeviceRule] | None,
    ) -> Undo:
        state = self._open_state(read_progs=True)
        try:
            plans = self._plan(state, change, spec_rules)
        except BaseException:
            state.close()
            raise
        if not plans:
            state.close()
            return Undo(f"{what} (no change)")
        swapped: list[tuple[int, int]] = []  # (old fd, new fd), in order
        new_fds: list[int] = []

        def swap_back() -> None:
            for old_fd, new_fd in reversed(swapped):
                try:
                    self._swap(state, new_fd, old_fd)
                except BpfError as err:
                    if err.errno != errno.ENOENT:
                        raise
                    # Our program is no longer attached: someone (another grant or
                    # revoke, the runtime) changed the cgroup since.  Do not guess.
                    raise CgroupError(
                        f"{self.path}: device programs changed since '{what}'; not rolling back"
                    ) from err
                swapped.pop()

        def release() -> None:
            for fd in new_fds:
                os.close(fd)
            new_fds.clear()
            state.close()

        try:
            for prog, insns in plans:
                new_fd = self.bpf.prog_load(asm.encode(insns), name=PROG_NAME)
                new_fds.append(new_fd)
                self._swap(state, prog.fd, new_fd)
                swapped.append((prog.fd, new_fd))
        except BaseException as err:
            try:
                swap_back()
            except CgroupError as undo_err:
                log(ERROR, "%s: cannot restore device programs: %s", self.path, undo_err)
            release()
            if isinstance(err, CgroupError):
                raise CgroupError(f"{self.path}: {what}: {err}") from err
            raise
        return Undo(what, rollback=swap_back, release=release)

    def _plan(
        self,
        state: _State,
        change: Callable[[list[DeviceRule]], list[DeviceRule]],
        spec_rules: Sequence[DeviceRule] | None,
    ) -> list[tuple[_Prog, list[asm.Insn]]]:
        if not state.attached.ids:
            if not state.effective.ids:
                log(INFO, "%s: no device program in force, all devices allowed already", self.path)
                return []
            raise CgroupError(
                f"{self.path}: device programs are attached only to ancestor cgroups;"
                " capctl does not modify ancestors"
            )
        inherited = set(state.effective.ids) - set(state.attached.ids)
        if inherited:
            log(
                WARNING,
                "%s: ancestor cgroups add device programs %s that may deny what capctl grants",
                self.path,
                sorted(inherited),
            )
        unreadable = [p for p in state.progs if p.unreadable]
        if unreadable:
            return [self._fallback(state, unreadable[0], change, spec_rules)]
        plans = []
        for prog in state.progs:
            old, base = devfilter.split(prog.insns)
            new = devfilter.build(change(old), base)
            if new != prog.insns:
                plans.append((prog, new))
        return plans

    def _fallback(
        self,
        state: _State,
        prog: _Prog,
        change: Callable[[list[DeviceRule]], list[DeviceRule]],
        spec_rules: Sequence[DeviceRule] | None,
    ) -> tuple[_Prog, list[asm.Insn]]:
        if len(state.progs) != 1:
            raise CgroupError(
                f"{self.path}: device program {prog.id} cannot be read back ({prog.unreadable})"
                f" and {len(state.progs)} programs are attached; refusing to guess which to rebuild"
            )
        if spec_rules is None:
            raise CgroupError(
                f"{self.path}: device program {prog.id} cannot be read back ({prog.unreadable})"
                " and the container's device rules are not available to rebuild it"
            )
        log(
            WARNING,
            "%s: device program %d cannot be read back (%s); rebuilding the whole filter from"
            " the container's %d spec/default device rules",
            self.path,
            prog.id,
            prog.unreadable,
            len(spec_rules),
        )
        return prog, devfilter.build(change([]), devfilter.full_filter(spec_rules))

    def _swap(self, state: _State, old_fd: int, new_fd: int) -> None:
        """Put program *new_fd* in the place of *old_fd* on the cgroup."""
        cgfd, flags = state.cgroup_fd, state.attached.flags
        if not flags & BPF_F_ALLOW_MULTI:
            # Single-program mode (flags 0 or BPF_F_ALLOW_OVERRIDE): attaching replaces the
            # one program (kernel/bpf/cgroup.c, __cgroup_bpf_attach).
            self.bpf.prog_attach(new_fd, cgfd, flags=flags)
            return
        try:
            self.bpf.prog_attach(
                new_fd, cgfd, flags=BPF_F_ALLOW_MULTI | BPF_F_REPLACE, replace_fd=old_fd
            )
            return
        except BpfError as err:
            if not is_missing_replace(err):
                raise
            log(INFO, "%s: BPF_F_REPLACE refused (%s); attaching, then detaching", self.path, err)
        if len(self.bpf.prog_query(cgfd).ids) >= MAX_PROGS:
            raise CgroupError(f"{self.path}: {MAX_PROGS} device programs attached, no free slot")
        self.bpf.prog_attach(new_fd, cgfd, flags=BPF_F_ALLOW_MULTI)
        try:
            self.bpf.prog_detach(old_fd, cgfd)
        except BpfError:
            self.bpf.prog_detach(new_fd, cgfd)
            raise

"""cgroup v1 backend: ``devices.allow`` / ``devices.deny``, verified by ``devices.list``.

Plain files rather than ``cgroupspy``: its ``DeviceAccess`` turns an empty access into
``rwm`` and a missing major into ``*`` (fail open), parses ``devices.list`` leniently, and its
controllers ``open()`` paths (following symlinks) after walking the whole hierarchy.  capctl
writes one rule per ``write(2)`` (the kernel parses one rule per write) through a directory
file descriptor with ``O_NOFOLLOW``, then reads ``devices.list`` back and checks it equals
the emulator's expectation; on any failure it restores the previous state.
"""

from __future__ import annotations

import os

from capctl._lite.strpath import exists, join, normalized
from capctl.cgroup import DeviceCgroup
from capctl.cgroup.discovery import check_not_root
from capctl.cgroup.emulator import Emulator
from capctl.cgroup.undo import ERROR, Undo, log
from capctl.edits.rules import Access, DeviceRule
from capctl.errors import CgroupError, translate

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

    from _typeshed import StrPath


class V1Devices(DeviceCgroup):
    """The ``devices`` controller files of one (non-root) v1 cgroup."""

    def __init__(self, path: StrPath):
        path = normalized(path)
        check_not_root(path)
        with translate(CgroupError, join(path, "devices.list"), "stat"):
            found = exists(join(path, "devices.list"))
        if not found:
            raise CgroupError(f"{path}: not a cgroup v1 devices cgroup (no devices.list)")
        self.path = path

    def __repr__(self) -> str:
        return f"V1Devices({str(self.path)!r})"

    def _file(self, name: str, doing: str, data: bytes | None = None) -> str:
        """Read the cgroup file *name*, or write *data* to it in one ``write(2)``.

        Opened under the cgroup's directory fd with ``O_NOFOLLOW``.  Every OSError is
        translated here, naming the directory or the file and what failed.
        """
        with translate(CgroupError, self.path, "cannot open"):
            dirfd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            with translate(CgroupError, join(self.path, name), doing):
                flags = os.O_RDONLY if data is None else os.O_WRONLY
                fd = os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
                if data is not None:
                    try:
                        os.write(fd, data)
                    finally:
                        os.close(fd)
                    return ""
                with os.fdopen(fd, "r") as f:
                    return f.read()
        finally:
            os.close(dirfd)

    def read(self) -> Emulator:
        """The current state, from ``devices.list`` (fails closed on anything unexpected)."""
        text = self._file("devices.list", "reading")
        return Emulator.from_list(text, join(self.path, "devices.list"))

    def allows_all(self) -> bool:
        """Whether the cgroup allows every device (``a *:* rwm``: a privileged container)."""
        return self.read().is_allow_all

    def allowed(self) -> list[DeviceRule]:
        """The rules ``devices.list`` shows (``[a *:* rwm]`` for allow-all)."""
        return self.read().listing()

    def _write(self, rule: DeviceRule) -> None:
        name = "devices.allow" if rule.allow else "devices.deny"
        self._file(name, f"writing '{rule.line()}'", rule.line().encode())

    def set(self, current: Emulator, target: Emulator) -> None:
        """Move from *current* to *target* with the minimal writes, then verify the list."""
        for rule in current.transition(target):
            self._write(rule)
        now = self.read()
        if now != target:
            raise CgroupError(
                f"{join(self.path, 'devices.list')}: reads back {[r.line() for r in now.listing()]},"
                f" expected {[r.line() for r in target.listing()]}"
            )

    def _change(self, what: str, current: Emulator, target: Emulator) -> Undo:
        if target == current:
            return Undo(f"{what} on {self.path} (no change)")
        try:
            self.set(current, target)
        except CgroupError:
            self._restore(current)
            raise
        return Undo(f"{what} on {self.path}", rollback=lambda: self.set(self.read(), current))

    def _restore(self, previous: Emulator) -> None:
        try:
            self.set(self.read(), previous)
        except CgroupError as err:
            log(ERROR, "%s: cannot restore the previous device rules: %s", self.path, err)

    def grant(self, rules: Iterable[DeviceRule], *, spec_rules: object = None) -> Undo:
        """Allow *rules* (allow rules for c/b devices) in addition to what is allowed now.

        A no-op on an allow-all cgroup.  *spec_rules* is accepted for symmetry with v2 and
        not needed: v1 state is always readable.
        """
        rules = list(rules)
        current = self.read()
        return self._change(
            f"grant {', '.join(r.line() for r in rules)}", current, current.with_allowed(rules)
        )

    def revoke(self, rules: Iterable[DeviceRule]) -> Undo:
        """Take the access of *rules* away; refuses what a wildcard would keep allowing."""
        rules = list(rules)
        current = self.read()
        target = current.without(rules)
        for rule in rules:
            # The kernel only removes exactly matching exceptions; say so if the device
            # stays allowed through another one (a wildcard or a wider access set).
            for letter in rule.access:
                if target.allows(rule.type, rule.major, rule.minor, Access(letter)):
                    raise CgroupError(
                        f"{self.path}: revoking '{rule.line()}' would not take effect:"
                        f" another rule keeps allowing '{letter}'"
                    )
        return self._change(f"revoke {', '.join(r.line() for r in rules)}", current, target)

"""Grant and revoke a container's access to device nodes, on cgroup v1 or v2.

The API the OCI hook and the CLI share.  A *target* is a process ID (its device cgroup is
found as the runtime would: see :mod:`capctl.cgroup.discovery`) or a :class:`Cgroup`.

    undo = grant(pid, [char(238, 5, "r"), char(195, 0, "rw")], spec_rules=oci_device_rules(cfg))
    with undo:                # an exception in the block rolls the grant back
        ...later hook steps...

* :func:`detect` -- the process's device cgroup (version + directory); refuses root cgroups.
* :func:`allows_all` -- every device is allowed already (v1 ``a *:* rwm``; v2 no program in
  force): a privileged container, nothing to grant.
* :func:`grant` -- additionally allow the rules; returns an :class:`Undo` whose
  ``rollback()`` restores exactly the previous state (v1: the previous ``devices.list``;
  v2: the previous programs, whose file descriptors it holds) and ``release()`` keeps the
  change.  Idempotent.  *spec_rules* is only used on v2 when the container's program cannot
  be read back; without it capctl fails closed there.
* :func:`revoke` -- take access away again (v2: only what capctl granted; v1: the matching
  ``devices.list`` exceptions); refuses revokes that would not take effect.
* :func:`allowed` -- v1: the rules in ``devices.list``; v2: the rules capctl granted
  (recorded in its program prefix), or ``[a *:* rwm]`` where nothing is enforced.

Rules are :class:`capctl.edits.rules.DeviceRule` (allow rules for ``c``/``b`` devices).  Every
failure is a :class:`capctl.errors.CgroupError` naming the cgroup.  capctl never changes a
root cgroup.
"""

from __future__ import annotations

from capctl.cgroup.discovery import CGROUP_ROOT, PROC, Cgroup, Version, find_cgroup
from capctl.cgroup.undo import Undo

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from _typeshed import StrPath

    from capctl.edits.rules import DeviceRule

__all__ = [
    "Cgroup",
    "DeviceCgroup",
    "Undo",
    "Version",
    "allowed",
    "allows_all",
    "detect",
    "devices",
    "grant",
    "revoke",
]


class DeviceCgroup:
    """What both backends offer (see :class:`V1Devices`, :class:`V2Devices`).

    Their base class rather than a ``typing.Protocol``, which would cost the hook ``typing``;
    :func:`devices` imports each backend only for a cgroup of its version (v2 needs ctypes).
    """

    path: str  # as paths.normalized gives it

    def allows_all(self) -> bool:
        raise NotImplementedError

    def allowed(self) -> list[DeviceRule]:
        raise NotImplementedError

    def grant(
        self, rules: Iterable[DeviceRule], *, spec_rules: Sequence[DeviceRule] | None = None
    ) -> Undo:
        raise NotImplementedError

    def revoke(self, rules: Iterable[DeviceRule]) -> Undo:
        raise NotImplementedError


def detect(pid: int, *, proc: StrPath = PROC, cgroup_root: StrPath = CGROUP_ROOT) -> Cgroup:
    """The device cgroup of *pid*, as the runtime in our mount namespace would use it."""
    return find_cgroup(pid, proc=proc, cgroup_root=cgroup_root)


def devices(
    target: int | Cgroup, *, proc: StrPath = PROC, cgroup_root: StrPath = CGROUP_ROOT
) -> DeviceCgroup:
    """The backend for *target* (a pid or a :class:`Cgroup`)."""
    cg = (
        target if isinstance(target, Cgroup) else detect(target, proc=proc, cgroup_root=cgroup_root)
    )
    if cg.version is Version.V2:
        from capctl.cgroup.v2 import V2Devices

        return V2Devices(cg.path)
    from capctl.cgroup.v1 import V1Devices

    return V1Devices(cg.path)


def allows_all(
    target: int | Cgroup, *, proc: StrPath = PROC, cgroup_root: StrPath = CGROUP_ROOT
) -> bool:
    """Whether every device is allowed already (privileged container): skip rule changes."""
    return devices(target, proc=proc, cgroup_root=cgroup_root).allows_all()


def grant(
    target: int | Cgroup,
    rules: Iterable[DeviceRule],
    *,
    spec_rules: Sequence[DeviceRule] | None = None,
    proc: StrPath = PROC,
    cgroup_root: StrPath = CGROUP_ROOT,
) -> Undo:
    """Allow *rules* for *target* in addition to what it may use now; see the module doc."""
    return devices(target, proc=proc, cgroup_root=cgroup_root).grant(rules, spec_rules=spec_rules)


def revoke(
    target: int | Cgroup,
    rules: Iterable[DeviceRule],
    *,
    proc: StrPath = PROC,
    cgroup_root: StrPath = CGROUP_ROOT,
) -> Undo:
    """Take the access of *rules* away from *target*; see the module doc."""
    return devices(target, proc=proc, cgroup_root=cgroup_root).revoke(rules)


def allowed(
    target: int | Cgroup, *, proc: StrPath = PROC, cgroup_root: StrPath = CGROUP_ROOT
) -> list[DeviceRule]:
    """The device rules in force for *target* (v2: those capctl granted); see the module doc."""
    return devices(target, proc=proc, cgroup_root=cgroup_root).allowed()

"""What one container asks for, from its OCI config, resolved into a :class:`Plan`.

The one seam every delivery that reads a container's config goes through (the OCI hook; the
runtime wrapper and Docker's ``--gpus`` hook too): the request the trust policy accepts
(:mod:`capctl.request.trust`: ``NVIDIA_VISIBLE_DEVICES`` or the device plugin's
volume-mounts list), the MIG config/monitor requests and who may make them, resolved against
the topology and the driver.  ``None`` means the container asked for nothing (or nothing it may
have): the delivery then changes nothing.

Imports are lazy: a container that asks for nothing never loads the resolver, the driver
readers or the topology (``docs/hook-startup.md``).
"""

from __future__ import annotations

from capctl.errors import HookError
from capctl.request import oci

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from capctl.driver.procfs import DriverState
    from capctl.host import Host
    from capctl.policy.settings import Settings
    from capctl.request.devices import MigAdmin, Request
    from capctl.request.resolve import Plan
    from capctl.request.topology import Topology


def plan_for(host: Host, ctr: oci.Container, log: Callable[[str], None], *,
             container_id: str = "-", settings: Settings | None = None) -> Plan | None:
    """The plan of ``ctr``'s request, or None when it asks for nothing it may have.

    Who may ask is the trust policy's call (:mod:`capctl.request.trust`, ``[requests]`` in
    ``host.config``): an untrusted request is logged and ignored.  Raises
    :class:`HookError` for a request the container may not make (MIG config/monitor from an
    unprivileged container, or with MIG devices selected), and the resolver's errors (unknown
    device, stale topology, bad host node) for one that cannot be met.  *settings*: those
    of ``host.config`` where the caller has loaded them already (read once per start).
    """
    from capctl.request import trust
    from capctl.request.devices import MigAdmin, parse_mig_admin, parse_request

    if settings is None:
        from capctl.policy import settings as config

        settings = config.load(host.config)
    decision = trust.decide(settings.requests, ctr)
    for note in decision.notes:
        log(note)
    want_config = parse_mig_admin(MigAdmin.CONFIG, ctr.env.get(oci.MIG_CONFIG))
    want_monitor = parse_mig_admin(MigAdmin.MONITOR, ctr.env.get(oci.MIG_MONITOR))
    admins = [a for a, wanted in ((MigAdmin.CONFIG, want_config),
                                  (MigAdmin.MONITOR, want_monitor)) if wanted]
    if admins and not ctr.privileged:
        # libnvidia-container refuses these outside privileged containers too
        # (nvidia-container-toolkit: "cannot set MIG_CONFIG_DEVICES in non privileged container").
        raise HookError(
            f"container {container_id}: {admins[0].variable}=all needs a privileged container "
            "(CAP_SYS_ADMIN in the bounding set and no user namespace)"
        )
    request = parse_request(decision.value)
    if request.empty:
        what = f"{oci.VISIBLE}={ctr.env.get(oci.VISIBLE)!r}"
        if admins:
            log(f"no visible device ({what}): {admins[0].variable} does nothing")
        else:
            log(f"no NVIDIA devices requested ({what}); nothing to do")
        return None

    from capctl.driver import procfs
    from capctl.request import resolve
    from capctl.request.topology import load_topology

    # Lazy: a MIG request reads its own lines and files; MIG config/monitor reads them all.
    dstate = procfs.load(host, lazy=True)
    topology = load_topology(host)
    plan = resolve.resolve(request, topology, dstate, host)
    if admins:
        plan = _with_admins(plan, admins, request, topology, dstate, log)
    log(
        "devices "
        + (", ".join(d.uuid for d in plan.devices) or "-")
        + f"; caps {', '.join(c.name for c in plan.caps) or '-'}"
    )
    return plan


def _with_admins(plan: Plan, admins: list[MigAdmin], request: Request, topology: Topology,
                 dstate: DriverState, log: Callable[[str], None]) -> Plan:
    """libnvidia-container's semantics: MIG config/monitor apply to the visible whole GPUs
    that are MIG-capable (in MIG mode, as the topology records it); selecting specific MIG
    devices too is refused (``docs/trust.md``)."""
    from capctl.request import resolve

    if not request.all and any(d.is_mig for d in plan.devices):
        raise HookError(
            f"{admins[0].variable}: mig-config needs whole GPUs visible, and "
            f"{oci.VISIBLE} selects MIG devices"
        )
    minors = []
    for d in plan.devices:
        gpu = topology.gpu_by_uuid(d.gpu_uuid)
        if not d.is_mig and gpu is not None and gpu.mig_enabled:
            minors.append(d.gpu_minor)
    if not minors:
        log(f"no visible whole GPU is MIG-capable: {admins[0].variable} does nothing")
        return plan
    for admin in admins:
        plan = resolve.with_admin(plan, admin, dstate, minors)
    return plan

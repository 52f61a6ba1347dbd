"""What one container asks for, from its OCI config, resolved into a :class:`Plan`.

The one seam every delivery that reads a container's config goes through (the OCI hook; the
runtime wrapper and Docker's ``--gpus`` hook too): the ``NVIDIA_*`` request in
``process.env``, the MIG config/monitor requests and who may make them, resolved against the
topology and the driver.  ``None`` means the container asked for nothing (or nothing it may
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

    from capctl.host import Host
    from capctl.request.resolve import Plan


def plan_for(host: Host, ctr: oci.Container, log: Callable[[str], None], *,
             container_id: str = "-") -> Plan | None:
    """The plan of ``ctr``'s request, or None when it asks for nothing.

    Raises :class:`HookError` for a request the container may not make, and the resolver's
    errors (unknown device, stale topology, bad host node) for one that cannot be met.
    """
    from capctl.request.devices import MigAdmin, parse_mig_admin, parse_request

    visible = ctr.env.get(oci.VISIBLE)
    want_config = parse_mig_admin(MigAdmin.CONFIG, ctr.env.get(oci.MIG_CONFIG))
    want_monitor = parse_mig_admin(MigAdmin.MONITOR, ctr.env.get(oci.MIG_MONITOR))
    request = parse_request(visible)
    if request.empty and not (want_config or want_monitor):
        log(f"no NVIDIA devices requested ({oci.VISIBLE}={visible!r}); nothing to do")
        return None
    if (want_config or want_monitor) and not ctr.sys_admin:
        which = oci.MIG_CONFIG if want_config else oci.MIG_MONITOR
        raise HookError(
            f"container {container_id}: {which}=all needs CAP_SYS_ADMIN in the bounding set"
        )

    from capctl.driver import procfs
    from capctl.request import resolve
    from capctl.request.topology import load_topology

    # Lazy: a MIG request reads its own lines and files; MIG config/monitor reads them all.
    dstate = procfs.load(host, lazy=True)
    plan = (
        resolve.resolve(request, load_topology(host), dstate, host)
        if not request.empty
        else resolve.Plan()
    )
    for admin, wanted in ((MigAdmin.CONFIG, want_config), (MigAdmin.MONITOR, want_monitor)):
        if wanted:
            plan = resolve.with_admin(plan, admin, dstate)
    log(
        "devices "
        + (", ".join(d.uuid for d in plan.devices) or "-")
        + f"; caps {', '.join(c.name for c in plan.caps) or '-'}"
    )
    return plan

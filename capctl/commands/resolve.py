"""``capctl resolve`` and ``capctl topology``: what a request means, what the host has."""

from __future__ import annotations

import click

from capctl.commands.output import print_json, table
from capctl.host import Host


@click.command("resolve")
@click.argument("devices")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def resolve_cmd(host: Host, devices: str, as_json: bool) -> None:
    """DEVICES (NVIDIA_VISIBLE_DEVICES syntax) -> MIG devices, capabilities and device nodes."""
    from capctl.request import resolve

    plan = resolve.resolve_visible_devices(devices, host)
    if as_json:
        print_json(plan.to_list())
        return
    rows = [
        (
            d.uuid,
            str(d.gpu_index),
            str(d.gpu_minor),
            "-" if d.gi is None else str(d.gi),
            "-" if d.ci is None else str(d.ci),
            ", ".join(f"{c.name}={c.minor}" for c in d.caps) or "-",
            ", ".join(d.device_nodes) or "-",
        )
        for d in plan.devices
    ]
    table(rows, ("UUID", "GPU", "MINOR", "GI", "CI", "CAPS (NAME=MINOR)", "DEVICE NODES"))


@click.command("topology")
@click.option("--json", "as_json", is_flag=True, help="Snapshot JSON, accepted back by --topology.")
@click.pass_obj
def topology_cmd(host: Host, as_json: bool) -> None:
    """The MIG topology as capctl sees it (NVML, or the --topology snapshot)."""
    from capctl.request import topology

    topo = topology.load_topology(host)
    if as_json:
        click.echo(topo.to_json(), nl=False)
        return
    rows: list[tuple[str, ...]] = []
    for g in topo.gpus:
        mig = "enabled" if g.mig_enabled else "disabled"
        rows.append(
            (f"GPU {g.index}", str(g.minor), "-", "-", g.uuid, g.name, f"{g.pci_bus_id} MIG {mig}")
        )
        rows += [
            (f"  {g.index}:{m.index}", str(g.minor), str(m.gi), str(m.ci), m.uuid, m.profile, "")
            for m in g.mig_devices
        ]
    table(rows, ("DEVICE", "MINOR", "GI", "CI", "UUID", "NAME/PROFILE", "PCI BUS ID"))

"""The edits step: golden Edits of the simulated host's devices, and its refusals."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from capctl.driver import procfs
from capctl.edits.edits import Edits, NodeEdit, bind_mounts, from_plan, host_path
from capctl.errors import NodeError
from capctl.host import Host
from capctl.request import resolve
from capctl.request.devices import MigAdmin, parse_request
from capctl.request.resolve import CapGrant, DeviceNode, Plan
from capctl.request.topology import load_topology

from .conftest import needs_root

GOLDEN = Path(__file__).parent / "golden" / "edits.json"
#: Requests whose edits are pinned: one MIG device by index and by UUID, a GPU with
#: several compute instances, a whole GPU in MIG mode and one not, MIG config, everything.
CASES = {
    "mig-by-index": ("0:0", None),
    "mig-by-instance": ("MIG-GPU-{gpu1}/2/0", None),
    "two-migs-one-gpu": ("1:0,1:1", None),
    "whole-gpu-mig-mode": ("0", None),
    "whole-gpu-no-mig": ("7", None),
    "gpu-by-uuid": ("GPU-{gpu3}", None),
    "config-whole-gpu": ("2", MigAdmin.CONFIG),
    "all": ("all", None),
}


def _edits(host: Host, text: str, admin: MigAdmin | None) -> Edits:
    topo = load_topology(host)
    text = text.format(**{f"gpu{g.index}": g.uuid[4:] for g in topo.gpus})
    state = procfs.load(host)
    plan = resolve.resolve(parse_request(text), topo, state, host)
    if admin is not None:
        plan = resolve.with_admin(plan, admin, state)
    return from_plan(plan, host.root)


def _view(edits: Edits, root: str) -> dict[str, object]:
    return {
        "nodes": [
            [n.path, n.host_path.replace(root, "<root>"), n.type, n.major, n.minor,
             oct(n.mode), n.access]
            for n in edits.nodes
        ],
        "rules": [r.line() for r in edits.rules],
    }


def _all_views(host: Host) -> dict[str, object]:
    return {name: _view(_edits(host, *case), str(host.root)) for name, case in CASES.items()}


def _dump(views: dict[str, object]) -> str:
    """One node or rule per line, so a diff of the golden file reads as a diff of edits."""
    out = ["{"]
    for i, (name, view) in enumerate(views.items()):
        assert isinstance(view, dict)
        out.append(f" {json.dumps(name)}: {{")
        for key in ("nodes", "rules"):
            items = ",\n".join(f"   {json.dumps(x)}" for x in view[key])
            out.append(f'  "{key}": [\n{items}\n  ]' + ("," if key == "nodes" else ""))
        out.append(" }" + ("," if i < len(views) - 1 else ""))
    return "\n".join([*out, "}"]) + "\n"


@needs_root  # the simulated GPU nodes exist only where mknod works
def test_edits_golden(sim_host: Host) -> None:
    got = _all_views(sim_host)
    if os.environ.get("CAPCTL_UPDATE_GOLDEN"):
        GOLDEN.write_text(_dump(got))
    assert got == json.loads(GOLDEN.read_text())


@needs_root
def test_rules_match_nodes_one_to_one(sim_host: Host) -> None:
    edits = _edits(sim_host, "all", None)
    assert len(edits.rules) == len(edits.nodes) > 0
    for node, rule in zip(edits.nodes, edits.rules, strict=True):
        assert (rule.major, rule.minor, "".join(sorted(rule.access))) == (
            node.major, node.minor, "".join(sorted(node.access)))
        assert rule.allow
        want = "r" if node.path.startswith("/dev/nvidia-caps/") else "rw"
        assert node.access == want


def test_empty_plan_gives_no_edits() -> None:
    edits = from_plan(Plan(), "/")
    assert not edits and edits.rules == () and bind_mounts(edits) == ()


def test_host_path_under_driver_root() -> None:
    assert host_path("/", "/dev/nvidia0") == "/dev/nvidia0"
    assert host_path("/run/nvidia/driver/", "/dev/nvidia0") == "/run/nvidia/driver/dev/nvidia0"


def test_bind_mounts_mirror_nodes() -> None:
    plan = Plan(caps=(CapGrant("gpu0/gi1/access", 12, 0o444),), caps_major=238,
                device_nodes=(DeviceNode("/dev/nvidia0", 195, 0, 0o666),))
    (gpu, cap) = bind_mounts(from_plan(plan, "/r"))
    assert (gpu.source, gpu.destination) == ("/r/dev/nvidia0", "/dev/nvidia0")
    assert (cap.source, cap.destination) == (
        "/r/dev/nvidia-caps/nvidia-cap12", "/dev/nvidia-caps/nvidia-cap12")
    assert cap.to_oci()["type"] == "bind"


@pytest.mark.parametrize(
    "plan",
    [
        Plan(device_nodes=(DeviceNode("/etc/passwd", 195, 0, 0o666),)),
        Plan(device_nodes=(DeviceNode("/dev/sub/nvidia0", 195, 0, 0o666),)),
        Plan(device_nodes=(DeviceNode("/dev/..", 195, 0, 0o666),)),
        Plan(caps=(CapGrant("gpu0/gi1/access", 12, 0o444),), caps_major=None),
    ],
    ids=["outside-dev", "subdirectory", "dotdot", "caps-without-major"],
)
def test_from_plan_refuses_misplaced_nodes(plan: Plan) -> None:
    with pytest.raises(NodeError):
        from_plan(plan, "/")


def test_node_edit_parts() -> None:
    n = NodeEdit("/dev/nvidia-caps/nvidia-cap3", "/dev/nvidia-caps/nvidia-cap3", 238, 3, 0o400, "r")
    assert (n.directory, n.name, n.type, n.rule().line()) == (
        "/dev/nvidia-caps", "nvidia-cap3", "c", "c 238:3 r")

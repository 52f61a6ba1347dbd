"""Resolution on the simulated 8-GPU host (GPU 6 has minor 7, GPU 7 minor 6, GPU 4 no MIG)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from capctl import simulated
from capctl._lite.record import replace
from capctl.driver import capnames, procfs
from capctl.driver.capfile import CapabilityFile
from capctl.driver.capnames import Source
from capctl.driver.minorsfile import Capability, CapabilityTable
from capctl.errors import DeviceError, DriverError, NodeError, TopologyError
from capctl.host import Host
from capctl.request import devices, resolve, topology
from capctl.request.devices import parse_request
from capctl.request.resolve import CapGrant, MigAdmin, Plan
from capctl.request.topology import Topology

from .conftest import needs_root

SIM = simulated.topology()
GPUS = SIM["gpus"]


def mig_uuid(gpu: int, j: int) -> str:
    uuid: str = GPUS[gpu]["mig_devices"][j]["uuid"]
    return uuid


@pytest.fixture
def bare_host(tmp_path: Path) -> Host:
    """A simulated root without /dev nodes (works without root)."""
    root = tmp_path / "root"
    simulated.build(root, dev_nodes=False)
    return Host(root=root, config=tmp_path / "capctl.toml", topology=root / "topology.json")


def run(host: Host, value: str) -> Plan:
    return resolve.resolve_visible_devices(value, host)


def names(plan: Plan) -> list[list[str]]:
    return [[c.name for c in d.caps] for d in plan.devices]


# --- MIG devices ------------------------------------------------------------------------------

FORMS = [
    # (id, request, gpu index, (gi, ci), expected gpu minor)
    ("mig uuid", mig_uuid(0, 3), 0, (10, 0), 0),
    ("mig uuid upper case", mig_uuid(0, 3).upper().replace("MIG-", "MIG-"), 0, (10, 0), 0),
    ("triple", f"MIG-{GPUS[1]['uuid']}/1/2", 1, (1, 2), 1),
    ("index form", "1:2", 1, (1, 2), 1),
    ("minor differs: index 6 is minor 7", "6:1", 6, (2, 0), 7),
    ("minor differs: index 7 is minor 6", mig_uuid(7, 0), 7, (7, 0), 6),
    ("full GPU instance 7g", "3:0", 3, (0, 0), 3),
]


@pytest.mark.parametrize(("value", "gpu", "inst", "minor"),
                         [(v, g, i, m) for _, v, g, i, m in FORMS], ids=[f[0] for f in FORMS])
def test_mig_forms(bare_host: Host, value: str, gpu: int, inst: tuple[int, int],
                   minor: int) -> None:
    plan = run(bare_host, value)
    (dev,) = plan.devices
    gi, ci = inst
    assert (dev.gpu_index, dev.gpu_minor, dev.gi, dev.ci) == (gpu, minor, gi, ci)
    assert dev.gpu_uuid == GPUS[gpu]["uuid"]
    want = [capnames.gi_name(minor, gi), capnames.ci_name(minor, gi, ci)]
    assert [c.name for c in dev.caps] == want
    assert [c.minor for c in dev.caps] == [simulated.minor_of(n) for n in want]
    assert [c.path for c in dev.caps] == [f"/dev/nvidia-caps/nvidia-cap{simulated.minor_of(n)}"
                                          for n in want]
    assert all(c.mode == 0o444 for c in dev.caps)
    assert plan.caps == dev.caps
    assert plan.caps_major == simulated.CAPS_MAJOR


def test_multi_device_list_in_order(bare_host: Host) -> None:
    plan = run(bare_host, f"6:0, {mig_uuid(7, 1)}, 2:2")
    assert [(d.gpu_minor, d.gi, d.ci) for d in plan.devices] == [(7, 1, 0), (6, 8, 0), (2, 13, 0)]
    assert len(plan.caps) == 6


def test_duplicates_removed_across_forms(bare_host: Host) -> None:
    same = [mig_uuid(6, 1), "6:1", f"MIG-{GPUS[6]['uuid']}/2/0"]
    plan = run(bare_host, ",".join(same))
    assert len(plan.devices) == 1
    assert len(plan.caps) == 2


def test_shared_gi_caps_deduplicated(bare_host: Host) -> None:
    # GPU 1 GI 1 has three CIs: one GI capability, three CI capabilities.
    plan = run(bare_host, "1:0,1:1,1:2")
    assert [c.name for c in plan.caps] == [
        "gpu1/gi1/access", "gpu1/gi1/ci0/access", "gpu1/gi1/ci1/access", "gpu1/gi1/ci2/access"]


UNKNOWN = [
    ("unknown mig uuid", "MIG-00000000-0000-0000-0000-000000000000"),
    ("unknown gpu uuid", "GPU-00000000-0000-0000-0000-000000000000"),
    ("unknown gpu index", "8"),
    ("unknown mig index", "0:7"),
    ("unknown instance", f"MIG-{GPUS[0]['uuid']}/1/0"),
    ("unknown parent in triple", "MIG-GPU-00000000-0000-0000-0000-000000000000/7/0"),
]


@pytest.mark.parametrize("value", [v for _, v in UNKNOWN], ids=[i for i, _ in UNKNOWN])
def test_unknown_named(bare_host: Host, value: str) -> None:
    with pytest.raises(DeviceError) as info:
        run(bare_host, f"0:0,{value}")
    assert info.value.device == value
    assert "no such device in the topology" in str(info.value)


def test_every_unknown_named(bare_host: Host) -> None:
    a, b = "MIG-00000000-0000-0000-0000-00000000000a", "MIG-00000000-0000-0000-0000-00000000000b"
    with pytest.raises(DeviceError) as info:
        run(bare_host, f"{a},0:0,{b}")
    assert a in str(info.value) and b in str(info.value)


def test_mig_index_on_non_mig_gpu(bare_host: Host) -> None:
    with pytest.raises(DeviceError, match=r"'4:0': GPU 4 .* is not in MIG mode"):
        run(bare_host, "4:0")


# --- whole GPUs, all, nothing -------------------------------------------------------------------

def test_whole_gpu_in_mig_mode_has_no_caps(bare_host: Host) -> None:
    plan = run(bare_host, f"6,{GPUS[7]['uuid']}")
    assert [(d.uuid, d.gpu_minor, d.gi, d.ci) for d in plan.devices] == [
        (GPUS[6]["uuid"], 7, None, None), (GPUS[7]["uuid"], 6, None, None)]
    assert plan.caps == ()
    assert not plan.devices[0].is_mig
    assert plan.devices[0].to_dict()["caps"] == []


def test_non_mig_gpu(bare_host: Host) -> None:
    (dev,) = run(bare_host, "4").devices
    assert (dev.gpu_minor, dev.caps) == (4, ())


def test_all(bare_host: Host) -> None:
    plan = run(bare_host, "all")
    n_mig = sum(len(g["mig_devices"]) for g in GPUS)
    assert len(plan.devices) == 8 + n_mig
    assert [d.gpu_index for d in plan.devices[:8]] == list(range(8))
    assert all(not d.is_mig for d in plan.devices[:8])
    assert {c.name for c in plan.caps} == set(simulated.mig_capability_names()) - {"config", "monitor"}


@pytest.mark.parametrize("value", [None, "", "none", "void", "  "])
def test_nothing_reads_nothing(tmp_path: Path, value: str | None) -> None:
    host = Host(root=tmp_path / "does-not-exist", topology=tmp_path / "nope.json")
    assert resolve.resolve_visible_devices(value, host) == Plan()


def test_json_shape(bare_host: Host) -> None:
    (entry,) = run(bare_host, "7:1").to_list()
    assert entry == {
        "uuid": mig_uuid(7, 1),
        "gpu_uuid": GPUS[7]["uuid"],
        "gpu_minor": 6,
        "gi": 8,
        "ci": 0,
        "caps": [
            {"name": "gpu6/gi8/access", "minor": simulated.minor_of("gpu6/gi8/access"),
             "path": f"/dev/nvidia-caps/nvidia-cap{simulated.minor_of('gpu6/gi8/access')}"},
            {"name": "gpu6/gi8/ci0/access", "minor": simulated.minor_of("gpu6/gi8/ci0/access"),
             "path": f"/dev/nvidia-caps/nvidia-cap{simulated.minor_of('gpu6/gi8/ci0/access')}"},
        ],
        "device_nodes": [],
    }


# --- stale or inconsistent topology -------------------------------------------------------------

def test_stale_snapshot(bare_host: Host) -> None:
    # The instance gpu7/gi2 (index 6, MIG device 1) was destroyed after the snapshot was taken.
    (Path(bare_host.root) / capnames.proc_relpath("gpu7/gi2/ci0/access", Source.MIG)).unlink()
    with pytest.raises(TopologyError, match=r"stale topology .*'6:1' needs capability "
                                            r"'gpu7/gi2/ci0/access'"):
        run(bare_host, "6:0,6:1")
    assert len(run(bare_host, "6:0").devices) == 1  # the others still resolve


def test_snapshot_naming_instance_beyond_mig_minors(bare_host: Host) -> None:
    snap = simulated.topology()
    snap["gpus"][0]["mig_devices"][0]["gi"] = 40
    topo = topology.from_dict(snap, "snap")
    state = procfs.load(bare_host)
    with pytest.raises(DeviceError, match="'gpu0/gi40/access' is not in mig-minors"):
        resolve.resolve(parse_request("0:0"), topo, state, bare_host)


def test_minors_come_from_the_table_not_a_formula(bare_host: Host) -> None:
    # A driver whose mig-minors numbers differently: capctl must use the table's minors.
    topo = topology.load_snapshot(Path(bare_host.root) / "topology.json")
    state = procfs.load(bare_host)
    odd = {"gpu7/gi1/access": 5000, "gpu7/gi1/ci0/access": 4000}
    table = CapabilityTable(Capability(c.name, odd.get(c.name, c.minor), c.source)
                            for c in state.table)
    existing = {**state.existing,
                **{n: CapabilityFile(m, 0o444, True) for n, m in odd.items()}}
    state = replace(state, table=table, existing=existing)
    plan = resolve.resolve(parse_request("6:0"), topo, state, bare_host)
    assert [(c.name, c.minor) for c in plan.caps] == list(odd.items())


def test_no_frontend_major(bare_host: Host) -> None:
    state = procfs.load(bare_host)
    state = replace(state, majors=replace(state.majors, frontend=None))
    topo = topology.load_snapshot(Path(bare_host.root) / "topology.json")
    with pytest.raises(DriverError, match=r"'nvidia' .*'nvidia-frontend'"):
        resolve.resolve(parse_request("0"), topo, state, bare_host)


def test_empty_topology_knows_no_device(bare_host: Host) -> None:
    state = procfs.load(bare_host)
    with pytest.raises(DeviceError, match="no such device in the topology"):
        resolve.resolve(parse_request("0"), Topology((), "empty"), state, bare_host)


# --- host device nodes ----------------------------------------------------------------------------

def _st(mode: int, rdev: int = 0) -> os.stat_result:
    return os.stat_result((mode, 1, 1, 1, 0, 0, 0, 0, 0, 0), {"st_rdev": rdev})


CHR = stat.S_IFCHR | 0o666
NODE_CASES = [
    ("absent", None, 195, None),
    ("ok", _st(CHR, os.makedev(195, 7)), 195, "ok"),
    ("regular file", _st(stat.S_IFREG | 0o644), 195, "is a regular file"),
    ("symlink", _st(stat.S_IFLNK | 0o777), 195, "is a symlink"),
    ("block device", _st(stat.S_IFBLK | 0o666, os.makedev(195, 7)), 195, "is a block device"),
    ("wrong minor", _st(CHR, os.makedev(195, 6)), 195,
     "is c 195:6, but the nvidia device is c 195:7"),
    ("wrong major", _st(CHR, os.makedev(238, 7)), 195, "is c 238:7"),
    ("driver not registered", _st(CHR, os.makedev(195, 7)), None, "has no major in /proc/devices"),
]


@pytest.mark.parametrize(("st", "major", "want"), [(s, m, w) for _, s, m, w in NODE_CASES],
                         ids=[c[0] for c in NODE_CASES])
def test_check_node(st: os.stat_result | None, major: int | None, want: str | None) -> None:
    if want is None:
        assert resolve.check_node("/dev/nvidia7", st, major, 7, "nvidia") is None
    elif want == "ok":
        node = resolve.check_node("/dev/nvidia7", st, major, 7, "nvidia")
        assert node == resolve.DeviceNode("/dev/nvidia7", 195, 7, 0o666)
    else:
        with pytest.raises(NodeError, match=want):
            resolve.check_node("/dev/nvidia7", st, major, 7, "nvidia")


def test_fake_regular_file_node_refused(bare_host: Host) -> None:
    (Path(bare_host.root) / "dev/nvidia7").write_text("")
    with pytest.raises(NodeError, match="dev/nvidia7: is a regular file"):
        run(bare_host, "6:0")


@needs_root
def test_device_nodes_on_host(sim_host: Host) -> None:
    plan = run(sim_host, f"6:0,{mig_uuid(7, 0)},4")
    assert [d.device_nodes for d in plan.devices] == [
        ("/dev/nvidia7", "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"),
        ("/dev/nvidia6", "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"),
        ("/dev/nvidia4", "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"),
    ]
    fr, uvm = simulated.FRONTEND_MAJOR, simulated.UVM_MAJOR
    assert [(n.path, n.major, n.minor, n.mode) for n in plan.device_nodes] == [
        ("/dev/nvidia7", fr, 7, 0o666), ("/dev/nvidiactl", fr, 255, 0o666),
        ("/dev/nvidia-uvm", uvm, 0, 0o666), ("/dev/nvidia-uvm-tools", uvm, 1, 0o666),
        ("/dev/nvidia6", fr, 6, 0o666), ("/dev/nvidia4", fr, 4, 0o666),
    ]


@needs_root
def test_only_existing_nodes(sim_host: Host) -> None:
    (Path(sim_host.root) / "dev/nvidia-uvm-tools").unlink()
    (dev,) = run(sim_host, "3").devices
    assert dev.device_nodes == ("/dev/nvidia3", "/dev/nvidiactl", "/dev/nvidia-uvm")


@needs_root
def test_host_node_with_wrong_minor_refused(sim_host: Host) -> None:
    node = Path(sim_host.root) / "dev/nvidia7"
    node.unlink()
    os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(simulated.FRONTEND_MAJOR, 6))
    with pytest.raises(NodeError, match="is c 195:6"):
        run(sim_host, "6")


# --- NVIDIA_MIG_CONFIG_DEVICES / NVIDIA_MIG_MONITOR_DEVICES ------------------------------------

ADMIN_VALUES = [
    ("unset", None, False), ("empty", "", False), ("blank", " ", False),
    ("all", "all", True), ("all padded", " all ", True),
]


@pytest.mark.parametrize(("value", "want"), [(v, w) for _, v, w in ADMIN_VALUES],
                         ids=[i for i, _, _ in ADMIN_VALUES])
def test_parse_mig_admin(value: str | None, want: bool) -> None:
    assert devices.parse_mig_admin(MigAdmin.CONFIG, value) is want


@pytest.mark.parametrize("value", ["0", "none", "ALL", "all,0", "/dev/nvidia-caps"])
def test_parse_mig_admin_rejects(value: str) -> None:
    with pytest.raises(DeviceError, match="NVIDIA_MIG_MONITOR_DEVICES accepts only 'all'"):
        devices.parse_mig_admin(MigAdmin.MONITOR, value)


@pytest.mark.parametrize("which", list(MigAdmin), ids=[w.value for w in MigAdmin])
def test_admin_caps(bare_host: Host, which: MigAdmin) -> None:
    state = procfs.load(bare_host)
    grants = resolve.admin_caps(which, [7], state)
    assert grants[0] == CapGrant(which.value, simulated.minor_of(which.value),
                                 0o400 if which is MigAdmin.CONFIG else 0o444)
    rest = grants[1:]
    assert len(rest) == simulated.N_GIS * (1 + simulated.N_CIS)  # every possible, not existing
    assert all(g.name.startswith("gpu7/") for g in rest)
    assert [g.minor for g in grants] == sorted(g.minor for g in grants)
    assert {g.mode for g in rest} == {0o444}


def test_with_admin_uses_plan_gpus(bare_host: Host) -> None:
    state = procfs.load(bare_host)
    plan = run(bare_host, "6:0,7:1")
    admin = resolve.with_admin(plan, MigAdmin.MONITOR, state)
    gpus = {g.name.split("/")[0] for g in admin.caps if g.name.startswith("gpu")}
    assert gpus == {"gpu7", "gpu6"}
    granted = {g.name for g in admin.caps}
    assert "monitor" in granted and "config" not in granted
    assert len(admin.caps) == 1 + 2 * simulated.N_GIS * (1 + simulated.N_CIS)
    assert len({g.minor for g in admin.caps}) == len(admin.caps)
    assert admin.devices == plan.devices

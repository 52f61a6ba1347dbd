"""Resolution: a device request + the topology + the driver -> a :class:`Plan` of exact grants.

What a container needs to use a device (docs/driver.md, from the MIG User Guide, "Device Nodes and
Capabilities"):

- **a MIG device**: its parent GPU's node ``/dev/nvidia<minor>``, ``/dev/nvidiactl``,
  ``/dev/nvidia-uvm``, ``/dev/nvidia-uvm-tools`` (those that exist on the host), and two
  capabilities, ``gpu<minor>/gi<G>/access`` and ``gpu<minor>/gi<G>/ci<C>/access``.  The GPU's
  **device minor** picks both the node and the ``gpu<N>`` of the names, never its NVML index.
  Capability minors come from the parsed ``mig-minors`` table, never from a formula; the modes
  from the capability proc files.  Each capability's proc file must exist *now*: if it does not,
  the topology (usually a snapshot) is stale, and resolution fails rather than grant a
  capability for an instance that is gone or not yet created.
- **a whole GPU** (``GPU-<uuid>``, ``<index>``): its node and the control/UVM nodes, no
  capability.  For a GPU in MIG mode that is the parent node only: enough for ``nvidia-smi``
  to see the GPU, not to run CUDA on any of its MIG devices (those need their own request).
- **all**: every GPU as a whole GPU, followed by every MIG device of the topology with its
  capabilities: literally every device there is.
- **nothing** (``none``, ``void``, empty, unset): an empty plan; nothing is read.

Device nodes are reported only when they exist on the host (under ``host.root``); their major
and minor are the driver's (``/proc/devices`` majors; minor 255 for ``nvidiactl``, 0 and 1 for
the UVM nodes, the GPU minor otherwise) and an existing host node that is not that char device
is an error.  The node's permission bits are taken from the host node, so the OCI hook can
create the same nodes in the container.

``NVIDIA_MIG_CONFIG_DEVICES=all`` / ``NVIDIA_MIG_MONITOR_DEVICES=all`` (container-toolkit
semantics, docs/contract.md): :func:`admin_caps` / :func:`with_admin` add ``config`` (or ``monitor``)
and every possible ``gpu<N>/...`` capability of each GPU in the plan, from ``mig-minors``,
existing or not, because instances created later must be usable.  Checking that the container
holds CAP_SYS_ADMIN in its bounding set is the hook's job, not this module's.
"""

from __future__ import annotations

import os
import stat

from capctl._lite.record import Record, replace
from capctl.devfs.safefs import file_kind
from capctl.driver import capnames, procdevices
from capctl.driver.capnames import Kind
from capctl.driver.procfs import DriverState
from capctl.errors import DeviceError, DriverError, NodeError, TopologyError, translate
from capctl.host import Host
from capctl.request import devices as devices  # re-exported: the hook calls resolve.devices
from capctl.request.devices import (
    GpuByIndex,
    GpuByPciBusId,
    GpuByUuid,
    MigAdmin,
    MigByIndex,
    MigByInstance,
    MigByUuid,
    Ref,
    Request,  # re-exported
)
from capctl.request.topology import Gpu, MigDevice, Topology

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from typing import Any

# Fixed minors of the driver's control and UVM nodes (open-gpu-kernel-modules:
# kernel-open/nvidia/nv.c NV_MINOR_DEVICE_NUMBER_CONTROL_DEVICE = 255;
# kernel-open/nvidia-uvm/uvm_common.h NVIDIA_UVM_PRIMARY_MINOR_NUMBER = 0,
# NVIDIA_UVM_TOOLS_MINOR_NUMBER = 1).
CTL_MINOR = 255
UVM_MINOR = 0
UVM_TOOLS_MINOR = 1

CTL_PATH = "/dev/nvidiactl"
UVM_PATH = "/dev/nvidia-uvm"
UVM_TOOLS_PATH = "/dev/nvidia-uvm-tools"


def gpu_node_path(minor: int) -> str:
    """``/dev/nvidia<minor>``: the GPU's node, by device minor."""
    return f"/dev/nvidia{minor}"


class CapGrant(Record):
    """One capability to grant: a node ``/dev/nvidia-caps/nvidia-cap<minor>`` of the caps major."""

    name: str  # "gpu7/gi1/access"
    minor: int  # from mig-minors
    mode: int  # the driver's DeviceFileMode (permission bits)

    @property
    def path(self) -> str:
        return "/" + capnames.node_relpath(self.minor)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "minor": self.minor, "path": self.path}


class DeviceNode(Record):
    """A host device node (not a capability) the container gets: char ``major:minor``."""

    path: str  # "/dev/nvidia7", as inside the host root and the container
    major: int
    minor: int
    mode: int  # permission bits of the host's node


class ResolvedDevice(Record):
    """One requested device, resolved.  ``gi``/``ci`` are None for a whole GPU."""

    uuid: str  # MIG-... for a MIG device; GPU-... for a whole GPU
    gpu_uuid: str
    gpu_index: int
    gpu_minor: int
    gi: int | None
    ci: int | None
    profile: str | None  # MIG profile; None for a whole GPU
    caps: tuple[CapGrant, ...]
    device_nodes: tuple[str, ...]  # paths, a subset of the plan's DeviceNode paths

    @property
    def is_mig(self) -> bool:
        return self.gi is not None

    def to_dict(self) -> dict[str, Any]:
        """The ``capctl resolve --json`` entry (docs/contract.md)."""
        return {
            "uuid": self.uuid,
            "gpu_uuid": self.gpu_uuid,
            "gpu_minor": self.gpu_minor,
            "gi": self.gi,
            "ci": self.ci,
            "caps": [c.to_dict() for c in self.caps],
            "device_nodes": list(self.device_nodes),
        }


class Plan(Record):
    """Everything a container needs for a request, deduplicated, in request order.

    ``devices``: per requested device (for reports).  ``caps`` and ``device_nodes``: the union,
    what the hook creates in the container and allows in its device cgroup: capability nodes
    are char ``caps_major:minor``, device nodes carry their own major/minor.  ``caps_major`` is
    None only when the request was empty (nothing was read).
    """

    devices: tuple[ResolvedDevice, ...] = ()
    caps: tuple[CapGrant, ...] = ()
    device_nodes: tuple[DeviceNode, ...] = ()
    caps_major: int | None = None

    @property
    def gpu_minors(self) -> tuple[int, ...]:
        """Minors of every GPU the plan touches (whole or through a MIG device), in order."""
        return tuple(dict.fromkeys(d.gpu_minor for d in self.devices))

    def to_list(self) -> list[dict[str, Any]]:
        """The ``capctl resolve --json`` output: one object per device."""
        return [d.to_dict() for d in self.devices]


# --- host nodes -------------------------------------------------------------------------------


def check_node(path: str, st: os.stat_result | None, major: int | None, minor: int,
               driver: str) -> DeviceNode | None:
    """The :class:`DeviceNode` for what ``lstat`` saw at ``path`` (None: no node).  Pure.

    A node that is not the char device ``major:minor`` the driver registered is an error:
    granting it would give the container something else than asked for.
    """
    if st is None:
        return None
    if not stat.S_ISCHR(st.st_mode):
        raise NodeError(path, f"is {file_kind(st.st_mode)}, not the {driver} character device")
    if major is None:
        raise NodeError(path, f"exists, but {driver!r} has no major in /proc/devices "
                              "(module not loaded?); refusing a stale node")
    found = (os.major(st.st_rdev), os.minor(st.st_rdev))
    if found != (major, minor):
        raise NodeError(path, f"is c {found[0]}:{found[1]}, but the {driver} device is "
                              f"c {major}:{minor}; refusing")
    return DeviceNode(path, major, minor, stat.S_IMODE(st.st_mode))


def lstat_node(host: Host, path: str) -> os.stat_result | None:
    """``lstat`` an absolute device path under the host root; None if absent."""
    full = host.path(path.lstrip("/"))
    with translate(NodeError, full, "cannot stat"):
        try:
            return os.lstat(full)
        except FileNotFoundError:
            return None


class _Nodes:
    """Probes each host node once and remembers the answer."""

    def __init__(self, host: Host, state: DriverState):
        self.host = host
        self.majors = state.majors
        self.found: dict[str, DeviceNode | None] = {}

    def _get(self, path: str, major: int | None, minor: int, driver: str) -> DeviceNode | None:
        if path not in self.found:
            st = lstat_node(self.host, path)
            self.found[path] = check_node(path, st, major, minor, driver)
        return self.found[path]

    def for_gpu(self, minor: int) -> tuple[DeviceNode, ...]:
        frontend = self.majors.frontend
        if frontend is None:
            raise DriverError(f"{self.host.display('proc/devices')}: no 'nvidia' "
                              "(or, before 545, 'nvidia-frontend') character major; the nvidia driver is not loaded")
        wanted = (
            (gpu_node_path(minor), frontend, minor, "nvidia"),
            (CTL_PATH, frontend, CTL_MINOR, "nvidia"),
            (UVM_PATH, self.majors.uvm, UVM_MINOR, procdevices.UVM_MAJOR_NAME),
            (UVM_TOOLS_PATH, self.majors.uvm, UVM_TOOLS_MINOR, procdevices.UVM_MAJOR_NAME),
        )
        nodes = (self._get(*w) for w in wanted)
        return tuple(n for n in nodes if n is not None)


# --- capabilities -----------------------------------------------------------------------------


def _cap(state: DriverState, name: str, device: str, topology: Topology, host: Host) -> CapGrant:
    cap = state.table.get(name)
    if cap is None:
        raise DeviceError(device, f"capability {name!r} is not in mig-minors; the topology "
                                  f"({topology.source}) names an instance this driver cannot have")
    cf = state.existing.get(name)
    if cf is None:
        raise TopologyError(
            f"stale topology ({topology.source}): {device!r} needs capability {name!r}, but "
            f"{host.display(cap.proc_relpath)} does not exist: the MIG instance is gone or was "
            "never created; refresh the snapshot (capctl topology --json) or re-create it"
        )
    return CapGrant(name, cap.minor, cf.mode)


def mig_caps(state: DriverState, gpu: Gpu, mig: MigDevice, device: str,
             topology: Topology, host: Host) -> tuple[CapGrant, CapGrant]:
    """The GI and CI capabilities of one MIG device; both must exist now."""
    return (
        _cap(state, capnames.gi_name(gpu.minor, mig.gi), device, topology, host),
        _cap(state, capnames.ci_name(gpu.minor, mig.gi, mig.ci), device, topology, host),
    )


# --- resolution -------------------------------------------------------------------------------

_Target = tuple[Gpu, MigDevice | None]


def _find(ref: Ref, topology: Topology) -> _Target | None:
    """The topology entry a reference names, None if unknown; DeviceError if unusable."""
    d = ref.device
    if isinstance(d, MigByUuid):
        return topology.mig_by_uuid(d.uuid)
    if isinstance(d, GpuByUuid | GpuByIndex | GpuByPciBusId):
        if isinstance(d, GpuByUuid):
            gpu = topology.gpu_by_uuid(d.uuid)
        elif isinstance(d, GpuByPciBusId):
            gpu = topology.gpu_by_pci_bus_id(d.bus_id)
        else:
            gpu = topology.gpu_by_index(d.index)
        return None if gpu is None else (gpu, None)
    gpu = topology.gpu_by_uuid(d.gpu_uuid) if isinstance(d, MigByInstance) else (
        topology.gpu_by_index(d.gpu))
    if gpu is None:
        return None
    if not gpu.mig_enabled:
        raise DeviceError(ref.token, f"GPU {gpu.index} ({gpu.uuid}) is not in MIG mode")
    if isinstance(d, MigByIndex):
        mig = next((m for m in gpu.mig_devices if m.index == d.mig), None)
    else:
        mig = next((m for m in gpu.mig_devices if (m.gi, m.ci) == (d.gi, d.ci)), None)
    return None if mig is None else (gpu, mig)


def _targets(request: Request, topology: Topology) -> list[tuple[str, _Target]]:
    if request.all:
        whole = [(g.uuid, (g, None)) for g in topology.gpus]
        migs = [(m.uuid, (g, m)) for g in topology.gpus for m in g.mig_devices]
        return [*whole, *migs]
    found: list[tuple[str, _Target]] = []
    unknown: list[str] = []
    for ref in request.refs:
        target = _find(ref, topology)
        if target is None:
            unknown.append(ref.token)
        else:
            found.append((ref.token, target))
    if unknown:
        raise DeviceError(", ".join(unknown),
                          f"no such device in the topology ({topology.source})")
    return found


def resolve(request: Request, topology: Topology, state: DriverState, host: Host) -> Plan:
    """Resolve a parsed request against a topology and the driver state.

    Raises :class:`DeviceError` for unknown or unusable devices (naming every unknown token),
    :class:`TopologyError` for a stale topology, :class:`NodeError` for a host node that is not
    the driver's device.  Devices named twice (``MIG-<uuid>`` and ``0:1`` for the same one) are
    listed once.
    """
    if request.empty:
        return Plan()
    nodes = _Nodes(host, state)
    resolved: dict[tuple[str, int | None, int | None], ResolvedDevice] = {}
    for token, (gpu, mig) in _targets(request, topology):
        key = (gpu.uuid, None if mig is None else mig.gi, None if mig is None else mig.ci)
        if key in resolved:
            continue
        grants = () if mig is None else mig_caps(state, gpu, mig, token, topology, host)
        resolved[key] = ResolvedDevice(
            uuid=gpu.uuid if mig is None else mig.uuid,
            gpu_uuid=gpu.uuid,
            gpu_index=gpu.index,
            gpu_minor=gpu.minor,
            gi=None if mig is None else mig.gi,
            ci=None if mig is None else mig.ci,
            profile=None if mig is None else mig.profile,
            caps=grants,
            device_nodes=tuple(n.path for n in nodes.for_gpu(gpu.minor)),
        )
    devs = tuple(resolved.values())
    all_caps = {c.minor: c for d in devs for c in d.caps}
    all_nodes = {n.path: n for n in nodes.found.values() if n is not None}
    ordered_nodes = dict.fromkeys(p for d in devs for p in d.device_nodes)
    return Plan(devs, tuple(all_caps.values()), tuple(all_nodes[p] for p in ordered_nodes),
                state.caps_major)


def resolve_visible_devices(value: str | None, host: Host, *,
                            topology: Topology | None = None,
                            state: DriverState | None = None) -> Plan:
    """``NVIDIA_VISIBLE_DEVICES`` text -> :class:`Plan`: the one call for the OCI hook.

    Parses first; an empty request returns an empty plan without reading the driver or the
    topology (so containers without GPUs never touch NVML).  Otherwise loads what was not
    passed in: the driver state (:func:`capctl.driver.procfs.load`) and the topology
    (:func:`capctl.request.topology.load_topology`: ``host.topology`` or NVML).
    """
    from capctl.driver import procfs
    from capctl.request import topology as topo

    request = devices.parse_request(value)
    if request.empty:
        return Plan()
    state = procfs.load(host) if state is None else state
    topology = topo.load_topology(host) if topology is None else topology
    return resolve(request, topology, state, host)


# --- NVIDIA_MIG_CONFIG_DEVICES / NVIDIA_MIG_MONITOR_DEVICES -----------------------------------


def admin_caps(
    which: MigAdmin, gpu_minors: Iterable[int], state: DriverState
) -> tuple[CapGrant, ...]:
    """``config`` or ``monitor`` plus every possible ``gpu<N>/...`` capability of each GPU.

    From ``mig-minors`` (existing or not: instances created later must be usable), in minor
    order.  Modes: the proc file's where the capability exists, else the driver's default.
    """
    fixed = state.table.get(which.value)
    if fixed is None:
        raise DriverError(f"mig-minors has no {which.value!r} capability")
    minors = set(gpu_minors)
    chosen = [fixed] + [
        c for c in state.table
        if c.source is capnames.Source.MIG and c.ref.kind in (Kind.GI, Kind.CI)
        and c.ref.gpu in minors
    ]
    grants = (_grant_any(state, c.name, c.minor) for c in chosen)
    return tuple(sorted(grants, key=lambda g: g.minor))


def _grant_any(state: DriverState, name: str, minor: int) -> CapGrant:
    cf = state.existing.get(name)
    return CapGrant(name, minor, cf.mode if cf is not None else capnames.default_mode(name))


def with_admin(plan: Plan, which: MigAdmin, state: DriverState,
               gpu_minors: Iterable[int] | None = None) -> Plan:
    """``plan`` with :func:`admin_caps` for ``gpu_minors`` (default: the plan's GPUs) added
    to ``caps`` (deduplicated)."""
    minors = plan.gpu_minors if gpu_minors is None else tuple(gpu_minors)
    merged: Mapping[int, CapGrant] = {
        c.minor: c for c in (*plan.caps, *admin_caps(which, minors, state))}
    return replace(plan, caps=tuple(merged.values()), caps_major=state.caps_major)

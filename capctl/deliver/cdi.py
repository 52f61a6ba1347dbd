"""Build the CDI (Container Device Interface) specs for the host's MIG devices and GPUs.  Pure.

Two specs, one kind (``docs/cdi.md``):

- the **main spec** names every device a container may ask a CDI-aware runtime for:
  each MIG device twice (``MIG-<uuid>`` and ``<gpu index>:<mig index>``), each whole GPU
  twice (``GPU-<uuid>`` and ``<index>``), and ``all``;
- the **management spec** (only when asked for: ``[cdi] management = true``) holds
  ``mig-config`` / ``mig-monitor``: the ``config`` / ``monitor`` capability plus every
  capability of every MIG-capable GPU, as the hook grants for ``NVIDIA_MIG_CONFIG_DEVICES=all``.
  It lists about 135 nodes per MIG GPU, and a runtime parses every spec file of a directory on
  each start that asks for any CDI device, so only those who asked for it pay for it.

Every device's nodes come from :func:`capctl.edits.edits.from_plan` of the plan that
:mod:`capctl.request.resolve` makes for the same name, so a CDI device is exactly what the hook
would give.  The layout is as lean as NVIDIA's ``nvidia-ctk cdi generate`` writes (its
``pkg/nvcdi/transform/simplify.go``): nodes that every device of a spec has (the control and
UVM nodes) go once into the spec-wide ``containerEdits``, which the runtime applies with any
device of that spec (container-device-interface pkg/cdi/cache.go ``InjectDevices``), so a
device's effective nodes are the spec-wide ones plus its own.  A node carries ``hostPath`` only
when it differs from ``path`` (the CDI specification's default, SPEC.md "deviceNodes").  Names
and the kind are checked against CDI's rules here, and a spec that breaks one is never built
(fail closed).  ``cdiVersion`` is the lowest version that has every field and name form the
spec uses.
"""

from __future__ import annotations

from capctl.edits import edits as edits_mod
from capctl.edits.edits import Edits, NodeEdit
from capctl.errors import DeviceError
from capctl.request import resolve
from capctl.request.devices import MigAdmin, parse_request

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    from capctl.driver.procfs import DriverState
    from capctl.host import Host
    from capctl.request.resolve import Plan
    from capctl.request.topology import Topology

DEFAULT_KIND = "capctl.io/mig"
DEFAULT_OUTPUT = "/var/run/cdi/capctl.io-mig.json"
#: The management devices and the capability each stands for.
ADMIN_DEVICES = (("mig-config", MigAdmin.CONFIG), ("mig-monitor", MigAdmin.MONITOR))
ADMIN_NAMES = frozenset(name for name, _which in ADMIN_DEVICES)

# CDI versions and what first needs them (container-device-interface specs-go/version.go,
# requiresV050 / requiresV060): 0.3.0 is the earliest still accepted; 0.5.0 added a device
# node's hostPath and device names starting with a digit; 0.6.0 added annotations and a "."
# in the class.  capctl writes no annotations.
EARLIEST_VERSION = "0.3.0"
HOSTPATH_VERSION = "0.5.0"
DOTTED_CLASS_VERSION = "0.6.0"

_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_ALNUM = _LETTERS | frozenset("0123456789")


def _name_error(name: str, first: frozenset[str], middle: frozenset[str]) -> str | None:
    if not name:
        return "empty"
    if name[0] not in first:
        return f"{name[0]!r} may not start it"
    if any(c not in middle for c in name[1:-1]):
        bad = next(c for c in name[1:-1] if c not in middle)
        return f"{bad!r} is not allowed"
    if len(name) > 1 and name[-1] not in _ALNUM:
        return f"{name[-1]!r} may not end it"
    return None


def check_kind(kind: str) -> tuple[str, str]:
    """``vendor/class`` -> ``(vendor, class)``; a :class:`DeviceError` if CDI refuses it.

    CDI's rules (container-device-interface pkg/parser/parser.go ValidateVendorName,
    ValidateClassName): a letter first, a letter or digit last, letters, digits, ``_``, ``-``
    and ``.`` between (``.`` in a vendor only: a class with ``.`` needs CDI 0.6.0, which
    podman 4.3 cannot read, so capctl refuses it too).  And at least two characters each:
    the v0.5.x library that podman 4.3 vendors slices ``name[1:len(name)-1]`` unguarded
    (pkg/cdi/qualified-device.go), so a one-character vendor or class panics podman.
    """
    vendor, sep, cls = kind.partition("/")
    if not sep:
        raise DeviceError(kind, "a CDI kind is VENDOR/CLASS")
    for what, part, middle in (("vendor", vendor, _ALNUM | frozenset("_-.")),
                               ("class", cls, _ALNUM | frozenset("_-"))):
        err = _name_error(part, _LETTERS, middle)
        if err is None and len(part) == 1:
            err = "one character (podman 4.3 cannot read it)"
        if err is not None:
            raise DeviceError(kind, f"invalid CDI {what} {part!r}: {err}")
    return vendor, cls


def check_device_name(name: str) -> str:
    """``name`` if CDI accepts it as a device name, else a :class:`DeviceError`.

    pkg/parser/parser.go ValidateDeviceName: a letter or digit first and last, letters,
    digits, ``_``, ``-``, ``.`` and ``:`` between.
    """
    err = _name_error(name, _ALNUM, _ALNUM | frozenset("_-.:"))
    if err is not None:
        raise DeviceError(name, f"invalid CDI device name: {err}")
    return name


def device_node(node: NodeEdit) -> dict[str, Any]:
    """One CDI ``deviceNodes`` entry.

    ``hostPath`` only when it is not ``path`` (CDI: "If not specified the value for ``path``
    is used").  ``type``, ``major``, ``minor``, ``fileMode`` and ``permissions`` always: CDI
    defines a default for none of these values that the hook's node has (an empty
    ``permissions`` means ``rwm``, an empty ``type`` makes the runtime ``stat`` the host node
    for it, pkg/cdi/container-edits_unix.go ``fillMissingInfo``; without ``fileMode`` runc
    makes the node 0666), so the spec alone says what the container gets.
    """
    out: dict[str, Any] = {"path": node.path}
    if node.host_path != node.path:
        out["hostPath"] = node.host_path
    out.update(type=node.type, major=node.major, minor=node.minor, fileMode=node.mode,
               permissions=node.access)
    return out


def common_nodes(devices: Sequence[Sequence[NodeEdit]]) -> tuple[NodeEdit, ...]:
    """The nodes for a spec's spec-wide ``containerEdits``: those every device has (the
    control and UVM nodes), in the first device's order; none for fewer than two devices.

    CDI refuses a device whose own edits are empty ("invalid device, empty device edits",
    pkg/cdi/device.go), so a device that would keep no node of its own (on a host with one
    GPU, its whole-GPU device has only nodes that every device has) gives its first node
    back to every device.
    """
    if len(devices) < 2:
        return ()
    first, *rest = devices
    others = [set(d) for d in rest]
    common = [n for n in first if all(n in o for o in others)]
    while common:
        shared = set(common)
        bare = next((d for d in devices if all(n in shared for n in d)), None)
        if bare is None:
            break
        common.remove(bare[0])
    return tuple(common)


def required_version(kind: str, names: list[str], with_host_path: bool) -> str:
    """The lowest ``cdiVersion`` with everything a spec of these names and fields uses."""
    _vendor, _sep, cls = kind.partition("/")
    if "." in cls:
        return DOTTED_CLASS_VERSION
    if with_host_path or any(n[:1].isdigit() for n in names):
        return HOSTPATH_VERSION
    return EARLIEST_VERSION


def _plan(request: str, topology: Topology, state: DriverState, host: Host) -> Plan:
    """The plan the hook makes for ``request`` (``NVIDIA_VISIBLE_DEVICES`` syntax)."""
    return resolve.resolve(parse_request(request), topology, state, host)


def named_plans(topology: Topology, state: DriverState, host: Host) -> list[tuple[str, Plan]]:
    """Every device name of the main spec and the plan the hook would make for it, in spec
    order."""
    def plan(request: str) -> Plan:
        return _plan(request, topology, state, host)

    out: list[tuple[str, Plan]] = []
    for gpu in topology.gpus:
        for mig in gpu.mig_devices:
            p = plan(mig.uuid)
            out += [(mig.uuid, p), (f"{gpu.index}:{mig.index}", p)]
    for gpu in topology.gpus:
        p = plan(gpu.uuid)
        out += [(gpu.uuid, p), (str(gpu.index), p)]
    out.append(("all", plan("all")))
    return out


def management_plans(topology: Topology, state: DriverState,
                     host: Host) -> list[tuple[str, Plan]]:
    """``mig-config`` / ``mig-monitor`` (those whose capability the driver has) and their
    plans: the hook's ``NVIDIA_MIG_{CONFIG,MONITOR}_DEVICES=all`` for every MIG GPU."""
    mig_gpus = ",".join(g.uuid for g in topology.gpus if g.mig_enabled)
    base = _plan(mig_gpus, topology, state, host) if mig_gpus else resolve.Plan()
    return [(name, resolve.with_admin(base, which, state)) for name, which in ADMIN_DEVICES
            if state.table.get(which.value) is not None]


def layout(kind: str, named: Sequence[tuple[str, Plan]], root: str) -> dict[str, Any]:
    """The spec document (JSON-ready) of ``named`` devices whose nodes live under ``root``.

    A device without nodes is left out (CDI refuses empty edits: ``all`` on a host without
    GPUs); a :class:`DeviceError` for a kind or name CDI would refuse, or a name given twice.
    """
    check_kind(kind)
    seen: set[str] = set()
    names: list[str] = []
    nodes: list[tuple[NodeEdit, ...]] = []
    for name, plan in named:
        check_device_name(name)
        if name in seen:
            raise DeviceError(name, "two CDI devices would have this name")
        seen.add(name)
        edits: Edits = edits_mod.from_plan(plan, root)
        if edits:
            names.append(name)
            nodes.append(edits.nodes)
    common = common_nodes(nodes)
    shared = set(common)
    devices = [{"name": name, "containerEdits": {
                   "deviceNodes": [device_node(n) for n in own if n not in shared]}}
               for name, own in zip(names, nodes, strict=True)]
    with_host_path = any(n.host_path != n.path for own in nodes for n in own)
    spec: dict[str, Any] = {"cdiVersion": required_version(kind, names, with_host_path),
                            "kind": kind}
    if common:
        spec["containerEdits"] = {"deviceNodes": [device_node(n) for n in common]}
    spec["devices"] = devices
    return spec


def build_spec(topology: Topology, state: DriverState, host: Host,
               kind: str = DEFAULT_KIND) -> dict[str, Any]:
    """The main CDI spec (a JSON-ready dict) for ``topology`` on ``host``.

    Raises what resolution raises (a stale topology, a node that is not the driver's) and a
    :class:`DeviceError` for a kind or name CDI would refuse, or a name given twice.
    """
    return layout(kind, named_plans(topology, state, host), str(host.root))


def build_management_spec(topology: Topology, state: DriverState, host: Host,
                          kind: str = DEFAULT_KIND) -> dict[str, Any] | None:
    """The management spec (``mig-config`` / ``mig-monitor``) of the same kind; None when it
    would have no device (a driver whose ``mig-minors`` has neither ``config`` nor
    ``monitor``)."""
    spec = layout(kind, management_plans(topology, state, host), str(host.root))
    return spec if spec["devices"] else None

"""Build a CDI (Container Device Interface) spec for the host's MIG devices and GPUs.  Pure.

The spec names every device a container may ask a CDI-aware runtime for (``docs/cdi.md``):

- each MIG device twice: ``MIG-<uuid>`` and ``<gpu index>:<mig index>``;
- each whole GPU twice: ``GPU-<uuid>`` and ``<index>``;
- ``all``: every GPU and every MIG device;
- ``mig-config`` / ``mig-monitor`` (the management devices, left out with
  ``management=False``): the ``config`` / ``monitor`` capability plus every capability of
  every MIG-capable GPU, as the hook grants for ``NVIDIA_MIG_CONFIG_DEVICES=all``.  They are
  most of the spec's size, and a runtime parses the whole spec on every start that asks for
  a CDI device (``docs/cdi.md``).

Every device's ``deviceNodes`` come from :func:`capctl.edits.edits.from_plan` of the plan that
:mod:`capctl.request.resolve` makes for the same name, so a CDI device is exactly what the hook
would give.  Names and the kind are checked against CDI's rules here, and a spec that breaks
one is never built (fail closed).  ``cdiVersion`` is the lowest version that has every field
and name form the spec uses.
"""

from __future__ import annotations

from capctl.edits import edits as edits_mod
from capctl.edits.edits import Edits, NodeEdit
from capctl.errors import DeviceError
from capctl.request import resolve
from capctl.request.devices import MigAdmin, parse_request

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from capctl.driver.procfs import DriverState
    from capctl.host import Host
    from capctl.request.resolve import Plan
    from capctl.request.topology import Topology

DEFAULT_KIND = "capctl.io/mig"
DEFAULT_OUTPUT = "/var/run/cdi/capctl.io-mig.json"
#: The management devices and the capability each stands for.
ADMIN_DEVICES = (("mig-config", MigAdmin.CONFIG), ("mig-monitor", MigAdmin.MONITOR))

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
    podman 4.3 cannot read, so capctl refuses it too).
    """
    vendor, sep, cls = kind.partition("/")
    if not sep:
        raise DeviceError(kind, "a CDI kind is VENDOR/CLASS")
    for what, part, middle in (("vendor", vendor, _ALNUM | frozenset("_-.")),
                               ("class", cls, _ALNUM | frozenset("_-"))):
        err = _name_error(part, _LETTERS, middle)
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


def device_node(node: NodeEdit, with_host_path: bool) -> dict[str, Any]:
    """One CDI ``deviceNodes`` entry: fully specified, so a runtime never stats the host."""
    out: dict[str, Any] = {"path": node.path}
    if with_host_path:
        out["hostPath"] = node.host_path
    out.update(type=node.type, major=node.major, minor=node.minor, fileMode=node.mode,
               permissions=node.access)
    return out


def required_version(kind: str, names: list[str], with_host_path: bool) -> str:
    """The lowest ``cdiVersion`` with everything a spec of these names and fields uses."""
    _vendor, _sep, cls = kind.partition("/")
    if "." in cls:
        return DOTTED_CLASS_VERSION
    if with_host_path or any(n[:1].isdigit() for n in names):
        return HOSTPATH_VERSION
    return EARLIEST_VERSION


def named_plans(topology: Topology, state: DriverState, host: Host, *,
                management: bool = True) -> list[tuple[str, Plan]]:
    """Every CDI device name and the plan the hook would make for it, in spec order
    (without the management devices when ``management`` is false)."""
    def plan(request: str) -> Plan:
        return resolve.resolve(parse_request(request), topology, state, host)

    out: list[tuple[str, Plan]] = []
    for gpu in topology.gpus:
        for mig in gpu.mig_devices:
            p = plan(mig.uuid)
            out += [(mig.uuid, p), (f"{gpu.index}:{mig.index}", p)]
    for gpu in topology.gpus:
        p = plan(gpu.uuid)
        out += [(gpu.uuid, p), (str(gpu.index), p)]
    out.append(("all", plan("all")))
    if not management:
        return out
    mig_gpus = ",".join(g.uuid for g in topology.gpus if g.mig_enabled)
    base = plan(mig_gpus) if mig_gpus else resolve.Plan()
    for name, which in ADMIN_DEVICES:
        if state.table.get(which.value) is not None:
            out.append((name, resolve.with_admin(base, which, state)))
    return out


def build_spec(topology: Topology, state: DriverState, host: Host,
               kind: str = DEFAULT_KIND, *, management: bool = True) -> dict[str, Any]:
    """The CDI spec (a JSON-ready dict) for ``topology`` on ``host``; with the management
    devices ``mig-config`` / ``mig-monitor`` unless ``management`` is false.

    Raises what resolution raises (a stale topology, a node that is not the driver's) and a
    :class:`DeviceError` for a kind or name CDI would refuse, or a name given twice.
    """
    check_kind(kind)
    root = str(host.root)
    with_host_path = root not in ("", "/")
    devices: list[dict[str, Any]] = []
    seen: set[str] = set()
    for name, plan in named_plans(topology, state, host, management=management):
        check_device_name(name)
        if name in seen:
            raise DeviceError(name, "two CDI devices would have this name")
        seen.add(name)
        edits: Edits = edits_mod.from_plan(plan, root)
        if not edits:
            continue  # CDI refuses a device without edits ("all" on a host without GPUs)
        nodes = [device_node(n, with_host_path) for n in edits.nodes]
        devices.append({"name": name, "containerEdits": {"deviceNodes": nodes}})
    version = required_version(kind, [d["name"] for d in devices], with_host_path)
    return {"cdiVersion": version, "kind": kind, "devices": devices}

"""The MIG topology: which GPUs and MIG devices exist, from a snapshot file or from NVML.

The data model (:class:`Gpu`, :class:`MigDevice`, :class:`Topology`) is the
"Topology snapshot" JSON of docs/contract.md, one field per key.  :func:`from_dict` validates that JSON strictly:
unknown or missing keys, wrong types (``true`` is not an integer), malformed UUIDs or PCI ids,
duplicate GPUs, minors, UUIDs or instances, and MIG devices on a GPU whose MIG mode is off are
all errors naming the file and the field (``gpus[6].mig_devices[1].gi``).  The hook builds
device grants from this data, so it fails closed.

:func:`load_topology` is the one way in: the snapshot when ``host.topology`` is set, NVML
otherwise.  :mod:`capctl.request.nvml` (and with it ``pynvml``) is imported only on that branch, so
importing this module stays cheap for the OCI hook: the snapshot is decoded by
:mod:`capctl._lite.jsonload` and checked by the plain string functions below (``re``, ``json`` and
``pathlib`` are about 15 ms of imports the hook does not pay; docs/hook-startup.md).
"""

from __future__ import annotations

import os

from capctl._lite import jsonload
from capctl._lite.record import Record
from capctl.errors import TopologyError, translate
from capctl.request.devices import LOWER_HEX, is_uuid, normal_pci_bus_id

TYPE_CHECKING = False
if TYPE_CHECKING:  # collections.abc imports collections (about 1 ms at every hook start)
    from collections.abc import Callable, Mapping
    from typing import Any, TypeVar

    from capctl.host import Host

    _T = TypeVar("_T")

#: Largest snapshot read.  A 32-GPU host with 7 MIG devices each is about 40 KiB.
MAX_SNAPSHOT = 1 << 20

# --- field syntax ---------------------------------------------------------------------------
# Each function accepts exactly the language of the regular expression in its docstring.

_ALNUM = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_PROFILE_CHARS = _ALNUM | frozenset(".+-")
_PRINTABLE_ASCII = frozenset(map(chr, range(0x20, 0x7F)))  # " " .. "~"
#: NVML_DEVICE_NAME_V2_BUFFER_SIZE is 96 bytes.
MAX_NAME = 96
MAX_PROFILE = 32


def _is_lower_uuid(text: str) -> bool:
    """``[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`` (as NVML prints it)."""
    return is_uuid(text, LOWER_HEX)


def is_gpu_uuid(text: str) -> bool:
    """``GPU-<lower-case uuid>``."""
    return text.startswith("GPU-") and _is_lower_uuid(text.removeprefix("GPU-"))


def is_mig_uuid(text: str) -> bool:
    """``MIG-<lower-case uuid>`` (R470+; not the older ``MIG-GPU-<uuid>/<gi>/<ci>``)."""
    return text.startswith("MIG-") and _is_lower_uuid(text.removeprefix("MIG-"))


def is_pci_bus_id(text: str) -> bool:
    """``(?:[0-9A-Fa-f]{4}|[0-9A-Fa-f]{8}):[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\\.[0-7]``: NVML's bus id
    has an 8-hex-digit domain (``nvmlPciInfo_t.busId``); sysfs prints 4 digits."""
    return normal_pci_bus_id(text) is not None


def is_product_name(text: str) -> bool:
    """``[ -~]{1,96}``: printable ASCII, as NVML's name buffer holds it."""
    return 0 < len(text) <= MAX_NAME and _PRINTABLE_ASCII.issuperset(text)


def is_profile(text: str) -> bool:
    """``[A-Za-z0-9][A-Za-z0-9.+-]{0,31}``: MIG profile names (``1g.5gb``, ``1c.3g.20gb``,
    ``1g.10gb+me``, ...; ``unknown`` when NVML gives none)."""
    return 0 < len(text) <= MAX_PROFILE and text[0] in _ALNUM and _PROFILE_CHARS.issuperset(text)

#: GPU device minors 0..253: the nvidia frontend uses 254 for nvidia-modeset and 255 for
#: nvidiactl (see capctl.simulated and the driver's nv.c).
MAX_GPU_MINOR = 253
#: Upper bounds well above any hardware (A100/H100: GI ids < 15, CI ids < 8); the exact limit
#: is whatever ``mig-minors`` lists, which resolution checks.
MAX_INSTANCE_ID = 63
MAX_INDEX = 999


class MigDevice(Record):
    """One MIG device (a compute instance inside a GPU instance)."""

    index: int  # NVML MIG device index under its GPU (the ``<gpu>:<mig>`` form)
    uuid: str  # "MIG-<uuid>"
    gi: int  # GPU instance id
    ci: int  # compute instance id within the GI
    profile: str  # "1g.5gb", "1c.3g.20gb", ...


class Gpu(Record):
    """One physical GPU."""

    index: int  # NVML index (nvidia-smi's), used by ``<gpu index>`` requests
    minor: int  # device minor: picks /dev/nvidia<minor> and gpu<minor>/... capabilities
    uuid: str  # "GPU-<uuid>"
    name: str
    pci_bus_id: str
    mig_enabled: bool
    mig_devices: tuple[MigDevice, ...] = ()


class Topology(Record):
    """Every GPU and MIG device, as one source saw them; ``source`` names it for messages."""

    gpus: tuple[Gpu, ...]
    source: str = "topology"

    def to_dict(self) -> dict[str, Any]:
        """The snapshot JSON object (docs/contract.md), keys in contract order."""
        return {
            "gpus": [
                {
                    "index": g.index,
                    "minor": g.minor,
                    "uuid": g.uuid,
                    "name": g.name,
                    "pci_bus_id": g.pci_bus_id,
                    "mig_enabled": g.mig_enabled,
                    "mig_devices": [
                        {"index": m.index, "uuid": m.uuid, "gi": m.gi, "ci": m.ci,
                         "profile": m.profile}
                        for m in g.mig_devices
                    ],
                }
                for g in self.gpus
            ]
        }

    def to_json(self) -> str:
        """The snapshot as text; :func:`parse_snapshot` accepts it back unchanged."""
        import json  # off the hook's path: only the CLI writes snapshots

        return json.dumps(self.to_dict(), indent=2) + "\n"

    def gpu_by_index(self, index: int) -> Gpu | None:
        return next((g for g in self.gpus if g.index == index), None)

    def gpu_by_uuid(self, uuid: str) -> Gpu | None:
        return next((g for g in self.gpus if g.uuid == uuid), None)

    def gpu_by_pci_bus_id(self, bus_id: str) -> Gpu | None:
        """The GPU at ``bus_id`` (:func:`~capctl.request.devices.normal_pci_bus_id` form);
        the topology's ids are compared in that form too (4- or 8-digit domains)."""
        return next((g for g in self.gpus if normal_pci_bus_id(g.pci_bus_id) == bus_id), None)

    def mig_by_uuid(self, uuid: str) -> tuple[Gpu, MigDevice] | None:
        for g in self.gpus:
            for m in g.mig_devices:
                if m.uuid == uuid:
                    return g, m
        return None


# --- strict validation ---------------------------------------------------------------------

_GPU_KEYS = ("index", "minor", "uuid", "name", "pci_bus_id", "mig_enabled", "mig_devices")
_MIG_KEYS = ("index", "uuid", "gi", "ci", "profile")


class _Checker:
    """Validates one document; every error names ``source`` and the field path."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, where: str, message: str) -> TopologyError:
        return TopologyError(f"{self.source}: {where}: {message}")

    def obj(self, value: object, where: str, keys: tuple[str, ...]) -> Mapping[str, object]:
        if not isinstance(value, dict):
            raise self.fail(where, f"expected an object, got {_kind(value)}")
        unknown = [k for k in value if k not in keys]
        if unknown:
            raise self.fail(f"{where}.{unknown[0]}" if where else unknown[0], "unknown field")
        missing = [k for k in keys if k not in value]
        if missing:
            raise self.fail(f"{where}.{missing[0]}" if where else missing[0], "missing")
        return value

    def int_(self, value: object, where: str, limit: int) -> int:
        # bool is a subclass of int: refuse it explicitly.
        if type(value) is not int:
            raise self.fail(where, f"expected an integer, got {_kind(value)}")
        if not 0 <= value <= limit:
            raise self.fail(where, f"{value} out of range 0..{limit}")
        return value

    def str_(self, value: object, where: str, valid: Callable[[str], bool], want: str) -> str:
        if not isinstance(value, str):
            raise self.fail(where, f"expected a string, got {_kind(value)}")
        if not valid(value):
            raise self.fail(where, f"{value[:80]!r} is not {want}")
        return value

    def list_(self, value: object, where: str) -> list[object]:
        if not isinstance(value, list):
            raise self.fail(where, f"expected a list, got {_kind(value)}")
        return value


def _kind(value: object) -> str:
    names: dict[type, str] = {
        bool: "a boolean", int: "an integer", float: "a number", str: "a string",
        list: "a list", dict: "an object", type(None): "null",
    }
    return names.get(type(value), type(value).__name__)


def _mig(c: _Checker, value: object, where: str) -> MigDevice:
    d = c.obj(value, where, _MIG_KEYS)
    return MigDevice(
        index=c.int_(d["index"], f"{where}.index", MAX_INDEX),
        uuid=c.str_(d["uuid"], f"{where}.uuid", is_mig_uuid, "a MIG UUID (MIG-<lower-case uuid>)"),
        gi=c.int_(d["gi"], f"{where}.gi", MAX_INSTANCE_ID),
        ci=c.int_(d["ci"], f"{where}.ci", MAX_INSTANCE_ID),
        profile=c.str_(d["profile"], f"{where}.profile", is_profile, "a MIG profile name"),
    )


def _gpu(c: _Checker, value: object, where: str) -> Gpu:
    d = c.obj(value, where, _GPU_KEYS)
    mig_enabled = d["mig_enabled"]
    if not isinstance(mig_enabled, bool):
        raise c.fail(f"{where}.mig_enabled", f"expected a boolean, got {_kind(mig_enabled)}")
    migs = c.list_(d["mig_devices"], f"{where}.mig_devices")
    devices = tuple(_mig(c, m, f"{where}.mig_devices[{i}]") for i, m in enumerate(migs))
    if devices and not mig_enabled:
        raise c.fail(f"{where}.mig_devices", "MIG devices on a GPU whose mig_enabled is false")
    _unique(c, devices, f"{where}.mig_devices", {
        "index": lambda m: m.index, "instance (gi, ci)": lambda m: (m.gi, m.ci)})
    return Gpu(
        index=c.int_(d["index"], f"{where}.index", MAX_INDEX),
        minor=c.int_(d["minor"], f"{where}.minor", MAX_GPU_MINOR),
        uuid=c.str_(d["uuid"], f"{where}.uuid", is_gpu_uuid, "a GPU UUID (GPU-<lower-case uuid>)"),
        name=c.str_(d["name"], f"{where}.name", is_product_name, "a printable product name"),
        pci_bus_id=c.str_(d["pci_bus_id"], f"{where}.pci_bus_id", is_pci_bus_id,
                          "a PCI bus id (00000000:07:00.0)"),
        mig_enabled=mig_enabled,
        mig_devices=devices,
    )


def _unique(c: _Checker, items: tuple[_T, ...], where: str,
            keys: Mapping[str, Callable[[_T], object]]) -> None:
    for what, key in keys.items():
        seen: dict[object, int] = {}
        for i, item in enumerate(items):
            k = key(item)
            if k in seen:
                raise c.fail(f"{where}[{i}]", f"{what} {k} repeats {where}[{seen[k]}]")
            seen[k] = i


def from_dict(data: object, source: str) -> Topology:
    """Validate a parsed snapshot strictly and build the :class:`Topology`."""
    c = _Checker(source)
    d = c.obj(data, "", ("gpus",))
    gpus = tuple(_gpu(c, g, f"gpus[{i}]") for i, g in enumerate(c.list_(d["gpus"], "gpus")))
    _unique(c, gpus, "gpus", {
        "index": lambda g: g.index, "minor": lambda g: g.minor, "uuid": lambda g: g.uuid,
        "pci_bus_id": lambda g: g.pci_bus_id.lower()})
    migs = [(f"gpus[{i}].mig_devices[{j}]", m.uuid) for i, g in enumerate(gpus)
            for j, m in enumerate(g.mig_devices)]
    first: dict[str, str] = {}
    for where, uuid in migs:
        if uuid in first:
            raise c.fail(f"{where}.uuid", f"{uuid} repeats {first[uuid]}.uuid")
        first[uuid] = where
    return Topology(gpus, source)


def parse_snapshot(text: str, source: str) -> Topology:
    """Parse and validate snapshot text; ``source`` names it in errors."""
    try:
        data = jsonload.loads(text)  # a repeated key or a NaN is an error there
    except jsonload.JSONError as err:
        raise TopologyError(f"{source}: not a valid JSON snapshot: {err}") from err
    return from_dict(data, source)


def load_snapshot(path: str | os.PathLike[str], limit: int = MAX_SNAPSHOT) -> Topology:
    """Read (at most ``limit`` bytes) and validate a snapshot file."""
    with translate(TopologyError, path, "cannot read topology snapshot"), open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise TopologyError(f"{path}: larger than {limit} bytes; refusing")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise TopologyError(f"{path}: not UTF-8 text (byte {err.start})") from err
    return parse_snapshot(text, os.fspath(path))


def load_topology(host: Host) -> Topology:
    """The topology capctl works with: ``host.topology`` if set, else NVML (imported here)."""
    if host.topology is not None:
        return load_snapshot(host.topology)
    from capctl.request import nvml  # deferred: pynvml loads libnvidia-ml; the hook may not need it

    return nvml.read_topology()

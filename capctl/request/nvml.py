"""The NVML topology backend (``nvidia-ml-py``'s ``pynvml`` module).

The only module that talks to NVML.  It is imported by :func:`capctl.request.topology.load_topology`
only when no snapshot is given, and it imports ``pynvml`` only inside :func:`read_topology`, so
``import capctl`` never loads ``libnvidia-ml``.  The module object can be passed in: tests give a
fake with the same surface (the functions and ``NVML_ERROR_*`` constants used below).

What is read, per the NVML API reference ("Device Queries", "Multi Instance GPU Management"):

- ``nvmlDeviceGetCount`` / ``nvmlDeviceGetHandleByIndex``: the NVML index is nvidia-smi's;
- ``nvmlDeviceGetMinorNumber``: the device minor (``/dev/nvidia<minor>``, ``gpu<minor>/...``);
- ``nvmlDeviceGetUUID``, ``nvmlDeviceGetName``, ``nvmlDeviceGetPciInfo().busId``;
- ``nvmlDeviceGetMigMode``: ``[current, pending]``; only *current* counts.  Pre-Ampere GPUs
  answer ``NVML_ERROR_NOT_SUPPORTED``: that means "MIG off", not an error;
- ``nvmlDeviceGetMaxMigDeviceCount`` then ``nvmlDeviceGetMigDeviceHandleByIndex`` for each
  index below it: indices are sparse (a destroyed instance leaves a hole), and an unused index
  answers ``NVML_ERROR_NOT_FOUND``, which is skipped (NVIDIA's go-nvlib walks MIG devices the
  same way);
- on each MIG handle ``nvmlDeviceGetGpuInstanceId``, ``nvmlDeviceGetComputeInstanceId``,
  ``nvmlDeviceGetUUID`` and ``nvmlDeviceGetName`` ("NVIDIA A100-SXM4-40GB MIG 1g.5gb", whose
  last word is the profile), and ``nvmlDeviceGetDeviceHandleFromMigDeviceHandle`` to check that
  the MIG device really belongs to the GPU it was listed under.

Every NVML error becomes a :class:`~capctl.errors.TopologyError` saying what was being read and,
for the errors a user can act on (library missing, driver not loaded, no permission, version
mismatch, lost GPU), what to do.  The result goes through the snapshot validator, so NVML data
and snapshot files obey one set of rules.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from typing import Any

from capctl.errors import TopologyError
from capctl.request.topology import Topology, from_dict

#: The ``pynvml`` module or a fake of it.  pynvml has no type hints, hence Any.
Nvml = Any

SOURCE = "NVML"

# What to tell the user for the NVML errors they can act on; the rest get NVML's own text.
_HINTS: dict[str, str] = {
    "NVML_ERROR_LIBRARY_NOT_FOUND": (
        "libnvidia-ml.so.1 not found: the NVIDIA driver's user-space libraries are not "
        "installed or not on the loader path (or pass --topology FILE)"
    ),
    "NVML_ERROR_DRIVER_NOT_LOADED": (
        "the NVIDIA kernel driver is not loaded (modprobe nvidia; or pass --topology FILE)"
    ),
    "NVML_ERROR_NO_PERMISSION": (
        "permission denied by NVML; run as root or give this user access to /dev/nvidiactl "
        "and the GPU device nodes"
    ),
    "NVML_ERROR_LIB_RM_VERSION_MISMATCH": (
        "libnvidia-ml and the loaded kernel driver are different versions; reload the driver "
        "or reboot after the driver upgrade"
    ),
    "NVML_ERROR_GPU_IS_LOST": "the GPU has fallen off the bus or is otherwise inaccessible",
    "NVML_ERROR_FUNCTION_NOT_FOUND": (
        "libnvidia-ml lacks this function; the driver is too old for MIG (R470 or newer needed)"
    ),
    "NVML_ERROR_RESET_REQUIRED": "the GPU needs a reset (nvidia-smi -r) before it can be used",
    "NVML_ERROR_UNINITIALIZED": "NVML is not initialised",
}

_MIG_NAME = re.compile(r".* MIG (?P<profile>\S+)")


def _is(nv: Nvml, err: BaseException, name: str) -> bool:
    code = getattr(nv, name, None)
    return code is not None and getattr(err, "value", None) == code


def translate(nv: Nvml, err: BaseException, doing: str) -> TopologyError:
    """Turn an ``NVMLError`` raised while *doing* something into a :class:`TopologyError`."""
    for name, hint in _HINTS.items():
        if _is(nv, err, name):
            return TopologyError(f"{SOURCE}: {doing}: {hint}")
    code = getattr(err, "value", "?")
    return TopologyError(f"{SOURCE}: {doing}: {err} (NVML error {code})")


def _call(nv: Nvml, doing: str, fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except nv.NVMLError as err:
        raise translate(nv, err, doing) from err


def _text(value: object) -> str:
    # Older pynvml releases return bytes for strings and struct fields; newer ones str.
    if isinstance(value, bytes):
        return value.decode("ascii", errors="replace")
    return str(value)


def _uuid(value: object) -> str:
    # NVML prints UUIDs in lower case; normalise so the snapshot's strict format holds.
    text = _text(value).strip()
    return text[:4] + text[4:].lower()


def _profile(mig_name: str) -> str:
    m = _MIG_NAME.fullmatch(mig_name.strip())
    return m["profile"] if m else "unknown"


def _mig_enabled(nv: Nvml, handle: Any, gpu: str) -> bool:
    try:
        current, _pending = nv.nvmlDeviceGetMigMode(handle)
    except nv.NVMLError as err:
        if _is(nv, err, "NVML_ERROR_NOT_SUPPORTED"):
            return False  # pre-Ampere GPU: no MIG at all
        raise translate(nv, err, f"reading the MIG mode of {gpu}") from err
    return bool(current == nv.NVML_DEVICE_MIG_ENABLE)


def _mig_devices(nv: Nvml, handle: Any, gpu: str, gpu_uuid: str) -> list[dict[str, Any]]:
    count = _call(nv, f"counting MIG devices of {gpu}", nv.nvmlDeviceGetMaxMigDeviceCount, handle)
    out: list[dict[str, Any]] = []
    for j in range(int(count)):
        where = f"{gpu} MIG device {j}"
        try:
            mig = nv.nvmlDeviceGetMigDeviceHandleByIndex(handle, j)
        except nv.NVMLError as err:
            if _is(nv, err, "NVML_ERROR_NOT_FOUND"):
                continue  # no MIG device at this index: indices are sparse
            raise translate(nv, err, f"opening {where}") from err
        parent = _call(nv, f"finding the parent of {where}",
                       nv.nvmlDeviceGetDeviceHandleFromMigDeviceHandle, mig)
        parent_uuid = _uuid(_call(nv, f"reading the parent UUID of {where}",
                                  nv.nvmlDeviceGetUUID, parent))
        if parent_uuid != gpu_uuid:
            raise TopologyError(
                f"{SOURCE}: {where}: belongs to {parent_uuid}, not {gpu_uuid}; refusing"
            )
        out.append({
            "index": j,
            "uuid": _uuid(_call(nv, f"reading the UUID of {where}", nv.nvmlDeviceGetUUID, mig)),
            "gi": _call(nv, f"reading the GPU instance id of {where}",
                        nv.nvmlDeviceGetGpuInstanceId, mig),
            "ci": _call(nv, f"reading the compute instance id of {where}",
                        nv.nvmlDeviceGetComputeInstanceId, mig),
            "profile": _profile(_text(_call(nv, f"reading the name of {where}",
                                            nv.nvmlDeviceGetName, mig))),
        })
    return out


def _gpu(nv: Nvml, index: int) -> dict[str, Any]:
    gpu = f"GPU {index}"
    handle = _call(nv, f"opening {gpu}", nv.nvmlDeviceGetHandleByIndex, index)
    uuid = _uuid(_call(nv, f"reading the UUID of {gpu}", nv.nvmlDeviceGetUUID, handle))
    pci = _call(nv, f"reading the PCI info of {gpu}", nv.nvmlDeviceGetPciInfo, handle)
    enabled = _mig_enabled(nv, handle, gpu)
    return {
        "index": index,
        "minor": _call(nv, f"reading the minor number of {gpu}",
                       nv.nvmlDeviceGetMinorNumber, handle),
        "uuid": uuid,
        "name": _text(_call(nv, f"reading the name of {gpu}", nv.nvmlDeviceGetName, handle)),
        "pci_bus_id": _text(pci.busId),
        "mig_enabled": enabled,
        "mig_devices": _mig_devices(nv, handle, gpu, uuid) if enabled else [],
    }


def _import() -> Nvml:
    try:
        import pynvml
    except ImportError as err:
        raise TopologyError(
            f"{SOURCE}: the nvidia-ml-py package (module pynvml) is not installed; "
            "install it or pass --topology FILE"
        ) from err
    return pynvml


def read_topology(nv: Nvml | None = None) -> Topology:
    """Read every GPU and MIG device through NVML (``nv``: pynvml or a fake of it).

    Read-only: initialises NVML, queries, shuts it down.  Raises :class:`TopologyError`.
    """
    nv = _import() if nv is None else nv
    _call(nv, "initialising", nv.nvmlInit)
    try:
        count = _call(nv, "counting GPUs", nv.nvmlDeviceGetCount)
        data = {"gpus": [_gpu(nv, i) for i in range(int(count))]}
    finally:
        # What was read stays valid; a failing shutdown must not hide it or the real error.
        with contextlib.suppress(nv.NVMLError):
            nv.nvmlShutdown()
    return from_dict(data, SOURCE)

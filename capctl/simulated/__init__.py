"""A simulated NVIDIA host: driver files, GPU nodes and a matching topology snapshot.

Modelled on the MIG User Guide's 8-GPU A100-SXM4-40GB example: a mix of GPU-instance profiles,
one GPU with several compute instances, one GPU with MIG disabled, and two GPUs whose device
minor differs from their index (as happens when the driver probes in another order than PCI
enumeration), so code that confuses the two is caught.

The big ``mig-minors`` file (4322 lines) is generated here rather than checked in.  The
``nvidia-caps`` major is 238 and the GPU majors 195/239: none is registered on a machine
without the driver, so a container that the cgroup lets open such a node gets ENXIO, and one
that it denies gets EPERM.  That is how the tests see the real kernel enforce capctl's grants.

Run ``python -m capctl.simulated DIR`` to build one.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from capctl.driver import capnames

CAPS_MAJOR = 238
FRONTEND_MAJOR = 195
UVM_MAJOR = 239
CTL_MINOR = 255
MODESET_MINOR = 254

N_GPUS = 32
N_GIS = 15
N_CIS = 8

_NS = uuid.UUID("6f1c2a52-7d3e-4a0b-9c55-2c6f0e7b1a00")


@dataclass(frozen=True)
class SimGpu:
    index: int
    minor: int
    pci: str
    #: (profile, gi, [ci ...]) per GPU instance; None means MIG disabled.
    instances: tuple[tuple[str, int, tuple[int, ...]], ...] | None


GPUS: tuple[SimGpu, ...] = (
    SimGpu(0, 0, "00000000:07:00.0", tuple(("1g.5gb", gi, (0,)) for gi in range(7, 14))),
    SimGpu(1, 1, "00000000:0F:00.0", (("3g.20gb", 1, (0, 1, 2)), ("3g.20gb", 2, (0,)))),
    SimGpu(
        2, 2, "00000000:47:00.0", (("4g.20gb", 1, (0,)), ("2g.10gb", 5, (0,)), ("1g.5gb", 13, (0,)))
    ),
    SimGpu(3, 3, "00000000:4E:00.0", (("7g.40gb", 0, (0,)),)),
    SimGpu(4, 4, "00000000:87:00.0", None),
    SimGpu(
        5,
        5,
        "00000000:90:00.0",
        (("2g.10gb", 3, (0,)), ("2g.10gb", 4, (0,)), ("2g.10gb", 5, (0,)), ("1g.5gb", 13, (0,))),
    ),
    SimGpu(6, 7, "00000000:B7:00.0", (("3g.20gb", 1, (0,)), ("3g.20gb", 2, (0,)))),
    SimGpu(7, 6, "00000000:BD:00.0", (("1g.5gb", 7, (0,)), ("1g.5gb", 8, (0,)))),
)


def gpu_uuid(gpu: SimGpu) -> str:
    return "GPU-" + str(uuid.uuid5(_NS, f"gpu{gpu.index}"))


def mig_uuid(gpu: SimGpu, gi: int, ci: int) -> str:
    return "MIG-" + str(uuid.uuid5(_NS, f"{gpu_uuid(gpu)}/{gi}/{ci}"))


def _ci_profile(gi_profile: str, n_cis: int) -> str:
    # A GI split into several CIs uses "<slices>c.<gi profile>" compute profiles.
    return gi_profile if n_cis == 1 else f"1c.{gi_profile}"


def topology() -> dict[str, Any]:
    """The snapshot (docs/contract.md, "Topology snapshot") of the simulated host."""
    gpus: list[dict[str, Any]] = []
    for gpu in GPUS:
        mig_devices: list[dict[str, Any]] = []
        for profile, gi, cis in gpu.instances or ():
            for ci in cis:
                mig_devices.append(
                    {
                        "index": len(mig_devices),
                        "uuid": mig_uuid(gpu, gi, ci),
                        "gi": gi,
                        "ci": ci,
                        "profile": _ci_profile(profile, len(cis)),
                    }
                )
        gpus.append(
            {
                "index": gpu.index,
                "minor": gpu.minor,
                "uuid": gpu_uuid(gpu),
                "name": "NVIDIA A100-SXM4-40GB",
                "pci_bus_id": gpu.pci,
                "mig_enabled": gpu.instances is not None,
                "mig_devices": mig_devices,
            }
        )
    return {"gpus": gpus}


def mig_minors_text() -> str:
    """The driver's full ``mig-minors``: config, monitor, then 32 GPUs x 15 GIs x (1 + 8 CIs)."""
    lines = ["config 1", "monitor 2"]
    minor = 3
    for gpu in range(N_GPUS):
        for gi in range(N_GIS):
            lines.append(f"{capnames.gi_name(gpu, gi)} {minor}")
            minor += 1
            for ci in range(N_CIS):
                lines.append(f"{capnames.ci_name(gpu, gi, ci)} {minor}")
                minor += 1
    return "\n".join(lines) + "\n"


#: The nvlink and sys capabilities, with their minors: ``fabric-mgmt`` first of all, and
#: ``fabric-imex-mgmt`` after the last MIG minor (``docs/driver.md``, "Minors files").
OTHER_CAPS = {"fabric-mgmt": 0, "fabric-imex-mgmt": 3 + N_GPUS * N_GIS * (1 + N_CIS)}
#: Their ``*-minors`` files.
OTHER_SOURCES = {"fabric-mgmt": capnames.Source.NVLINK, "fabric-imex-mgmt": capnames.Source.SYS}


def mig_minor(gpu: int | Mapping[str, Any], gi: int, ci: int | None = None) -> int:
    """The minor of a GI (``ci`` None) or CI capability of a GPU, given as its device minor or
    as its snapshot entry (whose ``minor`` is used, not its index)."""
    n = gpu if isinstance(gpu, int) else int(gpu["minor"])
    return minor_of(capnames.gi_name(n, gi) if ci is None else capnames.ci_name(n, gi, ci))


def minor_of(name: str) -> int:
    """The simulated driver's minor for a capability name (same layout as the driver)."""
    if name in OTHER_CAPS:
        return OTHER_CAPS[name]
    ref = capnames.parse_mig_name(name)
    if ref is None:
        raise ValueError(name)
    if ref.kind is capnames.Kind.CONFIG:
        return 1
    if ref.kind is capnames.Kind.MONITOR:
        return 2
    assert ref.gpu is not None and ref.gi is not None
    base = 3 + ref.gpu * N_GIS * (1 + N_CIS) + ref.gi * (1 + N_CIS)
    return base if ref.ci is None else base + 1 + ref.ci


_PROC_DEVICES = """Character devices:
  1 mem
  4 /dev/vc/0
  4 tty
  5 /dev/tty
  5 /dev/console
  5 /dev/ptmx
 10 misc
136 pts
{gpu}
{caps} nvidia-caps
{uvm} nvidia-uvm

Block devices:
  7 loop
{caps} blkext
"""
#: ``/proc/devices`` as drivers from 545 on write it: 195 as ``nvidia`` and ``nvidiactl``.
PROC_DEVICES = _PROC_DEVICES.format(
    gpu=f"{FRONTEND_MAJOR} nvidia\n{FRONTEND_MAJOR} nvidiactl", caps=CAPS_MAJOR, uvm=UVM_MAJOR
)
#: ... and as older drivers did: 195 as ``nvidia-frontend``.
LEGACY_PROC_DEVICES = _PROC_DEVICES.format(
    gpu=f"{FRONTEND_MAJOR} nvidia-frontend", caps=CAPS_MAJOR, uvm=UVM_MAJOR
)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def mode_of(name: str) -> int:
    """The driver's ``DeviceFileMode`` of a capability: 0400 for ``config`` and the fabric
    capabilities, 0444 for the rest (``docs/driver.md``, "Default modes")."""
    return capnames.CONFIG_MODE if name == "config" or name in OTHER_CAPS else capnames.DEFAULT_MODE


def mig_capability_names() -> list[str]:
    """Every MIG capability that exists on the simulated host (has a proc file)."""
    names = ["config", "monitor"]
    for gpu in GPUS:
        for _profile, gi, cis in gpu.instances or ():
            names.append(capnames.gi_name(gpu.minor, gi))
            names.extend(capnames.ci_name(gpu.minor, gi, ci) for ci in cis)
    return names


def capability_names() -> list[str]:
    """Every capability that exists on the simulated host (has a proc file): the MIG ones,
    then ``fabric-mgmt`` and ``fabric-imex-mgmt``."""
    return mig_capability_names() + list(OTHER_CAPS)


def write_capability_file(root: Path, name: str, *, modify: int = 1) -> Path:
    """Write (or rewrite) one capability's proc file as the driver would after allocating it:
    its minor, its default mode and ``DeviceFileModify: <modify>``."""
    source = OTHER_SOURCES.get(name, capnames.Source.MIG)
    path = root / capnames.proc_relpath(name, source)
    _write(
        path,
        f"DeviceFileMinor: {minor_of(name)}\nDeviceFileMode: {mode_of(name)}\n"
        f"DeviceFileModify: {modify}\n",
    )
    return path


def create_instance(root: Path, gpu_minor: int, gi: int, ci: int) -> None:
    """The driver's side of creating a GPU instance and a compute instance in it: their
    capability files (``DeviceFileModify: 1``, as at every allocation)."""
    for name in (capnames.gi_name(gpu_minor, gi), capnames.ci_name(gpu_minor, gi, ci)):
        write_capability_file(root, name)


def build(root: Path, *, dev_nodes: bool = True, legacy_names: bool = False) -> dict[str, Any]:
    """Write the simulated driver root under ``root``; returns the topology snapshot.

    Also writes ``root/topology.json``.  ``dev_nodes`` (needs CAP_MKNOD) creates the host's
    ``/dev/nvidia*`` GPU, control and UVM nodes.  ``legacy_names``: ``/proc/devices`` as a
    driver before 545 writes it (``nvidia-frontend``).
    """
    _write(root / "proc/devices", LEGACY_PROC_DEVICES if legacy_names else PROC_DEVICES)
    _write(root / capnames.MINORS_DIR / "mig-minors", mig_minors_text())
    _write(root / capnames.MINORS_DIR / "nvlink-minors", "fabric-mgmt 0\n")
    _write(
        root / capnames.MINORS_DIR / "sys-minors",
        f"fabric-imex-mgmt {OTHER_CAPS['fabric-imex-mgmt']}\n",
    )
    for name in capability_names():
        write_capability_file(root, name)
    topo = topology()
    for gpu in GPUS:
        _write(
            # The driver names these directories with a 4-digit domain (0000:07:00.0), where
            # NVML's bus id has 8 (00000000:07:00.0).
            root / f"proc/driver/nvidia/gpus/{gpu.pci[4:].lower()}/information",
            f"Model: \t\t NVIDIA A100-SXM4-40GB\nIRQ:   \t\t 100\nGPU UUID: \t {gpu_uuid(gpu)}\n"
            f"Video BIOS: \t 92.00.36.00.01\nBus Type: \t PCIe\nDMA Size: \t 47 bits\n"
            f"DMA Mask: \t 0x7fffffffffff\nBus Location: \t {gpu.pci[4:].lower()}\n"
            f"Device Minor: \t {gpu.minor}\nGPU Excluded:\t No\n",
        )
    _write(root / "topology.json", json.dumps(topo, indent=2) + "\n")
    dev = root / "dev"
    dev.mkdir(parents=True, exist_ok=True)
    if dev_nodes:
        nodes = [(f"nvidia{g.minor}", FRONTEND_MAJOR, g.minor) for g in GPUS]
        nodes += [
            ("nvidiactl", FRONTEND_MAJOR, CTL_MINOR),
            ("nvidia-modeset", FRONTEND_MAJOR, MODESET_MINOR),
            ("nvidia-uvm", UVM_MAJOR, 0),
            ("nvidia-uvm-tools", UVM_MAJOR, 1),
        ]
        old = os.umask(0)
        try:
            for name, major, minor in nodes:
                path = dev / name
                if not path.exists():
                    os.mknod(path, 0o020666, os.makedev(major, minor))
        finally:
            os.umask(old)
    return topo

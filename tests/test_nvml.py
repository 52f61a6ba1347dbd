"""The NVML backend against a fake of the ``pynvml`` surface it uses (injected, not patched)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import pytest

from capctl import simulated
from capctl.errors import TopologyError
from capctl.request import nvml, topology

# The NVML_ERROR_* codes as nvml.h (and pynvml) define them.
CODES = {
    "NVML_ERROR_UNINITIALIZED": 1,
    "NVML_ERROR_INVALID_ARGUMENT": 2,
    "NVML_ERROR_NOT_SUPPORTED": 3,
    "NVML_ERROR_NO_PERMISSION": 4,
    "NVML_ERROR_NOT_FOUND": 6,
    "NVML_ERROR_DRIVER_NOT_LOADED": 9,
    "NVML_ERROR_LIBRARY_NOT_FOUND": 12,
    "NVML_ERROR_FUNCTION_NOT_FOUND": 13,
    "NVML_ERROR_GPU_IS_LOST": 15,
    "NVML_ERROR_RESET_REQUIRED": 16,
    "NVML_ERROR_LIB_RM_VERSION_MISMATCH": 18,
    "NVML_ERROR_UNKNOWN": 999,
}


class FakeNVMLError(Exception):
    def __init__(self, value: int):
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return f"fake NVML error {self.value}"


@dataclass(frozen=True)
class Handle:
    gpu: int
    mig: int | None = None  # MIG device index under the GPU


@dataclass
class PciInfo:
    busId: bytes


@dataclass
class FakeNvml:
    """The pynvml functions capctl.request.nvml calls, answering from a snapshot-shaped dict.

    ``fail`` maps a function name to an error code, optionally only for one handle
    (``(name, handle)``); ``gpus[i]["pre_ampere"]`` makes GetMigMode unsupported.
    """

    snapshot: dict[str, Any] = field(default_factory=simulated.topology)
    fail: dict[Any, int] = field(default_factory=dict)
    bytes_strings: bool = False
    calls: list[str] = field(default_factory=list)
    sparse: bool = False  # put MIG devices at even indices only

    NVMLError = FakeNVMLError
    NVML_DEVICE_MIG_DISABLE = 0
    NVML_DEVICE_MIG_ENABLE = 1

    def __getattr__(self, name: str) -> Any:
        if name in CODES:
            return CODES[name]
        raise AttributeError(name)

    def _check(self, name: str, handle: Handle | None = None) -> None:
        self.calls.append(name)
        for key in (name, (name, handle)):
            if key in self.fail:
                raise FakeNVMLError(self.fail[key])

    def _str(self, text: str) -> str | bytes:
        return text.encode() if self.bytes_strings else text

    def _gpu(self, h: Handle) -> dict[str, Any]:
        gpus: list[dict[str, Any]] = self.snapshot["gpus"]
        return gpus[h.gpu]

    def _mig_at(self, h: Handle, j: int) -> dict[str, Any] | None:
        migs: list[dict[str, Any]] = self._gpu(h)["mig_devices"]
        if self.sparse:
            return migs[j // 2] if j % 2 == 0 and j // 2 < len(migs) else None
        return migs[j] if j < len(migs) else None

    def nvmlInit(self) -> None:
        self._check("nvmlInit")

    def nvmlShutdown(self) -> None:
        self._check("nvmlShutdown")

    def nvmlDeviceGetCount(self) -> int:
        self._check("nvmlDeviceGetCount")
        return len(self.snapshot["gpus"])

    def nvmlDeviceGetHandleByIndex(self, i: int) -> Handle:
        self._check("nvmlDeviceGetHandleByIndex", Handle(i))
        return Handle(i)

    def nvmlDeviceGetUUID(self, h: Handle) -> str | bytes:
        self._check("nvmlDeviceGetUUID", h)
        if h.mig is None:
            return self._str(self._gpu(h)["uuid"])
        mig = self._mig_at(h, h.mig)
        assert mig is not None
        return self._str(mig["uuid"])

    def nvmlDeviceGetMinorNumber(self, h: Handle) -> int:
        self._check("nvmlDeviceGetMinorNumber", h)
        minor: int = self._gpu(h)["minor"]
        return minor

    def nvmlDeviceGetName(self, h: Handle) -> str | bytes:
        self._check("nvmlDeviceGetName", h)
        name: str = self._gpu(h)["name"]
        if h.mig is not None:
            mig = self._mig_at(h, h.mig)
            assert mig is not None
            name = f"{name} MIG {mig['profile']}"
        return self._str(name)

    def nvmlDeviceGetPciInfo(self, h: Handle) -> PciInfo:
        self._check("nvmlDeviceGetPciInfo", h)
        return PciInfo(self._gpu(h)["pci_bus_id"].encode())

    def nvmlDeviceGetMigMode(self, h: Handle) -> list[int]:
        self._check("nvmlDeviceGetMigMode", h)
        if self._gpu(h).get("pre_ampere"):
            raise FakeNVMLError(CODES["NVML_ERROR_NOT_SUPPORTED"])
        mode = int(self._gpu(h)["mig_enabled"])
        return [mode, mode]

    def nvmlDeviceGetMaxMigDeviceCount(self, h: Handle) -> int:
        self._check("nvmlDeviceGetMaxMigDeviceCount", h)
        return 14 if self.sparse else 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, h: Handle, j: int) -> Handle:
        self._check("nvmlDeviceGetMigDeviceHandleByIndex", h)
        if self._mig_at(h, j) is None:
            raise FakeNVMLError(CODES["NVML_ERROR_NOT_FOUND"])
        return Handle(h.gpu, j)

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, h: Handle) -> Handle:
        self._check("nvmlDeviceGetDeviceHandleFromMigDeviceHandle", h)
        return Handle(h.gpu)

    def nvmlDeviceGetGpuInstanceId(self, h: Handle) -> int:
        self._check("nvmlDeviceGetGpuInstanceId", h)
        assert h.mig is not None
        mig = self._mig_at(h, h.mig)
        assert mig is not None
        gi: int = mig["gi"]
        return gi

    def nvmlDeviceGetComputeInstanceId(self, h: Handle) -> int:
        self._check("nvmlDeviceGetComputeInstanceId", h)
        assert h.mig is not None
        mig = self._mig_at(h, h.mig)
        assert mig is not None
        ci: int = mig["ci"]
        return ci


def _expected() -> topology.Topology:
    return topology.from_dict(simulated.topology(), nvml.SOURCE)


def test_reads_simulated_topology() -> None:
    fake = FakeNvml()
    assert nvml.read_topology(fake) == _expected()
    assert fake.calls[0] == "nvmlInit" and fake.calls[-1] == "nvmlShutdown"


def test_minor_differs_from_index() -> None:
    topo = nvml.read_topology(FakeNvml())
    assert (topo.gpus[6].index, topo.gpus[6].minor) == (6, 7)
    assert (topo.gpus[7].index, topo.gpus[7].minor) == (7, 6)


def test_bytes_from_older_pynvml() -> None:
    assert nvml.read_topology(FakeNvml(bytes_strings=True)) == _expected()


def test_sparse_mig_indices_skip_not_found() -> None:
    topo = nvml.read_topology(FakeNvml(sparse=True))
    assert [m.index for m in topo.gpus[0].mig_devices] == [0, 2, 4, 6, 8, 10, 12]
    assert [m.gi for m in topo.gpus[0].mig_devices] == list(range(7, 14))


def test_uuid_upper_case_normalised() -> None:
    snap = simulated.topology()
    snap["gpus"][0]["uuid"] = "GPU-" + snap["gpus"][0]["uuid"][4:].upper()
    topo = nvml.read_topology(FakeNvml(snapshot=snap))
    assert topo.gpus[0].uuid == simulated.topology()["gpus"][0]["uuid"]


def test_pre_ampere_not_supported_means_mig_off() -> None:
    snap = simulated.topology()
    snap["gpus"][4]["pre_ampere"] = True
    fake = FakeNvml(snapshot=snap)
    topo = nvml.read_topology(fake)
    assert not topo.gpus[4].mig_enabled


def test_unknown_profile_name() -> None:
    snap = copy.deepcopy(simulated.topology())
    fake = FakeNvml(snapshot=snap)
    real_name = fake.nvmlDeviceGetName

    def name(h: Handle) -> str | bytes:
        return "Odd name" if h.mig is not None else real_name(h)

    fake.nvmlDeviceGetName = name  # type: ignore[method-assign]
    topo = nvml.read_topology(fake)
    assert topo.gpus[0].mig_devices[0].profile == "unknown"


def test_parent_mismatch_refused() -> None:
    fake = FakeNvml()
    fake.nvmlDeviceGetDeviceHandleFromMigDeviceHandle = (  # type: ignore[method-assign]
        lambda h: Handle((h.gpu + 1) % 8))
    with pytest.raises(TopologyError, match="GPU 0 MIG device 0: belongs to GPU-"):
        nvml.read_topology(fake)


def test_invalid_data_from_nvml_is_refused() -> None:
    snap = simulated.topology()
    snap["gpus"][1]["minor"] = snap["gpus"][0]["minor"]
    with pytest.raises(TopologyError, match=r"NVML: gpus\[1\]: minor 0 repeats"):
        nvml.read_topology(FakeNvml(snapshot=snap))


ERRORS = [
    # (id, failing call, code, expected text)
    ("library not found", "nvmlInit", "NVML_ERROR_LIBRARY_NOT_FOUND",
     "NVML: initialising: libnvidia-ml.so.1 not found"),
    ("driver not loaded", "nvmlInit", "NVML_ERROR_DRIVER_NOT_LOADED",
     "NVML: initialising: the NVIDIA kernel driver is not loaded"),
    ("no permission on init", "nvmlInit", "NVML_ERROR_NO_PERMISSION",
     "NVML: initialising: permission denied"),
    ("version mismatch", "nvmlInit", "NVML_ERROR_LIB_RM_VERSION_MISMATCH",
     "different versions"),
    ("no permission on minor", ("nvmlDeviceGetMinorNumber", Handle(3)), "NVML_ERROR_NO_PERMISSION",
     "NVML: reading the minor number of GPU 3: permission denied"),
    ("gpu lost", ("nvmlDeviceGetHandleByIndex", Handle(2)), "NVML_ERROR_GPU_IS_LOST",
     "NVML: opening GPU 2: the GPU has fallen off the bus"),
    ("old driver", "nvmlDeviceGetMaxMigDeviceCount", "NVML_ERROR_FUNCTION_NOT_FOUND",
     "NVML: counting MIG devices of GPU 0: libnvidia-ml lacks this function"),
    ("reset required", ("nvmlDeviceGetUUID", Handle(1)), "NVML_ERROR_RESET_REQUIRED",
     "NVML: reading the UUID of GPU 1: the GPU needs a reset"),
    ("mig mode other error", ("nvmlDeviceGetMigMode", Handle(5)), "NVML_ERROR_UNKNOWN",
     "NVML: reading the MIG mode of GPU 5: fake NVML error 999 (NVML error 999)"),
    ("mig handle other error", ("nvmlDeviceGetMigDeviceHandleByIndex", Handle(1)),
     "NVML_ERROR_INVALID_ARGUMENT", "NVML: opening GPU 1 MIG device 0: fake NVML error 2"),
    ("gi id", ("nvmlDeviceGetGpuInstanceId", Handle(0, 3)), "NVML_ERROR_NO_PERMISSION",
     "NVML: reading the GPU instance id of GPU 0 MIG device 3: permission denied"),
    ("ci id", ("nvmlDeviceGetComputeInstanceId", Handle(1, 2)), "NVML_ERROR_UNKNOWN",
     "NVML: reading the compute instance id of GPU 1 MIG device 2"),
    ("count", "nvmlDeviceGetCount", "NVML_ERROR_UNINITIALIZED",
     "NVML: counting GPUs: NVML is not initialised"),
]


@pytest.mark.parametrize(("call", "code", "text"), [(c, k, t) for _, c, k, t in ERRORS],
                         ids=[i for i, _, _, _ in ERRORS])
def test_error_mapping(call: Any, code: str, text: str) -> None:
    fake = FakeNvml(fail={call: CODES[code]})
    with pytest.raises(TopologyError) as info:
        nvml.read_topology(fake)
    assert text in str(info.value)
    assert isinstance(info.value.__cause__, FakeNVMLError)
    if call != "nvmlInit":
        assert fake.calls[-1] == "nvmlShutdown"  # shut down even after a failure


def test_shutdown_failure_does_not_hide_result() -> None:
    fake = FakeNvml(fail={"nvmlShutdown": CODES["NVML_ERROR_UNKNOWN"]})
    assert nvml.read_topology(fake) == _expected()


def test_pynvml_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    # The one place a global is patched: make "import pynvml" fail as on a host without it.
    import sys

    monkeypatch.setitem(sys.modules, "pynvml", None)
    with pytest.raises(TopologyError, match=r"nvidia-ml-py package .* is not installed"):
        nvml.read_topology()


def test_translate_keeps_unknown_codes() -> None:
    err = nvml.translate(FakeNvml(), FakeNVMLError(12345), "doing x")
    assert str(err) == "NVML: doing x: fake NVML error 12345 (NVML error 12345)"


def test_installed_pynvml_has_the_surface_the_fake_stands_in_for() -> None:
    """The fake is only as good as its likeness: every function, constant and error code it
    answers for must exist, with the same values, in the nvidia-ml-py that is installed.  This
    is what holds the lower bound in pyproject.toml to a release capctl can actually call."""
    import pynvml

    functions = sorted(n for n in vars(FakeNvml) if n.startswith("nvml"))
    assert "nvmlDeviceGetMigDeviceHandleByIndex" in functions  # the list is not empty
    missing = [n for n in functions if not callable(getattr(pynvml, n, None))]
    assert not missing, f"pynvml lacks {missing}"
    assert issubclass(pynvml.NVMLError, Exception)
    assert (pynvml.NVML_DEVICE_MIG_DISABLE, pynvml.NVML_DEVICE_MIG_ENABLE) == (
        FakeNvml.NVML_DEVICE_MIG_DISABLE, FakeNvml.NVML_DEVICE_MIG_ENABLE)
    codes = {name: getattr(pynvml, name, None) for name in CODES}
    assert codes == CODES
    # Every error capctl explains is one the fake (and so pynvml) defines.
    assert set(nvml._HINTS) <= set(CODES)

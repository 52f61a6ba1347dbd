"""Reading the driver's files from a root: missing files, cross-checks, existence."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from capctl import simulated
from capctl.driver import procfs
from capctl.errors import DriverError, ParseError
from capctl.host import Host
from tests.support.source import CAPCTL_PATH
from tests.test_caps import HOOK_STDLIB, imports_of


def test_load_simulated(sim_host: Host) -> None:
    state = procfs.load(sim_host)
    assert state.majors.caps == 238
    assert len(state.table) == 4322 + 2  # mig + nvlink + sys
    assert set(state.existing) == set(simulated.capability_names())
    assert state.existing["config"].mode == 0o400


def test_missing_proc_devices(sim_host: Host, sim_root: Path) -> None:
    (sim_root / "proc/devices").unlink()
    with pytest.raises(DriverError, match="proc/devices: missing"):
        procfs.load(sim_host)


def test_missing_mig_minors_is_driver_not_loaded(sim_host: Host, sim_root: Path) -> None:
    (sim_root / "proc/driver/nvidia-caps/mig-minors").unlink()
    with pytest.raises(DriverError, match="mig-minors: missing; the nvidia driver is not loaded"):
        procfs.load(sim_host)


def test_missing_optional_minors_files(sim_host: Host, sim_root: Path) -> None:
    (sim_root / "proc/driver/nvidia-caps/nvlink-minors").unlink()
    (sim_root / "proc/driver/nvidia-caps/sys-minors").unlink()
    assert len(procfs.load(sim_host).table) == 4322


def test_no_caps_major(sim_host: Host, sim_root: Path) -> None:
    (sim_root / "proc/devices").write_text("Character devices:\n195 nvidia-frontend\n")
    with pytest.raises(DriverError, match="no 'nvidia-caps' character major"):
        procfs.load(sim_host)


def test_capability_file_minor_disagrees(sim_host: Host, sim_root: Path) -> None:
    path = sim_root / "proc/driver/nvidia/capabilities/gpu0/mig/gi7/access"
    path.write_text("DeviceFileMinor: 4\nDeviceFileMode: 292\nDeviceFileModify: 1\n")
    with pytest.raises(
        ParseError, match=r"gi7/access: DeviceFileMinor 4 disagrees with mig-minors"
    ):
        procfs.load(sim_host)


def test_capability_file_not_in_minors(sim_host: Host, sim_root: Path) -> None:
    path = sim_root / "proc/driver/nvidia/capabilities/gpu40/mig/gi0/access"
    path.parent.mkdir(parents=True)
    path.write_text("DeviceFileMinor: 9999\nDeviceFileMode: 292\nDeviceFileModify: 1\n")
    with pytest.raises(ParseError, match="not listed in mig-minors"):
        procfs.load(sim_host)


def test_malformed_capability_file_names_the_file(sim_host: Host, sim_root: Path) -> None:
    path = sim_root / "proc/driver/nvidia/capabilities/mig/config"
    path.write_text("DeviceFileMinor: 1\nDeviceFileMode: rw\nDeviceFileModify: 1\n")
    with pytest.raises(ParseError) as exc:
        procfs.load(sim_host)
    assert str(exc.value).startswith(f"{path}:2:")


def test_oversized_minors_file_refused(sim_host: Host, sim_root: Path) -> None:
    (sim_root / "proc/driver/nvidia-caps/mig-minors").write_text("config 1\n" * 200_000)
    with pytest.raises(ParseError, match="larger than"):
        procfs.load(sim_host)


def test_binary_minors_file_refused(sim_host: Host, sim_root: Path) -> None:
    (sim_root / "proc/driver/nvidia-caps/mig-minors").write_bytes(b"config 1\n\xff\n")
    with pytest.raises(ParseError, match="not ASCII"):
        procfs.load(sim_host)


def test_unrelated_files_in_capabilities_dir_are_ignored(sim_host: Host, sim_root: Path) -> None:
    (sim_root / "proc/driver/nvidia/capabilities/README").write_text("hello")
    assert "config" in procfs.load(sim_host).existing


def test_nvlink_capability_exists(sim_host: Host, sim_root: Path) -> None:
    path = sim_root / "proc/driver/nvidia-nvlink/capabilities/fabric-mgmt"
    path.parent.mkdir(parents=True, exist_ok=True)  # the simulated host has it already
    path.write_text("DeviceFileMinor: 0\nDeviceFileMode: 256\nDeviceFileModify: 1\n")
    assert procfs.load(sim_host).existing["fabric-mgmt"].minor == 0


# --- lazy load (the hook) ------------------------------------------------------------------


def test_lazy_load_answers_like_the_full_load(sim_host: Host) -> None:
    full = procfs.load(sim_host)
    lazy = procfs.load(sim_host, lazy=True)
    for name in ("config", "gpu0/gi7/access", "gpu0/gi7/ci0/access", "gpu7/gi2/access"):
        assert lazy.table.get(name) == full.table.get(name)
        assert lazy.existing.get(name) == full.existing.get(name)
    assert lazy.table.get("fabric-mgmt") == full.table.get("fabric-mgmt")  # nvlink: full parse
    assert dict(lazy.existing) == dict(full.existing)  # iterating: full walk
    assert len(lazy.table) == len(full.table)


def test_lazy_load_reads_only_what_it_is_asked(sim_host: Host, sim_root: Path) -> None:
    # A broken line elsewhere in mig-minors, and a broken capability file of another
    # instance, do not concern a lookup of gpu0/gi7 (the full load refuses both).
    minors = sim_root / "proc/driver/nvidia-caps/mig-minors"
    minors.write_text(minors.read_text() + "gpu99/gi0/access x\n")
    (sim_root / "proc/driver/nvidia/capabilities/mig/config").write_text("junk\n")
    lazy = procfs.load(sim_host, lazy=True)
    cap = lazy.table.get("gpu0/gi7/access")
    assert cap is not None and lazy.existing.get(cap.name) is not None
    with pytest.raises(ParseError):
        procfs.load(sim_host)


def test_lazy_load_still_cross_checks_what_it_reads(sim_host: Host, sim_root: Path) -> None:
    path = sim_root / "proc/driver/nvidia/capabilities/gpu0/mig/gi7/access"
    path.write_text("DeviceFileMinor: 4\nDeviceFileMode: 292\nDeviceFileModify: 1\n")
    lazy = procfs.load(sim_host, lazy=True)
    with pytest.raises(ParseError, match="DeviceFileMinor 4 disagrees with mig-minors"):
        lazy.existing.get("gpu0/gi7/access")


def test_importing_driver_loads_only_what_the_hook_may() -> None:
    added = imports_of("capctl.driver.procfs")
    assert {"capctl.driver.procfs", "capctl.driver.capnames", "capctl.host"} <= added
    assert sorted(m for m in added if not m.startswith("capctl") and m not in HOOK_STDLIB) == []


def test_lazy_load_uses_only_what_the_hook_may(sim_root: Path) -> None:
    # The hook's whole use of the driver: load lazily, look up and read two capabilities.
    code = f"""
import sys
sys.path.insert(0, {CAPCTL_PATH!r})
before = set(sys.modules)
from capctl.driver import procfs
from capctl.host import Host
state = procfs.load(Host({str(sim_root)!r}), lazy=True)
for name in ("gpu0/gi7/access", "gpu0/gi7/ci0/access"):
    cap = state.table.get(name)
    assert cap is not None and state.existing.get(name).minor == cap.minor, name
assert state.majors.caps == 238
print(*sorted(set(sys.modules) - before))
"""
    res = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=False
    )
    assert res.returncode == 0, res.stderr[-2000:]
    added = set(res.stdout.split())
    assert "capctl.driver.procfs" in added
    assert sorted(m for m in added if not m.startswith("capctl") and m not in HOOK_STDLIB) == []


@pytest.mark.parametrize("lazy", [False, True])
def test_missing_mig_minors_either_way(sim_host: Host, sim_root: Path, lazy: bool) -> None:
    (sim_root / "proc/driver/nvidia-caps/mig-minors").unlink()
    with pytest.raises(DriverError, match="mig-minors: missing"):
        procfs.load(sim_host, lazy=lazy)


# --- the capabilities tree walk --------------------------------------------------------------


def test_symlinked_capability_directory_is_not_entered(
    sim_host: Host, sim_root: Path, tmp_path: Path
) -> None:
    # Like os.walk: a link to a directory is not followed (its files are not capabilities).
    elsewhere = tmp_path / "elsewhere/mig/gi9"
    elsewhere.mkdir(parents=True)
    minor = simulated.minor_of("gpu20/gi9/access")
    (elsewhere / "access").write_text(
        f"DeviceFileMinor: {minor}\nDeviceFileMode: 292\nDeviceFileModify: 1\n"
    )
    (sim_root / "proc/driver/nvidia/capabilities/gpu20").symlink_to(tmp_path / "elsewhere")
    assert "gpu20/gi9/access" not in procfs.load(sim_host).existing
    (sim_root / "proc/driver/nvidia/capabilities/gpu20").unlink()
    (tmp_path / "elsewhere").rename(sim_root / "proc/driver/nvidia/capabilities/gpu20")
    assert "gpu20/gi9/access" in procfs.load(sim_host).existing


def test_capabilities_tree_walk_finds_every_file(sim_host: Host, sim_root: Path) -> None:
    base = sim_root / "proc/driver/nvidia/capabilities"
    on_disk = {str(p) for p in base.rglob("*") if p.is_file()}
    nvlink = str(sim_root / "proc/driver/nvidia-nvlink/capabilities/fabric-mgmt")
    found = procfs._existing_mig(sim_host, procfs.load_table(sim_host))
    assert set(found.values()) == on_disk | {nvlink}
    assert found["gpu0/gi7/ci0/access"] == str(base / "gpu0/mig/gi7/ci0/access")


def test_no_capabilities_directory_means_none_exist(sim_host: Host, sim_root: Path) -> None:
    import shutil

    shutil.rmtree(sim_root / "proc/driver/nvidia/capabilities")
    shutil.rmtree(sim_root / "proc/driver/nvidia-nvlink/capabilities")
    assert dict(procfs.load(sim_host).existing) == {}


def test_capabilities_path_not_a_directory_is_an_error(sim_host: Host, sim_root: Path) -> None:
    import shutil

    base = sim_root / "proc/driver/nvidia/capabilities"
    shutil.rmtree(base)
    base.write_text("not a directory\n")
    with pytest.raises(DriverError, match="capabilities: cannot read"):
        procfs.load(sim_host)


@pytest.mark.parametrize("legacy", [False, True], ids=["545-on", "before-545"])
def test_simulated_host_with_either_gpu_major_name(tmp_path: Path, legacy: bool) -> None:
    from capctl import doctor

    simulated.build(tmp_path, dev_nodes=False, legacy_names=legacy)
    text = (tmp_path / "proc/devices").read_text()
    assert ("195 nvidia-frontend" in text) == legacy
    assert ("195 nvidia\n195 nvidiactl\n" in text) == (not legacy)
    host = Host(root=tmp_path)
    assert procfs.load(host).majors.frontend == 195
    assert doctor.check_driver(host)[0].what == "nvidia driver loaded (GPU major 195)"


def test_simulated_fabric_proc_files_and_gpu_directories(sim_root: Path) -> None:
    for rel in ("proc/driver/nvidia-nvlink/capabilities/fabric-mgmt",
                "proc/driver/nvidia/capabilities/fabric-imex-mgmt"):
        assert "DeviceFileMode: 256\n" in (sim_root / rel).read_text()
    gpus = sorted(p.name for p in (sim_root / "proc/driver/nvidia/gpus").iterdir())
    assert gpus[0] == "0000:07:00.0" and all(len(name) == 12 for name in gpus)


def test_sys_capability_with_a_slash_is_found(sim_host: Host, sim_root: Path) -> None:
    minors = sim_root / "proc/driver/nvidia-caps/sys-minors"
    minors.write_text(minors.read_text() + "imex/channel-0 5000\n")
    path = sim_root / "proc/driver/nvidia/capabilities/imex/channel-0"
    path.parent.mkdir()
    path.write_text("DeviceFileMinor: 5000\nDeviceFileMode: 256\nDeviceFileModify: 1\n")
    assert procfs.load(sim_host).existing["imex/channel-0"].mode == 0o400


def test_missing_mig_minors_hint_names_no_module_parameter(sim_host: Host, sim_root: Path) -> None:
    (sim_root / "proc/driver/nvidia-caps/mig-minors").unlink()
    with pytest.raises(DriverError) as exc:
        procfs.load(sim_host)
    assert "nv_cap_enable_devfs" not in str(exc.value)
    assert "older than R450" in str(exc.value) and "--root" in str(exc.value)


def test_mig_minor_names_the_gpu_by_device_minor() -> None:
    """The one helper the end-to-end tests use for a GI's or CI's capability minor: GPU 6 of
    the simulated host has device minor 7, and the minor is the driver's table's."""
    gpu6 = simulated.topology()["gpus"][6]
    assert gpu6["index"] == 6 and gpu6["minor"] == 7
    assert simulated.mig_minor(gpu6, 1) == simulated.mig_minor(7, 1) == simulated.minor_of(
        "gpu7/gi1/access")
    assert simulated.mig_minor(0, 7, 0) == 67  # as `capctl resolve 0:0` shows

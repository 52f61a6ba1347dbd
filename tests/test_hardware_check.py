"""scripts/hardware_check.py on the simulated host: it passes where capctl and the driver
agree, and each check fails when they do not (a capctl that lies, a node it would widen, an
nvidia-smi that names other devices)."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

from .conftest import IS_ROOT

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "hardware_check.py"
CAPCTL = str(Path(sys.executable).parent / "capctl")


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("hardware_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["hardware_check"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


hw = _load()

#: nvidia-smi -L as NVIDIA documents it: a GPU line, then its MIG devices indented.
SMI_SAMPLE = """\
GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77)
  MIG 3g.20gb     Device  0: (UUID: MIG-0c757cd7-e942-5726-a0b8-0e8fb7067135)
  MIG 2g.10gb     Device  1: (UUID: MIG-a7b0c8a4-5f9e-5c54-9a11-6a8e3b1e2d4f)
GPU 1: Tesla V100-SXM2-16GB (UUID: GPU-1a2b3c4d-0000-1111-2222-333344445555)
"""


def smi_of(topology: dict[str, object]) -> str:
    """What nvidia-smi -L prints for a topology snapshot."""
    lines = []
    for g in topology["gpus"]:  # type: ignore[attr-defined]
        lines.append(f"GPU {g['index']}: {g['name']} (UUID: {g['uuid']})")
        lines += [f"  MIG {m['profile']:<12}Device {m['index']:>2}: (UUID: {m['uuid']})"
                  for m in g["mig_devices"]]
    return "\n".join(lines) + "\n"


@pytest.fixture
def host(sim_root: Path, tmp_path: Path) -> list[str]:
    """hardware_check's arguments for the simulated host, its nodes made when root."""
    if IS_ROOT:
        import subprocess

        subprocess.run([CAPCTL, "--root", str(sim_root), "--config", str(tmp_path / "c.toml"),
                        "sync"], check=True, capture_output=True)
    smi = tmp_path / "smi.txt"
    smi.write_text(smi_of(json.loads((sim_root / "topology.json").read_text())))
    return ["--root", str(sim_root), "--topology", str(sim_root / "topology.json"),
            "--smi-output", str(smi)]


def verdicts(out: str) -> dict[str, str]:
    found = {}
    for line in out.splitlines():
        if line.startswith("[") and "]" in line:
            level, _sep, rest = line[1:].partition("]")
            found[rest.strip().split(":")[0]] = level.strip()
    return found


def test_parse_smi() -> None:
    gpus = hw.parse_smi(SMI_SAMPLE)
    assert [(g.index, g.uuid) for g in gpus] == [
        (0, "GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77"),
        (1, "GPU-1a2b3c4d-0000-1111-2222-333344445555"),
    ]
    assert gpus[0].migs == {0: "MIG-0c757cd7-e942-5726-a0b8-0e8fb7067135",
                            1: "MIG-a7b0c8a4-5f9e-5c54-9a11-6a8e3b1e2d4f"}
    assert gpus[1].migs == {}
    with pytest.raises(hw.CheckError, match="cannot read the line"):
        hw.parse_smi("No devices were found\n")


def test_capability_files() -> None:
    assert hw.capability_file("/", "gpu3/gi2/ci1/access") == Path(
        "/proc/driver/nvidia/capabilities/gpu3/mig/gi2/ci1/access")
    assert hw.capability_file("/r", "monitor") == Path("/r/proc/driver/nvidia/capabilities/mig/monitor")
    assert hw.capability_file("/", "fabric-mgmt") == Path(
        "/proc/driver/nvidia-nvlink/capabilities/fabric-mgmt")
    assert hw.capability_file("/", "fabric-imex-mgmt") == Path(
        "/proc/driver/nvidia/capabilities/fabric-imex-mgmt")


def test_agrees_on_the_simulated_host(host: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert hw.main(["--capctl", CAPCTL, *host]) == 0
    out = capsys.readouterr().out
    assert verdicts(out) == {"doctor": "ok", "list": "ok", "topology": "ok", "resolve": "ok",
                             "sync": "ok"}, out
    assert "8 GPUs, 23 MIG devices, as nvidia-smi -L" in out
    assert out.rstrip().endswith("hardware-check: capctl agrees with the driver")


def test_other_devices_in_nvidia_smi_fail(host: list[str], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    smi = tmp_path / "smi.txt"
    text = smi.read_text()
    first_mig = text.split("(UUID: MIG-", 1)[1].split(")", 1)[0]
    smi.write_text(text.replace(first_mig, "00000000-0000-0000-0000-000000000000"))
    assert hw.main(["--capctl", CAPCTL, *host]) == 1
    out = capsys.readouterr().out
    assert verdicts(out)["topology"] == "FAIL" and verdicts(out)["resolve"] == "FAIL", out
    assert "MIG-00000000-0000-0000-0000-000000000000: capctl resolve --json " in out
    assert "0:0: resolved to MIG-" in out  # capctl's 0:0 is not what nvidia-smi calls it


def test_a_capctl_that_lies_fails(host: list[str], tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    """list drops one capability and calls a missing node 'ok'; resolve names a wrong CI."""
    liar = tmp_path / "capctl"
    liar.write_text(f"""#!{sys.executable}
import json, subprocess, sys
res = subprocess.run([{CAPCTL!r}, *sys.argv[1:]], capture_output=True, text=True)
out = res.stdout
if "list" in sys.argv:
    caps = [c for c in json.loads(out) if c["name"] != "gpu1/gi3/access"]
    for c in caps:
        if c["name"] == "gpu7/gi14/ci7/access":
            c["node"] = "ok"
    out = json.dumps(caps)
if "resolve" in sys.argv:
    devs = json.loads(out)
    for d in devs:
        if d["caps"]:
            d["caps"][1]["name"] = d["caps"][1]["name"].replace("/ci", "/ci9")
    out = json.dumps(devs)
sys.stdout.write(out)
sys.stderr.write(res.stderr)
sys.exit(res.returncode)
""")
    liar.chmod(0o755)
    assert hw.main(["--capctl", str(liar), *host]) == 1
    out = capsys.readouterr().out
    got = verdicts(out)
    assert got["list"] == "FAIL" and got["resolve"] == "FAIL" and got["doctor"] == "ok", out
    assert "gpu1/gi3/access: in mig-minors, not listed" in out
    assert "gpu7/gi14/ci7/access: listed node 'ok', but" in out


@pytest.mark.skipif(not IS_ROOT, reason="needs root (mknod)")
def test_a_repair_that_widens_fails(host: list[str], sim_root: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    """A GI node the admin narrowed to 0400: sync would put the driver's 0444 back."""
    from capctl import simulated

    node = sim_root / f"dev/nvidia-caps/nvidia-cap{simulated.minor_of('gpu0/gi7/access')}"
    os.chmod(node, 0o400)
    assert hw.main(["--capctl", CAPCTL, *host]) == 1
    out = capsys.readouterr().out
    assert verdicts(out)["sync"] == "FAIL", out
    assert f"{node}: would gain mode bits 0044 (mode 0400, want 0444)" in out


def test_sync_counts_without_widening(host: list[str], sim_root: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A node that is missing is created, never reported as widening."""
    from capctl import simulated

    node = sim_root / f"dev/nvidia-caps/nvidia-cap{simulated.minor_of('gpu0/gi7/ci0/access')}"
    node.unlink(missing_ok=True)
    assert hw.main(["--capctl", CAPCTL, *host]) == 0
    out = capsys.readouterr().out
    assert verdicts(out)["sync"] == "ok", out
    assert "would create " in out and "widening none" in out

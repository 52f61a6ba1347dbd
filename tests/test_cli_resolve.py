"""``capctl resolve`` and ``capctl topology`` through click's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from capctl import simulated
from capctl.cli import cli

GPUS = simulated.topology()["gpus"]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    simulated.build(r, dev_nodes=False)
    return r


def invoke(root: Path, *args: str, topology: Path | None = None) -> tuple[int, str, str]:
    snap = topology if topology is not None else root / "topology.json"
    result = CliRunner().invoke(cli, ["--root", str(root), "--topology", str(snap), *args],
                                env={"CAPCTL_ROOT": None, "CAPCTL_TOPOLOGY": None})
    return result.exit_code, result.stdout, result.stderr


def test_resolve_json_contract(root: Path) -> None:
    code, out, err = invoke(root, "resolve", "6:1, 6:1, 4", "--json")
    assert (code, err) == (0, "")
    mig, whole = json.loads(out)
    assert list(mig) == ["uuid", "gpu_uuid", "gpu_minor", "gi", "ci", "caps", "device_nodes"]
    assert (mig["gpu_minor"], mig["gi"], mig["ci"]) == (7, 2, 0)
    assert mig["uuid"] == GPUS[6]["mig_devices"][1]["uuid"]
    assert [c["name"] for c in mig["caps"]] == ["gpu7/gi2/access", "gpu7/gi2/ci0/access"]
    minor = simulated.minor_of("gpu7/gi2/access")
    assert mig["caps"][0] == {"name": "gpu7/gi2/access", "minor": minor,
                              "path": f"/dev/nvidia-caps/nvidia-cap{minor}"}
    assert (whole["uuid"], whole["gi"], whole["ci"], whole["caps"]) == (GPUS[4]["uuid"], None,
                                                                        None, [])


def test_resolve_table(root: Path) -> None:
    code, out, _ = invoke(root, "resolve", GPUS[7]["mig_devices"][0]["uuid"])
    assert code == 0
    header, row = out.splitlines()
    assert header.split()[:5] == ["UUID", "GPU", "MINOR", "GI", "CI"]
    assert row.split()[:5] == [GPUS[7]["mig_devices"][0]["uuid"], "7", "6", "7", "0"]
    assert "gpu6/gi7/ci0/access=" in row


def test_resolve_none_is_empty(root: Path) -> None:
    code, out, _ = invoke(root, "resolve", "none", "--json")
    assert (code, json.loads(out)) == (0, [])


ERRORS = [
    ("bad token", "0,/dev/nvidia0", "'/dev/nvidia0': looks like a path"),
    ("unknown uuid", "MIG-00000000-0000-0000-0000-000000000000",
     "'MIG-00000000-0000-0000-0000-000000000000': no such device in the topology"),
    ("all inside a list", "0,ALL", "'ALL': 'ALL' must be the whole value"),
]


@pytest.mark.parametrize(("value", "message"), [(v, m) for _, v, m in ERRORS],
                         ids=[i for i, _, _ in ERRORS])
def test_resolve_errors(root: Path, value: str, message: str) -> None:
    code, out, err = invoke(root, "resolve", value)
    assert code == 1 and out == ""
    assert err.startswith("capctl: error: ") and message in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_resolve_stale(root: Path) -> None:
    (root / "proc/driver/nvidia/capabilities/gpu7/mig/gi1/access").unlink()
    code, _, err = invoke(root, "resolve", "6:0")
    assert code == 1 and "stale topology" in err


def test_topology_json_round_trip(root: Path, tmp_path: Path) -> None:
    code, out, _ = invoke(root, "topology", "--json")
    assert code == 0
    assert json.loads(out) == simulated.topology()
    again = tmp_path / "again.json"
    again.write_text(out)
    code2, out2, _ = invoke(root, "topology", "--json", topology=again)
    assert (code2, out2) == (0, out)
    # ... and resolution through the re-read snapshot gives the same answer.
    assert invoke(root, "resolve", "all", "--json", topology=again) == \
        invoke(root, "resolve", "all", "--json")


def test_topology_table(root: Path) -> None:
    code, out, _ = invoke(root, "topology")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["DEVICE", "MINOR", "GI", "CI"]
    gpu6 = next(line for line in lines if line.startswith("GPU 6"))
    assert gpu6.split()[2] == "7"  # index 6 has minor 7
    assert any(line.split()[:4] == ["6:1", "7", "2", "0"] for line in lines)


def test_topology_bad_snapshot(root: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"gpus": [{"index": 0}]}')
    code, _, err = invoke(root, "topology", topology=bad)
    assert code == 1
    assert err.startswith(f"capctl: error: {bad}: gpus[0].minor: missing")

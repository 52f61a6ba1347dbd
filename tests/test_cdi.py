"""The CDI spec: its devices come from the edits step, it passes an independent CDI checker
(reference library rules and podman 4.3's), names and kinds are checked, writes are atomic."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from capctl import simulated
from capctl.cli import cli
from capctl.deliver import cdi, cdifile
from capctl.driver import procfs
from capctl.edits.edits import from_plan
from capctl.errors import DeviceError, TopologyError
from capctl.host import Host
from capctl.request import resolve
from capctl.request.devices import MigAdmin, parse_request
from capctl.request.topology import load_topology
from tests.support.cdi_check import PODMAN_43, check_spec, minimum_version

TOPO = simulated.topology()


def _spec(host: Host, kind: str = cdi.DEFAULT_KIND, management: bool = True) -> dict[str, Any]:
    return cdi.build_spec(load_topology(host), procfs.load(host), host, kind,
                          management=management)


def _devices(spec: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    return {d["name"]: d["containerEdits"]["deviceNodes"] for d in spec["devices"]}


def test_spec_passes_the_independent_checker(sim_host: Host) -> None:
    spec = _spec(sim_host)
    assert check_spec(spec) == []
    assert check_spec(spec, profile=PODMAN_43) == []
    assert check_spec(spec, capctl_policy=True) == []
    # The lowest version with what the spec uses (hostPath, names starting with a digit).
    assert spec["cdiVersion"] == minimum_version(spec) == "0.5.0"
    # And it survives the file round trip byte for byte.
    assert json.loads(cdifile.dumps(spec)) == spec


def test_every_device_has_both_names(sim_host: Host) -> None:
    names = [d["name"] for d in _spec(sim_host)["devices"]]
    want = []
    for g in TOPO["gpus"]:
        for m in g["mig_devices"]:
            want += [m["uuid"], f"{g['index']}:{m['index']}"]
    for g in TOPO["gpus"]:
        want += [g["uuid"], str(g["index"])]
    assert names == [*want, "all", "mig-config", "mig-monitor"]
    assert len(set(names)) == len(names)


@pytest.mark.parametrize(
    ("name", "request_text", "admin"),
    [
        ("0:2", "0:2", None),
        (TOPO["gpus"][6]["mig_devices"][1]["uuid"], "6:1", None),
        ("3", TOPO["gpus"][3]["uuid"], None),
        ("all", "all", None),
        ("mig-config", ",".join(g["uuid"] for g in TOPO["gpus"] if g["mig_enabled"]),
         MigAdmin.CONFIG),
        ("mig-monitor", ",".join(g["uuid"] for g in TOPO["gpus"] if g["mig_enabled"]),
         MigAdmin.MONITOR),
    ],
    ids=["mig-by-index", "mig-by-uuid", "whole-gpu", "all", "mig-config", "mig-monitor"],
)
def test_device_nodes_are_the_hooks_edits(sim_host: Host, name: str, request_text: str,
                                          admin: MigAdmin | None) -> None:
    state = procfs.load(sim_host)
    plan = resolve.resolve(parse_request(request_text), load_topology(sim_host), state, sim_host)
    if admin is not None:
        plan = resolve.with_admin(plan, admin, state)
    edits = from_plan(plan, str(sim_host.root))
    want = [
        {"path": n.path, "hostPath": n.host_path, "type": "c", "major": n.major,
         "minor": n.minor, "fileMode": n.mode, "permissions": n.access}
        for n in edits.nodes
    ]
    assert _devices(_spec(sim_host))[name] == want


def test_mig_device_nodes(sim_host: Host) -> None:
    m = TOPO["gpus"][6]["mig_devices"][1]  # GPU index 6 has device minor 7
    nodes = _devices(_spec(sim_host))[m["uuid"]]
    caps = [n for n in nodes if n["path"].startswith("/dev/nvidia-caps/")]
    assert [(n["major"], n["minor"], n["permissions"], n["fileMode"]) for n in caps] == [
        (238, simulated.minor_of("gpu7/gi2/access"), "r", 0o444),
        (238, simulated.minor_of("gpu7/gi2/ci0/access"), "r", 0o444),
    ]
    for n in nodes:
        assert n["hostPath"] == str(sim_host.root) + n["path"]
    if os.geteuid() == 0:  # the GPU nodes exist only where mknod works
        assert [n["path"] for n in nodes if n not in caps] == [
            "/dev/nvidia7", "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"]
        assert all(n["permissions"] == "rw" for n in nodes if n not in caps)


def _checked(spec: dict[str, Any]) -> dict[str, Any]:
    assert check_spec(spec) == []
    assert check_spec(spec, profile=PODMAN_43) == []
    assert check_spec(spec, capctl_policy=True) == []
    assert spec["cdiVersion"] == minimum_version(spec)
    return spec


def test_spec_without_management_devices(sim_host: Host) -> None:
    full = _checked(_spec(sim_host))
    small = _checked(_spec(sim_host, management=False))
    names = [d["name"] for d in full["devices"]]
    assert names[-2:] == ["mig-config", "mig-monitor"]
    # Only the management devices go; every other device keeps exactly its nodes.
    assert small["devices"] == full["devices"][:-2]
    assert small["cdiVersion"] == full["cdiVersion"]
    assert len(cdifile.dumps(small)) < len(cdifile.dumps(full)) / 3


def test_spec_file_is_compact_and_has_host_path_only_under_a_driver_root(sim_host: Host) -> None:
    data = cdifile.dumps(_spec(sim_host, management=False))
    assert data.endswith(b"}\n") and data.count(b"\n") == 1
    assert b": " not in data and b", " not in data
    spec = json.loads(data)
    nodes = [n for d in spec["devices"] for n in d["containerEdits"]["deviceNodes"]]
    assert all(n["hostPath"] == f"{sim_host.root}{n['path']}" for n in nodes)
    for d in spec["devices"]:  # no node twice in one device
        paths = [n["path"] for n in d["containerEdits"]["deviceNodes"]]
        assert len(set(paths)) == len(paths), d["name"]


def test_mig_config_has_every_capability_of_mig_gpus(sim_host: Host) -> None:
    minors = {n["minor"] for n in _devices(_spec(sim_host))["mig-config"] if n["major"] == 238}
    assert 1 in minors and 2 not in minors
    assert simulated.minor_of("gpu0/gi14/ci7/access") in minors  # not created yet: still there
    assert simulated.minor_of("gpu4/gi0/access") not in minors  # GPU 4 is not in MIG mode
    monitor = {n["minor"] for n in _devices(_spec(sim_host))["mig-monitor"] if n["major"] == 238}
    assert 2 in monitor and 1 not in monitor


@pytest.mark.parametrize(
    ("kind", "names", "host_path", "want"),
    [
        ("capctl.io/mig", ["MIG-x", "all"], False, "0.3.0"),
        ("capctl.io/mig", ["MIG-x", "0:1"], False, "0.5.0"),
        ("capctl.io/mig", ["all"], True, "0.5.0"),
        ("capctl.io/mig.v2", ["all"], False, "0.6.0"),
    ],
    ids=["plain", "digit-name", "host-path", "dotted-class"],
)
def test_required_version_agrees_with_the_checker(kind: str, names: list[str], host_path: bool,
                                                  want: str) -> None:
    node = {"path": "/dev/x", "type": "c", "major": 1, "minor": 1}
    if host_path:
        node["hostPath"] = "/r/dev/x"
    doc = {"cdiVersion": want, "kind": kind,
           "devices": [{"name": n, "containerEdits": {"deviceNodes": [node]}} for n in names]}
    assert cdi.required_version(kind, names, host_path) == want == minimum_version(doc)


@pytest.mark.parametrize(
    "kind",
    ["capctl.io", "/mig", "capctl.io/", "1capctl/mig", "capctl.io/mig.x", "capctl.io/-mig",
     "capctl.io/mig-", "cap ctl/mig", "capctl/mi/g", "capctl.io/mïg"],
    ids=["no-class", "no-vendor", "empty-class", "digit-vendor", "dotted-class", "dash-first",
         "dash-last", "blank", "slash-in-class", "non-ascii"],
)
def test_bad_kind_refused(sim_host: Host, kind: str) -> None:
    with pytest.raises(DeviceError):
        cdi.check_kind(kind)
    with pytest.raises(DeviceError):
        _spec(sim_host, kind)


@pytest.mark.parametrize("name", ["", "-a", "a-", "a/b", "a b", "ä", "a:"],
                         ids=["empty", "dash-first", "dash-last", "slash", "blank", "non-ascii",
                              "colon-last"])
def test_bad_device_name_refused(name: str) -> None:
    with pytest.raises(DeviceError):
        cdi.check_device_name(name)


@pytest.mark.parametrize("name", ["0", "0:1", "all", "mig-config",
                                  "MIG-3c08f4c1-14f1-56fb-8813-503db65e1c2b"])
def test_good_device_names(name: str) -> None:
    assert cdi.check_device_name(name) == name


def test_no_host_path_under_slash() -> None:
    from capctl.edits.edits import NodeEdit

    n = NodeEdit("/dev/nvidia0", "/dev/nvidia0", 195, 0, 0o666, "rw")
    assert cdi.device_node(n, False) == {"path": "/dev/nvidia0", "type": "c", "major": 195,
                                         "minor": 0, "fileMode": 0o666, "permissions": "rw"}


def test_stale_topology_refused(sim_host: Host) -> None:
    m = TOPO["gpus"][0]["mig_devices"][0]
    os.unlink(Path(sim_host.root) / f"proc/driver/nvidia/capabilities/gpu0/mig/gi{m['gi']}"
              f"/ci{m['ci']}/access")
    with pytest.raises(TopologyError):
        _spec(sim_host)


def test_atomic_write(tmp_path: Path) -> None:
    out = tmp_path / "cdi" / "capctl.io-mig.json"
    old = os.umask(0o077)
    try:
        assert cdifile.write_atomic(str(out), b'{"a": 1}\n') is True
    finally:
        os.umask(old)
    st = out.stat()
    assert stat.S_IMODE(st.st_mode) == 0o644
    if os.geteuid() == 0:
        assert (st.st_uid, st.st_gid) == (0, 0)
    ino = st.st_ino
    assert cdifile.write_atomic(str(out), b'{"a": 1}\n') is False  # same bytes: left alone
    assert out.stat().st_ino == ino
    assert cdifile.write_atomic(str(out), b'{"a": 2}\n') is True
    assert out.stat().st_ino != ino  # replaced by rename, never rewritten in place
    assert os.listdir(out.parent) == [out.name]  # no temporary file left
    assert cdifile.remove(str(out)) is True and cdifile.remove(str(out)) is False


def _invoke(root: Path, *args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(
        cli, ["--root", str(root), "--topology", str(root / "topology.json"), *args],
        env={"CAPCTL_ROOT": None, "CAPCTL_TOPOLOGY": None})
    return res.exit_code, res.stdout, res.stderr


def test_cli_generate(sim_root: Path, tmp_path: Path) -> None:
    code, out, err = _invoke(sim_root, "cdi", "generate", "--output", "-")
    assert (code, err) == (0, "")
    spec = json.loads(out)
    assert spec["kind"] == "capctl.io/mig" and check_spec(spec, profile=PODMAN_43) == []
    dest = tmp_path / "spec.json"
    code, _out, err = _invoke(sim_root, "cdi", "generate", "--output", str(dest),
                              "--kind", "example.com/gpu")
    assert code == 0 and "written" in err
    assert json.loads(dest.read_text())["kind"] == "example.com/gpu"
    assert json.loads(dest.read_text())["devices"] == spec["devices"]
    code, _out, err = _invoke(sim_root, "cdi", "generate", "--output", str(dest),
                              "--kind", "example.com/gpu")
    assert code == 0 and "unchanged" in err


def _names_of(text: str) -> list[str]:
    spec = _checked(json.loads(text))
    return [d["name"] for d in spec["devices"]]


def test_cli_management_option_overrides_the_config(sim_root: Path, tmp_path: Path) -> None:
    admin = ["mig-config", "mig-monitor"]
    base = ["--output", "-"]
    off = _config(tmp_path, "[cdi]\nmanagement = false\n")
    runs = {
        "default": _invoke(sim_root, "cdi", "generate", *base),
        "no-management": _invoke(sim_root, "cdi", "generate", *base, "--no-management"),
        "config-off": _invoke(sim_root, "--config", str(off), "cdi", "generate", *base),
        "config-off-option-on": _invoke(sim_root, "--config", str(off), "cdi", "generate",
                                        *base, "--management"),
    }
    assert {k: r[0] for k, r in runs.items()} == dict.fromkeys(runs, 0)
    names = {k: _names_of(r[1]) for k, r in runs.items()}
    assert names["default"][-2:] == admin == names["config-off-option-on"][-2:]
    assert names["no-management"] == names["default"][:-2] == names["config-off"]
    dest = tmp_path / "spec.json"
    code, _out, err = _invoke(sim_root, "cdi", "generate", "--output", str(dest),
                              "--no-management")
    assert code == 0 and "written" in err
    assert _names_of(dest.read_text()) == names["no-management"]


def test_cli_bad_kind_is_usage_error(sim_root: Path) -> None:
    code, _out, err = _invoke(sim_root, "cdi", "generate", "--output", "-", "--kind", "x/y.z")
    assert code == 2 and "class" in err


def test_cli_default_output() -> None:
    assert cdi.DEFAULT_OUTPUT == "/var/run/cdi/capctl.io-mig.json"
    res = CliRunner().invoke(cli, ["cdi", "generate", "--help"])
    assert "/var/run/cdi/capctl.io-mig.json" in res.stdout


# --- [cdi] output: sync keeps the spec current ---------------------------------------------


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "capctl.toml"
    path.write_text(text)
    os.chmod(path, 0o644)
    return path


def test_cdi_settings(tmp_path: Path) -> None:
    from capctl.policy import settings

    assert settings.load_cdi(tmp_path / "absent.toml").output is None
    cfg = _config(tmp_path, '[hook]\nlog_file = "/l"\n[cdi]\noutput = "/etc/cdi/x.json"\n')
    assert settings.load_cdi(cfg).output == "/etc/cdi/x.json"
    assert settings.load(cfg).hook_log == "/l"  # the [hook] reader ignores [cdi]
    assert settings.load_cdi(cfg).management is True
    assert settings.load_cdi(tmp_path / "absent.toml").management is True
    cfg = _config(tmp_path, "[cdi]\nmanagement = false\n")
    assert settings.load_cdi(cfg) == settings.CdiSettings(output=None, management=False)
    cfg = _config(tmp_path, '[cdi]\noutput = "/etc/cdi/x.json"\nmanagement = true\n')
    assert settings.load_cdi(cfg) == settings.CdiSettings("/etc/cdi/x.json", True)


@pytest.mark.parametrize(
    "text",
    ['cdi = 1\n', '[cdi]\noutput = "rel.json"\n', '[cdi]\noutput = "/etc/cdi/x.yaml"\n',
     '[cdi]\noutput = 3\n', '[cdi]\noutput = "/x.json"\nkind = "a/b"\n',
     '[cdi]\nmanagement = "no"\n', '[cdi]\nmanagement = 0\n',
     '[cdi]\nmanagement = false\noutput = "rel.json"\n'],
    ids=["not-a-table", "relative", "not-json", "not-a-string", "unknown-key",
         "management-string", "management-int", "management-with-bad-output"],
)
def test_bad_cdi_settings_refused(tmp_path: Path, text: str) -> None:
    from capctl.errors import ConfigError
    from capctl.policy import settings

    with pytest.raises(ConfigError):
        settings.load_cdi(_config(tmp_path, text))


def _sync(root: Path, config: Path, *args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(
        cli, ["--root", str(root), "--topology", str(root / "topology.json"), "--config",
              str(config), "sync", *args],
        env={"CAPCTL_ROOT": None, "CAPCTL_TOPOLOGY": None, "CAPCTL_CONFIG": None})
    return res.exit_code, res.stdout, res.stderr


def test_sync_regenerates_the_spec(sim_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "cdi" / "capctl.io-mig.json"
    cfg = _config(tmp_path, f'[cdi]\noutput = "{out}"\n')
    code, stdout, err = _sync(sim_root, cfg, "--dry-run")
    assert (code, err) == (0, "") and f"would be written: {out}" in stdout
    assert not out.exists()
    code, stdout, err = _sync(sim_root, cfg)
    assert (code, err) == (0, "") and f"written: {out}" in stdout
    spec = json.loads(out.read_text())
    assert check_spec(spec) == [] and check_spec(spec, profile=PODMAN_43) == []
    code, stdout, _err = _sync(sim_root, cfg, "--json")
    assert json.loads(stdout)["cdi"] == {"path": str(out), "changed": False}
    # An instance destroyed (its capability files and its snapshot entry): the spec follows.
    topo = json.loads((sim_root / "topology.json").read_text())
    gone = topo["gpus"][1]["mig_devices"].pop()
    (sim_root / "topology.json").write_text(json.dumps(topo))
    os.unlink(sim_root / f"proc/driver/nvidia/capabilities/gpu1/mig/gi{gone['gi']}"
              f"/ci{gone['ci']}/access")
    code, stdout, _err = _sync(sim_root, cfg)
    assert code == 0 and f"written: {out}" in stdout
    names = [d["name"] for d in json.loads(out.read_text())["devices"]]
    assert gone["uuid"] not in names and f"1:{gone['index']}" not in names


def test_sync_honours_management_false(sim_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "capctl.io-mig.json"
    cfg = _config(tmp_path, f'[cdi]\noutput = "{out}"\nmanagement = false\n')
    code, stdout, err = _sync(sim_root, cfg, "--dry-run", "--json")
    assert (code, err) == (0, "") and json.loads(stdout)["cdi"]["changed"] is True
    assert _sync(sim_root, cfg)[0] == 0
    names = _names_of(out.read_text())
    assert "all" in names and "mig-config" not in names and "mig-monitor" not in names
    # A dry run compares against the spec without them: nothing would change.
    code, stdout, _err = _sync(sim_root, cfg, "--dry-run", "--json")
    assert code == 0 and json.loads(stdout)["cdi"] == {"path": str(out), "changed": False}
    # Turned back on: the next sync writes them.
    cfg.write_text(f'[cdi]\noutput = "{out}"\nmanagement = true\n')
    code, stdout, _err = _sync(sim_root, cfg)
    assert code == 0 and f"written: {out}" in stdout
    assert _names_of(out.read_text())[-2:] == ["mig-config", "mig-monitor"]


def test_sync_removes_a_spec_it_cannot_make_current(sim_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "capctl.io-mig.json"
    cfg = _config(tmp_path, f'[cdi]\noutput = "{out}"\n')
    assert _sync(sim_root, cfg)[0] == 0 and out.exists()
    m = TOPO["gpus"][0]["mig_devices"][0]  # destroyed, but the snapshot still names it
    os.unlink(sim_root / f"proc/driver/nvidia/capabilities/gpu0/mig/gi{m['gi']}/ci0/access")
    code, _stdout, err = _sync(sim_root, cfg)
    assert code == 1 and "stale topology" in err
    assert not out.exists()


def test_sync_without_cdi_setting_writes_no_spec(sim_root: Path, tmp_path: Path) -> None:
    cfg = _config(tmp_path, "")
    code, stdout, _err = _sync(sim_root, cfg, "--json")
    assert code == 0 and "cdi" not in json.loads(stdout)

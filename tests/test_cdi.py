"""The CDI specs: their devices come from the edits step (spec-wide nodes plus a device's own
are exactly the hook's), they pass an independent CDI checker (reference library rules and
podman 4.3's), names and kinds are checked, the management devices have their own file, and
writes are atomic."""

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
from capctl.edits.edits import NodeEdit, from_plan
from capctl.errors import DeviceError, TopologyError
from capctl.host import Host
from capctl.request import resolve
from capctl.request.devices import MigAdmin, parse_request
from capctl.request.topology import load_topology
from tests.support.cdi_check import PODMAN_43, check_spec, effective_nodes, minimum_version

from .conftest import needs_root

TOPO = simulated.topology()
ADMIN = ["mig-config", "mig-monitor"]
MIG_GPUS = ",".join(g["uuid"] for g in TOPO["gpus"] if g["mig_enabled"])


def _spec(host: Host, kind: str = cdi.DEFAULT_KIND) -> dict[str, Any]:
    return cdi.build_spec(load_topology(host), procfs.load(host), host, kind)


def _mgmt(host: Host, kind: str = cdi.DEFAULT_KIND) -> dict[str, Any]:
    spec = cdi.build_management_spec(load_topology(host), procfs.load(host), host, kind)
    assert spec is not None
    return spec


def _names(spec: dict[str, Any]) -> list[str]:
    return [d["name"] for d in spec["devices"]]


def _devices(spec: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Each device's effective nodes (spec-wide plus its own), as a runtime applies them."""
    return {name: effective_nodes(spec, name) for name in _names(spec)}


def _checked(spec: dict[str, Any]) -> dict[str, Any]:
    assert check_spec(spec) == []
    assert check_spec(spec, profile=PODMAN_43) == []
    assert check_spec(spec, capctl_policy=True) == []
    assert spec["cdiVersion"] == minimum_version(spec)
    return spec


def test_specs_pass_the_independent_checker(sim_host: Host) -> None:
    for spec in (_spec(sim_host), _mgmt(sim_host)):
        _checked(spec)
        # The lowest version with what the spec uses (hostPath, names starting with a digit).
        assert spec["cdiVersion"] == "0.5.0"
        # And it survives the file round trip byte for byte.
        assert json.loads(cdifile.dumps(spec)) == spec


def test_every_device_has_both_names(sim_host: Host) -> None:
    want = []
    for g in TOPO["gpus"]:
        for m in g["mig_devices"]:
            want += [m["uuid"], f"{g['index']}:{m['index']}"]
    for g in TOPO["gpus"]:
        want += [g["uuid"], str(g["index"])]
    assert _names(_spec(sim_host)) == [*want, "all"]
    assert len(set(want)) == len(want)
    assert _names(_mgmt(sim_host)) == ADMIN


def _hooks_nodes(host: Host, request_text: str, admin: MigAdmin | None) -> list[dict[str, Any]]:
    """What the hook gives for the request, as CDI nodes with every field filled."""
    state = procfs.load(host)
    plan = resolve.resolve(parse_request(request_text), load_topology(host), state, host)
    if admin is not None:
        plan = resolve.with_admin(plan, admin, state)
    return [{"path": n.path, "hostPath": n.host_path, "type": "c", "major": n.major,
             "minor": n.minor, "fileMode": n.mode, "permissions": n.access}
            for n in from_plan(plan, str(host.root)).nodes]


def _by_path(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(nodes, key=lambda n: str(n["path"]))


@pytest.mark.parametrize(
    ("name", "request_text", "admin"),
    [
        ("0:2", "0:2", None),
        (TOPO["gpus"][6]["mig_devices"][1]["uuid"], "6:1", None),
        ("3", TOPO["gpus"][3]["uuid"], None),
        ("all", "all", None),
        ("mig-config", MIG_GPUS, MigAdmin.CONFIG),
        ("mig-monitor", MIG_GPUS, MigAdmin.MONITOR),
    ],
    ids=["mig-by-index", "mig-by-uuid", "whole-gpu", "all", "mig-config", "mig-monitor"],
)
def test_device_nodes_are_the_hooks_edits(sim_host: Host, name: str, request_text: str,
                                          admin: MigAdmin | None) -> None:
    spec = _mgmt(sim_host) if admin is not None else _spec(sim_host)
    got = effective_nodes(spec, name)
    want = _hooks_nodes(sim_host, request_text, admin)
    assert len(got) == len(want)  # no node twice, none missing
    assert _by_path(got) == _by_path(want)


def test_every_device_is_exactly_the_hooks(sim_host: Host) -> None:
    """Every name of both specs, against the hook's plan for the same request."""
    requests = {"all": "all", **{n: MIG_GPUS for n in ADMIN}}
    for spec in (_spec(sim_host), _mgmt(sim_host)):
        for name, got in _devices(spec).items():
            admin = dict(cdi.ADMIN_DEVICES).get(name)
            want = _hooks_nodes(sim_host, requests.get(name, name), admin)
            assert _by_path(got) == _by_path(want), name


@needs_root  # the GPU, control and UVM nodes exist only where mknod works
def test_control_and_uvm_nodes_are_spec_wide_once(sim_host: Host) -> None:
    spec = _spec(sim_host)
    shared = ["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"]
    assert [n["path"] for n in spec["containerEdits"]["deviceNodes"]] == shared
    data = cdifile.dumps(spec).decode()
    for path in shared:  # once in the whole file
        assert data.count(f'"path":"{path}"') == 1, path
    for d in spec["devices"]:  # and no device repeats them
        assert not {n["path"] for n in d["containerEdits"]["deviceNodes"]} & set(shared)
    # The management spec: what both devices share goes spec-wide too, each keeps its own.
    mgmt = _mgmt(sim_host)
    own = {d["name"]: [n["minor"] for n in d["containerEdits"]["deviceNodes"]]
           for d in mgmt["devices"]}
    assert own == {"mig-config": [1], "mig-monitor": [2]}


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
        assert sorted(n["path"] for n in nodes if n not in caps) == sorted([
            "/dev/nvidia7", "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"])
        assert all(n["permissions"] == "rw" for n in nodes if n not in caps)


def test_main_spec_is_small_and_the_management_spec_apart(sim_host: Host) -> None:
    main, mgmt = _spec(sim_host), _mgmt(sim_host)
    assert not set(_names(main)) & set(ADMIN)
    assert len(cdifile.dumps(main)) < len(cdifile.dumps(mgmt))
    # The same kind, so `capctl.io/mig=mig-config` still names it.
    assert main["kind"] == mgmt["kind"] == cdi.DEFAULT_KIND


def test_spec_file_is_compact_and_has_host_path_only_where_it_differs(sim_host: Host) -> None:
    data = cdifile.dumps(_spec(sim_host))
    assert data.endswith(b"}\n") and data.count(b"\n") == 1
    assert b": " not in data and b", " not in data
    spec = json.loads(data)
    edits = [spec.get("containerEdits", {}), *(d["containerEdits"] for d in spec["devices"])]
    nodes = [n for e in edits for n in e.get("deviceNodes", [])]
    assert all(n["hostPath"] == f"{sim_host.root}{n['path']}" for n in nodes)
    # No field whose value is CDI's default, none that CDI does not define.
    assert all(set(n) == {"path", "hostPath", "type", "major", "minor", "fileMode",
                          "permissions"} and n["permissions"] != "rwm" for n in nodes)
    for d in spec["devices"]:  # no node twice in one device
        paths = [n["path"] for n in d["containerEdits"]["deviceNodes"]]
        assert len(set(paths)) == len(paths), d["name"]


def test_no_host_path_where_it_is_the_path() -> None:
    n = NodeEdit("/dev/nvidia0", "/dev/nvidia0", 195, 0, 0o666, "rw")
    assert cdi.device_node(n) == {"path": "/dev/nvidia0", "type": "c", "major": 195,
                                  "minor": 0, "fileMode": 0o666, "permissions": "rw"}
    n = NodeEdit("/dev/nvidia0", "/run/nvidia/driver/dev/nvidia0", 195, 0, 0o666, "rw")
    assert cdi.device_node(n)["hostPath"] == "/run/nvidia/driver/dev/nvidia0"


def _node(name: str) -> NodeEdit:
    return NodeEdit(f"/dev/{name}", f"/dev/{name}", 195, len(name), 0o666, "rw")


GPU0, GPU1, CTL, UVM, CAP = (_node(n) for n in ("nvidia0", "nvidia1", "nvidiactl", "uvm", "c"))


@pytest.mark.parametrize(
    ("devices", "want"),
    [
        ([(GPU0, CTL, UVM), (GPU1, CTL, UVM), (GPU0, GPU1, CTL, UVM)], (CTL, UVM)),
        ([(GPU0, CTL, UVM)], ()),
        ([], ()),
        ([(GPU0, CTL), (GPU1, UVM)], ()),
        # One GPU: its whole-GPU device would keep nothing of its own; it keeps its GPU node.
        ([(GPU0, CTL, UVM, CAP), (GPU0, CTL, UVM), (GPU0, CTL, UVM, CAP)], (CTL, UVM)),
        ([(GPU0,), (GPU0,)], ()),
        # Same path, other access: not the same node.
        ([(GPU0, CTL), (GPU1, NodeEdit(CTL.path, CTL.host_path, 195, CTL.minor, 0o666, "r"))],
         ()),
    ],
    ids=["control-and-uvm", "one-device", "no-device", "nothing-shared", "bare-device-keeps-one",
         "identical-devices", "other-access"],
)
def test_common_nodes(devices: list[tuple[NodeEdit, ...]], want: tuple[NodeEdit, ...]) -> None:
    got = cdi.common_nodes(devices)
    assert got == want
    for d in devices:  # every device keeps a node of its own, when there is more than one
        assert len(devices) < 2 or set(d) - set(got)


def test_mig_config_has_every_capability_of_mig_gpus(sim_host: Host) -> None:
    devices = _devices(_mgmt(sim_host))
    minors = {n["minor"] for n in devices["mig-config"] if n["major"] == 238}
    assert 1 in minors and 2 not in minors
    assert simulated.minor_of("gpu0/gi14/ci7/access") in minors  # not created yet: still there
    assert simulated.minor_of("gpu4/gi0/access") not in minors  # GPU 4 is not in MIG mode
    monitor = {n["minor"] for n in devices["mig-monitor"] if n["major"] == 238}
    assert 2 in monitor and 1 not in monitor


def test_no_management_spec_without_management_capabilities(sim_host: Host,
                                                            sim_root: Path) -> None:
    minors = sim_root / "proc/driver/nvidia-caps/mig-minors"
    lines = minors.read_text().splitlines(keepends=True)
    minors.write_text("".join(ln for ln in lines if ln.split()[0] not in ("config", "monitor")))
    for name in ("config", "monitor"):
        os.unlink(sim_root / "proc/driver/nvidia/capabilities/mig" / name)
    assert cdi.build_management_spec(load_topology(sim_host), procfs.load(sim_host),
                                     sim_host) is None


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
     "capctl.io/mig-", "cap ctl/mig", "capctl/mi/g", "capctl.io/mïg", "capctl.io/m", "c/mig"],
    ids=["no-class", "no-vendor", "empty-class", "digit-vendor", "dotted-class", "dash-first",
         "dash-last", "blank", "slash-in-class", "non-ascii", "one-letter-class",
         "one-letter-vendor"],
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


def test_management_path() -> None:
    assert cdifile.management_path(cdi.DEFAULT_OUTPUT) == \
        "/var/run/cdi/capctl.io-mig-management.json"
    assert cdifile.management_path("/etc/cdi/x.json") == "/etc/cdi/x-management.json"


MGMT_DOC = {"cdiVersion": "0.3.0", "kind": cdi.DEFAULT_KIND, "devices": [
    {"name": "mig-config", "containerEdits": {"deviceNodes": [{"path": "/dev/x"}]}}]}


@pytest.mark.parametrize(
    ("data", "ours"),
    [
        (json.dumps(MGMT_DOC).encode(), True),
        # capctl's too, written before --kind changed: refreshed or removed, never stale
        (json.dumps({**MGMT_DOC, "kind": "example.com/gpu"}).encode(), True),
        (json.dumps({**MGMT_DOC, "kind": "not a kind"}).encode(), False),
        (json.dumps({**MGMT_DOC, "kind": 7}).encode(), False),
        (json.dumps({**MGMT_DOC, "devices": [{"name": ["mig-config"]}]}).encode(), False),
        (b"[" * 100000 + b"]" * 100000, False),
        (json.dumps({**MGMT_DOC, "devices": [*MGMT_DOC["devices"], {"name": "0"}]}).encode(),
         False),
        (json.dumps({**MGMT_DOC, "devices": []}).encode(), False),
        (json.dumps([MGMT_DOC]).encode(), False),
        (b"kind: capctl.io/mig\n", False),
        (b"", False),
    ],
    ids=["capctls", "other-kind", "invalid-kind", "kind-not-a-string", "name-not-a-string",
         "nested-too-deep", "other-device", "no-device", "not-an-object", "yaml", "empty"],
)
def test_is_management_spec(data: bytes, ours: bool) -> None:
    assert cdifile.is_management_spec(data) is ours


def _invoke(root: Path, *args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(
        cli, ["--root", str(root), "--topology", str(root / "topology.json"), *args],
        env={"CAPCTL_ROOT": None, "CAPCTL_TOPOLOGY": None})
    return res.exit_code, res.stdout, res.stderr


def test_cli_generate(sim_root: Path, tmp_path: Path) -> None:
    code, out, err = _invoke(sim_root, "cdi", "generate", "--output", "-")
    assert (code, err) == (0, "")
    spec = _checked(json.loads(out))
    assert spec["kind"] == "capctl.io/mig" and "mig-config" not in _names(spec)
    dest = tmp_path / "cdi" / "spec.json"
    code, _out, err = _invoke(sim_root, "cdi", "generate", "--output", str(dest),
                              "--kind", "example.com/gpu")
    assert (code, err) == (0, f"{dest}: written\n")
    assert json.loads(dest.read_text())["kind"] == "example.com/gpu"
    assert json.loads(dest.read_text())["devices"] == spec["devices"]
    code, _out, err = _invoke(sim_root, "cdi", "generate", "--output", str(dest),
                              "--kind", "example.com/gpu")
    assert (code, err) == (0, f"{dest}: unchanged\n")
    assert os.listdir(dest.parent) == ["spec.json"]  # no management spec by default


def _names_of(path: Path) -> list[str]:
    return _names(_checked(json.loads(path.read_text())))


def test_cli_management_spec(sim_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "cdi" / "capctl.io-mig.json"
    mgmt = tmp_path / "cdi" / "capctl.io-mig-management.json"
    on = _config(tmp_path, "[cdi]\nmanagement = true\n")
    base = ["cdi", "generate", "--output", str(out)]

    code, _out, err = _invoke(sim_root, *base, "--management")
    assert (code, err) == (0, f"{out}: written\n{mgmt}: written\n")
    assert _names_of(mgmt) == ADMIN and "mig-config" not in _names_of(out)
    main = out.read_bytes()
    code, _out, err = _invoke(sim_root, "--config", str(on), *base)  # the config says on
    assert (code, err) == (0, f"{out}: unchanged\n{mgmt}: unchanged\n")
    code, _out, err = _invoke(sim_root, "--config", str(on), *base, "--no-management")
    assert (code, err) == (0, f"{out}: unchanged\n{mgmt}: removed\n")
    assert not mgmt.exists() and out.read_bytes() == main
    code, _out, err = _invoke(sim_root, *base)  # off, and nothing to remove: not mentioned
    assert (code, err) == (0, f"{out}: unchanged\n")
    # '-' prints the main spec, never the management devices.
    code, text, _err = _invoke(sim_root, "cdi", "generate", "--output", "-", "--management")
    assert code == 0 and text.encode() == main


@pytest.mark.parametrize(
    "foreign",
    ["other-devices", "not-json", "symlink", "directory"],
)
def test_foreign_management_file_is_never_touched(sim_root: Path, tmp_path: Path,
                                                  foreign: str) -> None:
    out = tmp_path / "capctl.io-mig.json"
    mgmt = tmp_path / "capctl.io-mig-management.json"
    target = tmp_path / "elsewhere.json"
    target.write_text(json.dumps(MGMT_DOC))  # capctl's form, but only reachable by a link
    if foreign == "other-devices":
        mgmt.write_text(json.dumps({**MGMT_DOC, "devices": [{"name": "mine"}]}))
    elif foreign == "not-json":
        mgmt.write_text("someone's notes\n")
    elif foreign == "symlink":
        mgmt.symlink_to(target)
    else:
        mgmt.mkdir()
    before = os.readlink(mgmt) if mgmt.is_symlink() else None
    code, _out, err = _invoke(sim_root, "cdi", "generate", "--output", str(out), "--management")
    assert code == 1 and err.startswith(f"capctl: error: {mgmt}: ") and "refusing" in err
    # One line; the main spec is current all the same (never left out of date by the refusal).
    assert err.count("\n") == 1
    assert _names_of(out) == _names(_spec(Host(root=sim_root, topology=sim_root / "topology.json")))
    # Off: not capctl's file, so nothing to remove; the main spec is written.
    code, _out, err = _invoke(sim_root, "cdi", "generate", "--output", str(out),
                              "--no-management")
    assert (code, err) == (0, f"{out}: unchanged\n")
    assert mgmt.is_symlink() == (foreign == "symlink")
    if before is not None:
        assert os.readlink(mgmt) == before and target.read_text() == json.dumps(MGMT_DOC)
    elif foreign == "directory":
        assert mgmt.is_dir()
    else:
        assert mgmt.read_text() != ""


def test_cli_bad_kind_is_usage_error(sim_root: Path) -> None:
    code, _out, err = _invoke(sim_root, "cdi", "generate", "--output", "-", "--kind", "xy/mig.z")
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

    assert settings.load_cdi(tmp_path / "absent.toml") == settings.CdiSettings(None, False)
    cfg = _config(tmp_path, '[hook]\nlog_file = "/l"\n[cdi]\noutput = "/etc/cdi/x.json"\n')
    assert settings.load_cdi(cfg) == settings.CdiSettings("/etc/cdi/x.json", False)
    assert settings.load(cfg).hook_log == "/l"  # the [hook] reader ignores [cdi]
    cfg = _config(tmp_path, "[cdi]\nmanagement = true\n")
    assert settings.load_cdi(cfg) == settings.CdiSettings(output=None, management=True)
    cfg = _config(tmp_path, '[cdi]\noutput = "/etc/cdi/x.json"\nmanagement = false\n')
    assert settings.load_cdi(cfg) == settings.CdiSettings("/etc/cdi/x.json", False)


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


def _cdi_report(path: Path, changed: bool, action: str) -> dict[str, Any]:
    mgmt = cdifile.management_path(str(path))
    return {"path": str(path), "changed": changed, "management": {"path": mgmt, "action": action}}


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
    assert json.loads(stdout)["cdi"] == _cdi_report(out, False, "absent")
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
    assert sorted(os.listdir(out.parent)) == [out.name]


def test_sync_writes_and_removes_the_management_spec(sim_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "capctl.io-mig.json"
    mgmt = tmp_path / "capctl.io-mig-management.json"
    cfg = _config(tmp_path, f'[cdi]\noutput = "{out}"\nmanagement = true\n')
    code, stdout, err = _sync(sim_root, cfg, "--dry-run", "--json")
    assert (code, err) == (0, "")
    assert json.loads(stdout)["cdi"] == _cdi_report(out, True, "written")
    assert not out.exists() and not mgmt.exists()
    code, stdout, _err = _sync(sim_root, cfg)
    assert code == 0 and f"written: {out}\nwritten: {mgmt}\n" in stdout
    assert _names_of(mgmt) == ADMIN and "mig-config" not in _names_of(out)
    code, stdout, _err = _sync(sim_root, cfg, "--json")
    assert json.loads(stdout)["cdi"] == _cdi_report(out, False, "unchanged")
    # Turned off: the next sync removes the file it wrote; the main spec stays as it is.
    main = out.read_bytes()
    cfg.write_text(f'[cdi]\noutput = "{out}"\nmanagement = false\n')
    code, stdout, _err = _sync(sim_root, cfg, "--dry-run", "--json")
    assert json.loads(stdout)["cdi"] == _cdi_report(out, False, "removed") and mgmt.exists()
    code, stdout, _err = _sync(sim_root, cfg)
    assert code == 0 and f"removed: {mgmt}" in stdout and f"written: {out}" not in stdout
    assert not mgmt.exists() and out.read_bytes() == main
    # A file there that capctl did not write stays; asked to replace it, sync refuses.
    mgmt.write_text('{"kind":"capctl.io/mig","devices":[{"name":"mine"}]}')
    code, _stdout, err = _sync(sim_root, cfg)
    assert (code, err) == (0, "") and mgmt.exists()
    cfg.write_text(f'[cdi]\noutput = "{out}"\nmanagement = true\n')
    out.write_text("stale")  # the topology changed since: the main spec is made current
    code, _stdout, err = _sync(sim_root, cfg)
    assert code == 1 and f"capctl: error: {mgmt}" in err and mgmt.exists()
    assert out.read_bytes() == main


def test_sync_removes_specs_it_cannot_make_current(sim_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "capctl.io-mig.json"
    mgmt = tmp_path / "capctl.io-mig-management.json"
    cfg = _config(tmp_path, f'[cdi]\noutput = "{out}"\nmanagement = true\n')
    assert _sync(sim_root, cfg)[0] == 0 and out.exists() and mgmt.exists()
    m = TOPO["gpus"][0]["mig_devices"][0]  # destroyed, but the snapshot still names it
    os.unlink(sim_root / f"proc/driver/nvidia/capabilities/gpu0/mig/gi{m['gi']}/ci0/access")
    code, _stdout, err = _sync(sim_root, cfg, "--dry-run")
    assert code == 1 and out.exists() and mgmt.exists()  # a dry run removes nothing
    code, _stdout, err = _sync(sim_root, cfg)
    assert code == 1 and "stale topology" in err
    assert not out.exists() and not mgmt.exists()


def test_sync_without_cdi_setting_writes_no_spec(sim_root: Path, tmp_path: Path) -> None:
    cfg = _config(tmp_path, "")
    code, stdout, _err = _sync(sim_root, cfg, "--json")
    assert code == 0 and "cdi" not in json.loads(stdout)


@needs_root  # the GPU, control and UVM nodes exist only where mknod works
def test_one_gpu_host(sim_host: Host, sim_root: Path) -> None:
    """One GPU with one MIG device: every device has the GPU node and the control and UVM
    nodes, and the whole GPU has nothing else; it keeps its GPU node, so no device is empty."""
    topo = json.loads((sim_root / "topology.json").read_text())
    topo["gpus"] = [{**topo["gpus"][0], "mig_devices": topo["gpus"][0]["mig_devices"][:1]}]
    (sim_root / "topology.json").write_text(json.dumps(topo))
    spec = _checked(_spec(sim_host))
    assert [n["path"] for n in spec["containerEdits"]["deviceNodes"]] == [
        "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"]
    own = {d["name"]: [n["path"] for n in d["containerEdits"]["deviceNodes"]]
           for d in spec["devices"]}
    assert own["0"] == own[topo["gpus"][0]["uuid"]] == ["/dev/nvidia0"]
    for name in own:
        assert _by_path(effective_nodes(spec, name)) == _by_path(
            _hooks_nodes(sim_host, name, None)), name

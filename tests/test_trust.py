"""The trust policy: [requests] settings, the OCI fields it reads, and each decision (pure)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from capctl import simulated
from capctl.errors import ConfigError, HookError
from capctl.host import Host
from capctl.policy import settings
from capctl.policy.settings import RequestSettings, Settings
from capctl.request import oci, trust
from capctl.request.container import plan_for

LIST = oci.DEVICE_LIST_DIR
CONTAINERD = {"io.kubernetes.cri.container-type": "container",
              "io.kubernetes.cri.sandbox-id": "abc"}
CRIO = {"io.kubernetes.cri-o.ContainerType": "container"}
MIG_A = "MIG-11111111-2222-4333-8444-555555555555"


def spec(*, env: list[str] = (), bounding: list[str] = (), userns: bool = False,  # type: ignore[assignment]
         annotations: dict[str, str] | None = None,
         mounts: list[dict[str, Any]] = ()) -> bytes:  # type: ignore[assignment]
    namespaces = [{"type": "pid"}, {"type": "mount"}] + ([{"type": "user"}] if userns else [])
    obj: dict[str, Any] = {
        "root": {"path": "rootfs"},
        "process": {"env": list(env), "capabilities": {"bounding": list(bounding)}},
        "linux": {"namespaces": namespaces},
        "mounts": list(mounts),
    }
    if annotations is not None:
        obj["annotations"] = annotations
    return json.dumps(obj).encode()


def ctr(**kw: Any) -> oci.Container:
    return oci.parse_config(spec(**kw), "/b")


def dev_mount(dev_id: str, source: str = "/dev/null") -> dict[str, Any]:
    return {"destination": f"{LIST}/{dev_id}", "source": source, "type": "bind",
            "options": ["bind", "ro"]}


# --- the OCI fields ---------------------------------------------------------------------------

PRIVILEGED = [
    ("sys_admin, no userns", ["CAP_SYS_ADMIN"], False, True),
    ("sys_admin in a userns", ["CAP_SYS_ADMIN"], True, False),
    ("no sys_admin", ["CAP_KILL"], False, False),
    ("no sys_admin, userns", [], True, False),
]


@pytest.mark.parametrize(("bounding", "userns", "want"), [c[1:] for c in PRIVILEGED],
                         ids=[c[0] for c in PRIVILEGED])
def test_privileged(bounding: list[str], userns: bool, want: bool) -> None:
    c = ctr(bounding=bounding, userns=userns)
    assert c.user_namespace is userns
    assert c.privileged is want


def test_device_list_mounts_parsed() -> None:
    c = ctr(mounts=[dev_mount(MIG_A), dev_mount("0", "/etc/passwd"),
                    {"destination": "/data", "source": "/srv", "type": "bind"}])
    assert c.device_list == ((MIG_A, "/dev/null"), ("0", "/etc/passwd"))


@pytest.mark.parametrize("bad", [
    {"annotations": ["x"]}, {"annotations": {"a": 1}}, {"mounts": {"a": 1}},
    {"mounts": [{"destination": 3}]}, {"linux": {"namespaces": [{"type": 1}]}},
    {"linux": {"namespaces": {"type": "user"}}},
], ids=["annotations list", "annotation int", "mounts object", "destination int",
        "namespace type int", "namespaces object"])
def test_malformed_fields_refused(bad: dict[str, Any]) -> None:
    obj = json.loads(spec())
    obj.update(bad)
    with pytest.raises(HookError):
        oci.parse_config(json.dumps(obj).encode(), "/b")


# --- decisions --------------------------------------------------------------------------------

PLAIN, PRIV = ["CAP_KILL"], ["CAP_SYS_ADMIN"]
DECISIONS = [
    # (id, envvar policy, annotations, bounding, userns, accepted?)
    ("any, k8s unprivileged", "any", CONTAINERD, PLAIN, False, True),
    ("privileged, plain docker", "privileged", None, PLAIN, False, False),
    ("privileged, privileged", "privileged", None, PRIV, False, True),
    ("privileged, userns sys_admin", "privileged", None, PRIV, True, False),
    ("auto, no cri", "auto", None, PLAIN, False, True),
    ("auto, other annotations", "auto", {"io.example/x": "y"}, PLAIN, False, True),
    ("auto, containerd unprivileged", "auto", CONTAINERD, PLAIN, False, False),
    ("auto, containerd sandbox-id only", "auto",
     {"io.kubernetes.cri.sandbox-id": "x"}, PLAIN, False, False),
    ("auto, containerd privileged", "auto", CONTAINERD, PRIV, False, True),
    ("auto, cri-o unprivileged", "auto", CRIO, PLAIN, False, False),
    ("auto, podman's own cri-o annotation", "auto", {"io.kubernetes.cri-o.TTY": "false"}, PLAIN,
     False, True),
    ("auto, cri-o privileged", "auto", CRIO, PRIV, False, True),
    ("auto, cri-o userns sys_admin", "auto", CRIO, PRIV, True, False),
]


@pytest.mark.parametrize(("policy", "annotations", "bounding", "userns", "accepted"),
                         [c[1:] for c in DECISIONS], ids=[c[0] for c in DECISIONS])
def test_envvar_policy(policy: str, annotations: dict[str, str] | None, bounding: list[str],
                       userns: bool, accepted: bool) -> None:
    c = ctr(env=["NVIDIA_VISIBLE_DEVICES=all"], bounding=bounding, userns=userns,
            annotations=annotations)
    d = trust.decide(RequestSettings(envvar=policy), c)
    assert d.value == ("all" if accepted else None)
    if not accepted:
        (note,) = d.notes
        assert "ignoring NVIDIA_VISIBLE_DEVICES='all'" in note and f'envvar = "{policy}"' in note


def test_volume_mounts_list_is_the_request() -> None:
    c = ctr(env=[f"NVIDIA_VISIBLE_DEVICES={LIST}"], annotations=CONTAINERD,
            mounts=[dev_mount(MIG_A), dev_mount("1")])
    d = trust.decide(RequestSettings(), c)
    assert d.value == f"{MIG_A},1"


def test_volume_mounts_list_beats_the_env() -> None:
    c = ctr(env=["NVIDIA_VISIBLE_DEVICES=all"], bounding=PRIV, mounts=[dev_mount("1")])
    assert trust.decide(RequestSettings(), c).value == "1"


def test_forged_device_list_mount_ignored() -> None:
    c = ctr(env=[f"NVIDIA_VISIBLE_DEVICES={LIST}"], annotations=CONTAINERD,
            mounts=[dev_mount("all", "/etc"), dev_mount("1")])
    d = trust.decide(RequestSettings(), c)
    assert d.value == "1"
    assert any(f"ignoring mount(s) {LIST}/all" in n for n in d.notes)


def test_only_forged_mounts_give_nothing() -> None:
    c = ctr(env=[f"NVIDIA_VISIBLE_DEVICES={LIST}"], mounts=[dev_mount("all", "/tmp/x")])
    assert trust.decide(RequestSettings(), c).value is None


def test_volume_mounts_off_ignores_the_list_and_the_marker() -> None:
    c = ctr(env=[f"NVIDIA_VISIBLE_DEVICES={LIST}"], mounts=[dev_mount("1")])
    d = trust.decide(RequestSettings(volume_mounts=False), c)
    assert d.value is None
    assert any("volume_mounts = false" in n for n in d.notes)


def test_volume_mounts_off_falls_back_to_the_env_policy() -> None:
    c = ctr(env=["NVIDIA_VISIBLE_DEVICES=0"], mounts=[dev_mount("1")])
    assert trust.decide(RequestSettings(volume_mounts=False), c).value == "0"


def test_unset_env_no_list_is_nothing_without_notes() -> None:
    assert trust.decide(RequestSettings(), ctr()) == trust.Decision(None)


# --- [requests] settings ----------------------------------------------------------------------

def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "capctl.toml"
    path.write_text(text)
    path.chmod(0o644)
    return path


def test_requests_defaults(tmp_path: Path) -> None:
    assert settings.load(write(tmp_path, "")).requests == RequestSettings("auto", True)


@pytest.mark.parametrize("policy", settings.ENVVAR_POLICIES)
@pytest.mark.parametrize("mounts", [True, False])
def test_requests_parsed_and_cached(tmp_path: Path, policy: str, mounts: bool) -> None:
    path = write(tmp_path, f'[requests]\nenvvar = "{policy}"\nvolume_mounts = '
                           f'{str(mounts).lower()}\n')
    want = Settings(requests=RequestSettings(policy, mounts))
    assert settings.load(path) == want
    assert Path(settings.cache_path(path)).exists()
    assert settings.load(path) == want  # from the cache


@pytest.mark.parametrize("text", [
    'requests = 1', '[requests]\nenvvar = "ANY"', '[requests]\nenvvar = true',
    '[requests]\nvolume_mounts = "yes"', '[requests]\nvolume_mount = true',
], ids=["not a table", "wrong case", "bool policy", "string bool", "unknown key"])
def test_requests_strict(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match=r"\[requests\]"):
        settings.load(write(tmp_path, text + "\n"))


# --- plan_for: the policy and MIG config/monitor on the simulated host ---------------------------

TOPO = simulated.topology()
GPU0 = TOPO["gpus"][0]


def plan(host: Host, **kw: Any) -> tuple[object, list[str]]:
    lines: list[str] = []
    return plan_for(host, ctr(**kw), lines.append, container_id="t"), lines


def test_plan_for_ignores_untrusted_request(sim_host: Host) -> None:
    Path(sim_host.config).write_text('[requests]\nenvvar = "privileged"\n')
    got, lines = plan(sim_host, env=["NVIDIA_VISIBLE_DEVICES=all"])
    assert got is None
    assert any('envvar = "privileged"' in line for line in lines)


def test_plan_for_takes_the_settings_its_caller_loaded(sim_host: Host) -> None:
    """The hook and the runtime wrapper load the config once and hand it over."""
    Path(sim_host.config).write_text('[requests]\nenvvar = "privileged"\n')
    lines: list[str] = []
    given = settings.Settings(requests=settings.RequestSettings(envvar="auto"))
    got = plan_for(sim_host, ctr(env=["NVIDIA_VISIBLE_DEVICES=0"]), lines.append,
                   container_id="t", settings=given)
    assert got is not None  # the file would have ignored this unprivileged request
    assert plan(sim_host, env=["NVIDIA_VISIBLE_DEVICES=0"])[0] is None


def test_plan_for_pci_bus_id(sim_host: Host) -> None:
    bus = GPU0["pci_bus_id"]  # NVML's 8-digit domain
    short = bus[4:]
    got, _ = plan(sim_host, env=[f"NVIDIA_VISIBLE_DEVICES={short}"])
    assert [d.uuid for d in got.devices] == [GPU0["uuid"]]  # type: ignore[attr-defined]


@pytest.mark.parametrize("which", ["CONFIG", "MONITOR"])
def test_mig_admin_refused_for_userns_sys_admin(sim_host: Host, which: str) -> None:
    with pytest.raises(HookError, match="privileged container"):
        plan(sim_host, env=["NVIDIA_VISIBLE_DEVICES=0", f"NVIDIA_MIG_{which}_DEVICES=all"],
             bounding=PRIV, userns=True)


def test_mig_admin_with_mig_devices_refused(sim_host: Host) -> None:
    m = GPU0["mig_devices"][0]["uuid"]
    with pytest.raises(HookError, match="mig-config needs whole GPUs visible"):
        plan(sim_host, env=[f"NVIDIA_VISIBLE_DEVICES=0,{m}", "NVIDIA_MIG_CONFIG_DEVICES=all"],
             bounding=PRIV)


def test_mig_admin_without_visible_device_does_nothing(sim_host: Host) -> None:
    got, lines = plan(sim_host, env=["NVIDIA_MIG_MONITOR_DEVICES=all"], bounding=PRIV)
    assert got is None
    assert any("does nothing" in line for line in lines)


def test_mig_admin_applies_to_whole_mig_capable_gpus_only(sim_host: Host) -> None:
    plain = [g for g in TOPO["gpus"] if not g["mig_enabled"]]
    if not plain:
        pytest.skip("the simulated host has no GPU out of MIG mode")
    g = plain[0]
    got, lines = plan(sim_host, env=[f"NVIDIA_VISIBLE_DEVICES={g['index']}",
                                     "NVIDIA_MIG_CONFIG_DEVICES=all"], bounding=PRIV)
    assert got.caps == ()  # type: ignore[attr-defined]
    assert any("MIG-capable" in line for line in lines)


def test_mig_admin_whole_gpu(sim_host: Host) -> None:
    got, _ = plan(sim_host, env=["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_MIG_CONFIG_DEVICES=all"],
                  bounding=PRIV)
    names = {c.name for c in got.caps}  # type: ignore[attr-defined]
    assert "config" in names
    assert all(n == "config" or n.startswith(f"gpu{GPU0['minor']}/") for n in names)


def test_a_forged_mount_cannot_forge_a_log_line(tmp_path: Path) -> None:
    """A device-list mount's destination is the container's text: a newline in it must not
    start a line of its own in the hook log (the review's finding)."""
    from capctl.deliver.hook import Log

    forged = "x\n2026-12-06T00:00:00+0000 capctl-hook[1]: container c: granted all\x1b[2J"
    c = ctr(env=[f"NVIDIA_VISIBLE_DEVICES={LIST}"], annotations=CONTAINERD,
            mounts=[dev_mount(forged, source="/etc/passwd")])
    log_file = tmp_path / "hook.log"
    log = Log(str(log_file))
    log.container = "id\nforged"
    notes = trust.decide(RequestSettings(), c).notes
    for note in notes:
        log(note)
    lines = log_file.read_text().splitlines()
    assert len(lines) == len(notes) == 2, lines  # the forged mount's note, then "no devices"
    assert "container id\\nforged: ignoring mount(s) " in lines[0]
    assert "/x\\n2026-12-06T00:00:00+0000 capctl-hook[1]: container c: granted all\\x1b[2J" \
        in lines[0]
    assert "\x1b" not in lines[0]

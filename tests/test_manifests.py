"""deploy/kubernetes: rendered like ``kubectl kustomize`` (checked against its output),
valid against the Kubernetes API schemas of the oldest and newest versions we support
(``kubernetes-validate``, offline, strict), and holding the properties docs/kubernetes.md
promises: GPU nodes only, no host network, each host path for a reason, least privilege."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from capctl.commands import fast
from capctl.main import fast_command
from tests.support import kustomize
from tests.support.kustomize import BASE

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden" / "kubernetes"
#: The Kubernetes versions we support, oldest and newest (docs/kubernetes.md).
VERSIONS = ("1.28.0", "1.37.0")
VARIANTS = {
    "base": (),
    "crio-hooks": ("crio-hooks",),
    "containerd": ("containerd",),
    "driver-container": ("driver-container",),
    "all": ("crio-hooks", "containerd", "driver-container"),
}
#: Every host path a variant may mount, and why (docs/kubernetes.md, "Mounts").
HOST_PATHS = {
    "/dev": "the capability nodes (driver root /)",
    "/var/run/cdi": "the CDI spec",
    "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1": "NVML of a host driver",
    "/opt": "capctl's tree for the runtime's hook and launcher",
    "/usr/share/containers/oci/hooks.d": "CRI-O's hooks.d",
    "/etc/containerd/conf.d": "containerd's drop-ins",
    "/usr/sbin/runc": "the real runtime the launcher runs (install checks it)",
    "/run/nvidia/driver": "a containerized driver's root",
    "/run/nvidia/driver/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1": "its NVML",
}


def _norm(x: Any, key: str = "") -> Any:
    """Lists that kustomize merges compare as sets (by their merge key)."""
    if isinstance(x, dict):
        return {k: _norm(v, k) for k, v in x.items()}
    if isinstance(x, list):
        items = [_norm(i) for i in x]
        mkey = kustomize.MERGE_KEYS.get(key)
        return sorted(items, key=lambda i: i[mkey]) if mkey else items
    return x


def _pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = kustomize.find(docs, "DaemonSet")["spec"]["template"]["spec"]
    return spec


@pytest.mark.parametrize("variant", VARIANTS)
def test_renders_as_kubectl_kustomize(variant: str) -> None:
    """scripts/render-manifests.sh wrote the golden files with kubectl kustomize."""
    golden = [d for d in yaml.safe_load_all((GOLDEN / f"{variant}.yaml").read_text()) if d]
    assert _norm(kustomize.render(VARIANTS[variant])) == _norm(golden)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_valid_against_the_api_schemas(variant: str, version: str) -> None:
    for doc in kustomize.render(VARIANTS[variant]):
        kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("version", VERSIONS)
def test_each_file_as_written_is_valid(version: str) -> None:
    """The base's files one by one (the components' patches are partial objects: validated
    merged, above)."""
    for path in sorted(BASE.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            for doc in yaml.safe_load_all(path.read_text()):
                kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize(("where", "change"), [
    ("a misspelt field", lambda c: c.update(imagePullPolice="Always")),
    ("a wrong type", lambda c: c.update(command="capctl-node watch")),
], ids=["unknown-field", "wrong-type"])
def test_the_validation_can_fail(where: str, change: Any) -> None:
    docs = kustomize.render()
    ds = copy.deepcopy(kustomize.find(docs, "DaemonSet"))
    change(ds["spec"]["template"]["spec"]["containers"][0])
    for version in VERSIONS:
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(ds, version, strict=True)


@pytest.mark.parametrize("variant", VARIANTS)
def test_gpu_nodes_only_and_no_host_network(variant: str) -> None:
    pod = _pod(kustomize.render(VARIANTS[variant]))
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} \
        in pod["tolerations"]
    assert pod["hostNetwork"] is False and pod["hostPID"] is False and pod["hostIPC"] is False
    assert pod["automountServiceAccountToken"] is False


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_host_path_is_known_and_mounted(variant: str) -> None:
    pod = _pod(kustomize.render(VARIANTS[variant]))
    host = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    assert set(host.values()) <= set(HOST_PATHS)
    mounted = {m["name"] for c in pod["initContainers"] + pod["containers"]
               for m in c["volumeMounts"]}
    assert set(host) <= mounted
    # The base mounts no runtime directory: only the components that write there do.
    runtime_dirs = {"/opt", "/usr/share/containers/oci/hooks.d", "/etc/containerd/conf.d"}
    assert bool(runtime_dirs & set(host.values())) == bool({"crio-hooks", "containerd"}
                                                          & set(VARIANTS[variant]))


def test_least_privilege() -> None:
    pod = _pod(kustomize.render(VARIANTS["all"]))
    (init,) = pod["initContainers"]
    sc = init["securityContext"]
    assert sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["readOnlyRootFilesystem"] is True
    (watch,) = pod["containers"]
    # Privileged for NVML alone; the reason is written beside it.
    assert watch["securityContext"]["privileged"] is True
    assert watch["securityContext"]["readOnlyRootFilesystem"] is True
    text = (BASE / "daemonset.yaml").read_text()
    assert "NVML" in text and "device-cgroup" in text


def test_probes_run_capctl_health() -> None:
    (watch,) = _pod(kustomize.render())["containers"]
    heartbeat = watch["command"][watch["command"].index("--heartbeat") + 1]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        cmd = watch[probe]["exec"]["command"]
        assert cmd[:4] == ["/opt/capctl/bin/capctl", "health", "--heartbeat", heartbeat], probe
        # Each probe's command line runs past click (capctl.commands.fast).
        parsed = fast_command(cmd[1:], "health")
        assert parsed is not None and fast.health_options(parsed[2]) is not None, probe
    assert "--ready" in watch["readinessProbe"]["exec"]["command"]
    assert "--ready" not in watch["livenessProbe"]["exec"]["command"]
    mounts = {m["mountPath"] for m in watch["volumeMounts"]}
    assert str(Path(heartbeat).parent) in mounts


def test_the_node_script_reads_what_the_daemonset_passes() -> None:
    script = (REPO / "deploy" / "image" / "capctl-node").read_text()
    pod = _pod(kustomize.render())
    configmap = kustomize.find(kustomize.render(), "ConfigMap")
    for c in pod["initContainers"] + pod["containers"]:
        env = {e["name"]: e for e in c["env"]}
        for name, e in env.items():
            ref = e.get("valueFrom", {}).get("configMapKeyRef")
            if ref is not None:
                assert ref["key"] in configmap["data"], name
                assert re.search(rf"\${{{name}:-}}", script), name  # capctl-node reads it
        assert env["CAPCTL_CONFIG"]["value"] == "/opt/capctl/etc/capctl.toml"
        # The driver root reaches capctl only through [host] of that copy (capctl-node), the
        # place the hook and capctl-runtime on the node read it from too.
        assert "CAPCTL_ROOT" not in env
    assert "config=$opt/etc/capctl.toml" in script

"""The trust policy: which of a container's device requests capctl accepts.  Pure.

A container asks for devices in one of two ways (``docs/trust.md`` has the sources):

- ``NVIDIA_VISIBLE_DEVICES`` in its environment.  Anyone who can set a container's env can
  write it (in Kubernetes, every pod; CUDA base images ship ``=all``), so ``[requests]
  envvar`` says whose env capctl believes: ``"any"``, ``"privileged"``, or ``"auto"``:
  privileged only for a container a Kubernetes CRI runtime made, any for the others.
- The NVIDIA device plugin's volume-mounts list: the env names :data:`~oci.DEVICE_LIST_DIR`
  and each allocated device is a mount ``DEVICE_LIST_DIR/<id>`` of ``/dev/null``.  Only the
  kubelet adds such mounts to a pod that may not use hostPath, so when ``[requests]
  volume_mounts`` is on and the list is there, it is the request and the env is not.
  A mount there whose source is not ``/dev/null`` is not the plugin's and is ignored.

An untrusted request is ignored, not refused: the container starts without NVIDIA devices
(as with the container toolkit), so CPU-only pods built on CUDA images keep working.
"""

from __future__ import annotations

from capctl._lite.record import Record
from capctl.request import oci

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from capctl.policy.settings import RequestSettings

#: OCI annotations a CRI runtime puts on every container it creates: containerd's CRI plugin
#: (its CRI ``annotations.go``: ContainerType, SandboxID) and CRI-O (``pkg/annotations``:
#: ContainerType, SandboxID).  Not any ``io.kubernetes.cri-o.*`` key: podman shares CRI-O's
#: annotation package and puts ``io.kubernetes.cri-o.TTY`` on every container it runs, so a
#: prefix would make every podman container a Kubernetes one (seen with podman 4.3).
CONTAINERD_CRI_KEYS = ("io.kubernetes.cri.container-type", "io.kubernetes.cri.sandbox-id")
CRIO_KEYS = ("io.kubernetes.cri-o.ContainerType", "io.kubernetes.cri-o.SandboxID")
#: The only source the device plugin gives a volume-mounts entry.
DEVICE_LIST_SOURCE = "/dev/null"


class Decision(Record):
    """What to take as the request: ``value`` (``NVIDIA_VISIBLE_DEVICES`` syntax, or None for
    nothing) and the log lines that explain the choice."""

    value: str | None
    notes: tuple[str, ...] = ()


def cri_runtime(annotations: Mapping[str, str]) -> str | None:
    """``"containerd"`` or ``"CRI-O"`` when a Kubernetes CRI runtime made the container."""
    if any(k in annotations for k in CONTAINERD_CRI_KEYS):
        return "containerd"
    if any(k in annotations for k in CRIO_KEYS):
        return "CRI-O"
    return None


def envvar_trusted(policy: str, ctr: oci.Container) -> tuple[bool, str]:
    """Whether ``policy`` believes ``ctr``'s env, and why (for the log)."""
    runtime = cri_runtime(ctr.annotations)
    if policy == "auto":
        effective = "privileged" if runtime is not None else "any"
        why = f'envvar = "auto": "{effective}" for a ' + (
            f"Kubernetes container ({runtime})" if runtime else "container no CRI runtime made"
        )
    else:
        effective, why = policy, f'envvar = "{policy}"'
    if effective == "any":
        return True, why
    return ctr.privileged, why


def decide(settings: RequestSettings, ctr: oci.Container) -> Decision:
    """The request to act on for ``ctr`` under ``settings`` (see the module docstring)."""
    env = ctr.env.get(oci.VISIBLE)
    notes: list[str] = []
    listed = [dev_id for dev_id, source in ctr.device_list if source == DEVICE_LIST_SOURCE]
    forged = [dev_id for dev_id, source in ctr.device_list if source != DEVICE_LIST_SOURCE]
    if forged:
        notes.append(
            f"ignoring mount(s) {', '.join(f'{oci.DEVICE_LIST_DIR}/{d}' for d in forged)}: "
            f"a device-list mount's source must be {DEVICE_LIST_SOURCE}"
        )
    if settings.volume_mounts and listed:
        notes.append(f"request from the volume-mounts device list ({oci.DEVICE_LIST_DIR})")
        return Decision(",".join(listed), tuple(notes))
    if env is not None and env.strip(" \t").rstrip("/") == oci.DEVICE_LIST_DIR:
        # The plugin's marker, not a device list: never parse it as one.
        why = ("no device-list mounts" if settings.volume_mounts
               else "[requests] volume_mounts = false")
        notes.append(f"{oci.VISIBLE}={env}: {why}; no devices")
        return Decision(None, tuple(notes))
    if env is None:
        return Decision(None, tuple(notes))
    trusted, why = envvar_trusted(settings.envvar, ctr)
    if not trusted:
        notes.append(
            f"ignoring {oci.VISIBLE}={env[:64]!r}: [requests] {why} accepts it only from "
            "privileged containers; starting without NVIDIA devices"
        )
        return Decision(None, tuple(notes))
    return Decision(env, tuple(notes))

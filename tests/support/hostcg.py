"""The host's cgroup layout, and the one place every real-kernel and real-client test asks
whether it can run here (no capctl imports, on purpose: the tests judge capctl's own
detection against this).

Three layouts exist in the wild, and the suite runs on each:

* **v2-only** (the default of current Debian, Ubuntu, Fedora, RHEL): cgroup2 at
  ``/sys/fs/cgroup``, no v1 hierarchy.  Clients use cgroup2 as they are; there is no v1.
* **hybrid** (this lab): v1 controllers under ``/sys/fs/cgroup/<controller>``, cgroup2 at
  ``/sys/fs/cgroup/unified``.  Clients use v1; the harnesses run a client on cgroup2 in a
  private mount namespace with cgroup2 mounted at ``/sys/fs/cgroup`` (:data:`V2_NEEDS_NAMESPACE`).
* **v1-only** (legacy): v1 controllers, no cgroup2; cgroup2 tests skip.

``scripts/v2only.sh`` turns this lab into a v2-only host for one command (CI runs the suite
through it once more).  Skip reasons name what is missing, and are on the allow-list in
``tests/conftest.py``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

CGROUP_ROOT = Path("/sys/fs/cgroup")
IS_ROOT = os.geteuid() == 0

NO_V1 = "needs the cgroup v1 devices hierarchy (this host has none: cgroup-v2-only)"
#: podman 4.3's ``kube play`` gives a pod's cgroup on cgroup2 a device program that refuses
#: even ``/dev/null`` to the pod's containers (seen on this lab's cgroup2, private mount or
#: scripts/v2only.sh alike), so the DaemonSet's pod runs on v1 only.
KUBE_PLAY_NEEDS_V1 = ("podman 4.3 kube play needs the cgroup v1 devices hierarchy (on cgroup2 "
                      "its pods' device program refuses /dev/null)")
NO_V2 = "needs a cgroup2 hierarchy (this host has none: cgroup-v1-only)"


def _unescape(field: str) -> str:
    """mountinfo's octal escapes (``\\040`` for a space)."""
    return field.encode().decode("unicode_escape") if "\\" in field else field


@dataclass(frozen=True)
class Layout:
    """Where the device-controlling hierarchies are mounted (``None``: not at all)."""

    v1_devices: Path | None
    v2: Path | None

    @property
    def v2_only(self) -> bool:
        """cgroup2 is the hierarchy at /sys/fs/cgroup: what every client uses by itself."""
        return self.v2 == CGROUP_ROOT

    @property
    def v2_needs_namespace(self) -> bool:
        """Clients run on cgroup2 only in a private mount namespace (a hybrid host)."""
        return self.v2 is not None and not self.v2_only

    def v2_has(self, controller: str) -> bool:
        """Whether the cgroup2 root offers *controller* (a v1 hierarchy may hold it instead)."""
        if self.v2 is None:
            return False
        try:
            return controller in (self.v2 / "cgroup.controllers").read_text().split()
        except OSError:
            return False

    def default_is_v2(self) -> bool:
        """Whether daemons that pick by themselves (dockerd, containerd, podman) use cgroup2."""
        return self.v2_only

    def device_dir(self, rel: str, cgroup2: bool) -> Path:
        """The host directory of the device cgroup *rel* (``/a/b``) on v1 or cgroup2."""
        base = self.v2 if cgroup2 else self.v1_devices
        if base is None:
            raise RuntimeError(NO_V2 if cgroup2 else NO_V1)
        return base / rel.strip("/")


def parse_layout(mountinfo: str) -> Layout:
    """The layout from ``/proc/self/mountinfo``'s text: the v1 mount with the ``devices``
    option, and cgroup2 at /sys/fs/cgroup if mounted there, else its first mount under it."""
    v1: Path | None = None
    v2: list[Path] = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")
        fstype, options = fields[sep + 1], fields[sep + 3].split(",")
        point = Path(_unescape(fields[4]))
        if fstype == "cgroup" and "devices" in options:
            v1 = point
        elif fstype == "cgroup2":
            v2.append(point)
    under = [p for p in v2 if CGROUP_ROOT in (p, *p.parents)]
    chosen = CGROUP_ROOT if CGROUP_ROOT in under else (under[0] if under else None)
    if chosen == CGROUP_ROOT and v1 is not None and CGROUP_ROOT in v1.parents:
        v1 = None  # cgroup2 mounted over the v1 tmpfs hides every v1 mount below it
    return Layout(v1, chosen)


def _detect() -> Layout:
    try:
        with open("/proc/self/mountinfo") as f:
            return parse_layout(f.read())
    except OSError:
        return Layout(None, None)


LAYOUT = _detect()


#: What each client's tests need besides root.
PODMAN_TOOLS = ("runc", "busybox", "podman")
DOCKER_TOOLS = ("runc", "busybox", "dockerd", "docker")
CONTAINERD_TOOLS = ("runc", "busybox", "containerd", "ctr")


def missing_tools(names: Sequence[str]) -> list[str]:
    """The commands of *names* not on PATH (``/bin/busybox`` for ``busybox``)."""
    out = []
    for name in names:
        found = Path("/bin/busybox").exists() if name == "busybox" else shutil.which(name)
        if not found:
            out.append("busybox-static" if name == "busybox" else name)
    return out


def why_not(*, tools: Sequence[str] = (), v1: bool = False, v2: bool = False) -> str | None:
    """Why a test needing root, *tools* and the named hierarchies cannot run here, or None."""
    if not IS_ROOT:
        return "needs root (cgroups, mknod, containers)"
    if v1 and LAYOUT.v1_devices is None:
        return NO_V1
    if v2 and LAYOUT.v2 is None:
        return NO_V2
    if v2 and LAYOUT.v2_needs_namespace and not shutil.which("unshare"):
        return "needs unshare(1) to run a client on cgroup2 on this hybrid host"
    absent = missing_tools(tools)
    return f"needs {', '.join(absent)}" if absent else None


def needs(*, tools: Sequence[str] = (), v1: bool = False, v2: bool = False) -> pytest.MarkDecorator:
    """A skip marker from :func:`why_not`."""
    reason = why_not(tools=tools, v1=v1, v2=v2)
    return pytest.mark.skipif(reason is not None, reason=reason or "")


def skip_unless(*, tools: Sequence[str] = (), v1: bool = False, v2: bool = False) -> None:
    """Skip the running test (for parameters known only at run time) as :func:`needs`."""
    reason = why_not(tools=tools, v1=v1, v2=v2)
    if reason is not None:
        pytest.skip(reason)


#: The v1 devices hierarchy (where it would be when absent: ``is_dir()`` is then False).
V1_DEVICES = LAYOUT.v1_devices or CGROUP_ROOT / "devices"
#: The cgroup2 hierarchy: /sys/fs/cgroup on a v2-only host, /sys/fs/cgroup/unified on a hybrid one.
V2_ROOT = LAYOUT.v2 or CGROUP_ROOT / "unified"

"""Smoke test of the systemd-nspawn harness, and the fact about the systemd cgroup driver that
capctl must handle.

Inside a booted systemd (cgroup v1 and cgroup v2), runc runs containers with
``--systemd-cgroup`` and cgroupsPath ``system.slice:capctl:<id>``, so each container is a
transient scope whose ``DeviceAllow=`` systemd owns.  ``systemctl daemon-reload`` re-applies
that list:

* v1: a rule written by hand into the scope's ``devices.allow`` (ENXIO) is dropped by the
  reload (EPERM again).
* both: a rule in the OCI spec (``linux.resources.devices`` + ``linux.devices``) reaches
  systemd only if ``/dev/char/MAJ:MIN`` resolves where runc runs (runc stats it, else it logs
  "skipping device ... for systemd"); with the link the rule survives the reload, without it
  the reload drops it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cgroups import TEST_MAJOR, make_nodes
from tests.support.hostcg import skip_unless
from tests.support.nspawn import (
    GuestContainer,
    GuestRunc,
    SystemdContainer,
    ensure_rootfs,
)

from .conftest import needs_nspawn

pytestmark = needs_nspawn


@pytest.fixture(scope="module", params=[False, True], ids=["v1", "v2"])
def box(request: pytest.FixtureRequest) -> Iterator[SystemdContainer]:
    skip_unless(v1=not request.param, v2=bool(request.param))
    start = time.monotonic()
    rootfs = ensure_rootfs()
    rootfs_s = time.monotonic() - start
    with SystemdContainer(rootfs, cgroup2=request.param) as box:
        print(
            f"\nnspawn {'v2' if request.param else 'v1'}: rootfs {rootfs_s:.1f} s,"
            f" boot {box.boot_seconds:.1f} s, {box.system_state}"
        )
        yield box


@pytest.fixture
def runc(box: SystemdContainer) -> Iterator[GuestRunc]:
    with GuestRunc(box) as runc:
        yield runc


@pytest.fixture
def nodes(box: SystemdContainer) -> Path:
    """Nodes ``n0``..``n3`` of the unregistered major, in the box's state directory."""
    directory = box.state / "nodes"
    if not directory.exists():
        make_nodes(directory, range(4))
    return directory


def rule(minor: int) -> dict[str, object]:
    return {"allow": True, "type": "c", "major": TEST_MAJOR, "minor": minor, "access": "rwm"}


def device(minor: int) -> dict[str, object]:
    return {
        "path": f"/dev/capctl{minor}", "type": "c", "major": TEST_MAJOR, "minor": minor,
        "fileMode": 0o666, "uid": 0, "gid": 0,
    }  # fmt: skip


def device_allow(box: SystemdContainer, ctr: GuestContainer) -> str:
    return box.run(["systemctl", "show", "--property=DeviceAllow", ctr.unit]).stdout


def test_boot(box: SystemdContainer) -> None:
    assert box.system_state in ("running", "degraded"), box.failed_units
    fstype = box.run(["stat", "-f", "-c", "%T", "/sys/fs/cgroup"]).stdout.strip()
    assert fstype == ("cgroup2fs" if box.cgroup2 else "tmpfs")
    python = box.python()
    res = box.run([python, "-c", "import capctl, click; print(capctl.__file__)"])
    assert res.stdout.strip().endswith("capctl/__init__.py")
    assert "/system.slice/run-u" in box.systemd_run(["cat", "/proc/self/cgroup"]).stdout


def test_v1_hand_written_rule_dropped_by_daemon_reload(
    box: SystemdContainer, runc: GuestRunc, nodes: Path
) -> None:
    if box.cgroup2:
        pytest.skip("devices.allow is cgroup v1")
    ctr = runc.run_detached(runc.bundle(mounts=[(nodes, "/nodes")]))
    assert runc.probe(ctr, "/nodes/n0") == "EPERM"
    cgroup = runc.device_cgroup(ctr)  # /sys/fs/cgroup/devices/system.slice/capctl-<id>.scope
    assert cgroup.startswith("/sys/fs/cgroup/devices/system.slice/capctl-"), cgroup
    box.run(["sh", "-c", f"echo 'c {TEST_MAJOR}:0 rwm' > {cgroup}/devices.allow"])
    assert runc.probe(ctr, "/nodes/n0") == "ENXIO"
    box.run(["systemctl", "daemon-reload"])
    assert runc.probe(ctr, "/nodes/n0") == "EPERM"  # the hand-written grant is gone


def test_spec_rule_survives_daemon_reload_with_dev_char_link(
    box: SystemdContainer, runc: GuestRunc, nodes: Path
) -> None:
    link = f"/dev/char/{TEST_MAJOR}:1"  # in the box's /dev, where runc stats it
    box.run(["ln", "-sf", box.guest_path(nodes / "n1"), link])
    try:
        bundle = runc.bundle(
            mounts=[(nodes, "/nodes")], devices=[device(1)], device_rules=[rule(1)]
        )
        ctr = runc.run_detached(bundle)
        assert "skipping device" not in ctr.log
        assert f"/dev/char/{TEST_MAJOR}:1 rwm" in device_allow(box, ctr)
        assert runc.probe(ctr, "/nodes/n1") == "ENXIO"
        assert runc.probe(ctr, "/dev/capctl1") == "ENXIO"
        box.run(["systemctl", "daemon-reload"])
        assert runc.probe(ctr, "/nodes/n1") == "ENXIO"
        assert runc.probe(ctr, "/dev/capctl1") == "ENXIO"
    finally:
        box.run(["rm", "-f", link])


def test_spec_rule_without_dev_char_link_dropped_by_daemon_reload(
    box: SystemdContainer, runc: GuestRunc, nodes: Path
) -> None:
    bundle = runc.bundle(mounts=[(nodes, "/nodes")], devices=[device(2)], device_rules=[rule(2)])
    ctr = runc.run_detached(bundle)
    assert f"skipping device /dev/char/{TEST_MAJOR}:2 for systemd" in ctr.log
    assert f"{TEST_MAJOR}:2" not in device_allow(box, ctr)
    assert runc.probe(ctr, "/dev/capctl2") == "ENXIO"  # runc's own rule (v1 file / v2 program)
    box.run(["systemctl", "daemon-reload"])
    assert runc.probe(ctr, "/dev/capctl2") == "EPERM"  # systemd re-applied its list
    assert runc.probe(ctr, "/nodes/n2") == "EPERM"

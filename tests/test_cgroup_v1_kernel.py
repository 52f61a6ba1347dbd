"""cgroup v1 device access on the real kernel: a fresh child cgroup, then a runc container.

A node of an unregistered major opens with ENXIO when the cgroup allows it and EPERM when
it denies it.  Every cgroup here is a child we created (checked); all are removed afterwards.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from capctl import cgroup
from capctl.cgroup import Cgroup, Version
from capctl.cgroup.v1 import V1Devices
from capctl.edits.rules import char
from capctl.errors import CgroupError
from tests.support.cgroups import V1_DEVICES, Prober, assert_child_cgroup, child_cgroup, make_nodes
from tests.support.hostcg import needs
from tests.support.runc import BindMount, RuncHarness

pytestmark = [
    pytest.mark.kernel,
    needs(v1=True),
]
needs_runc = needs(tools=("runc", "busybox"), v1=True)


def test_refuses_the_root_cgroup() -> None:
    with pytest.raises(CgroupError, match="root cgroup"):
        V1Devices(V1_DEVICES)


def test_child_cgroup_grant_revoke_rollback(tmp_path: Path) -> None:
    n1, n2, n3, n4 = make_nodes(tmp_path / "nodes", [1, 2, 3, 4])
    with child_cgroup(V1_DEVICES) as path, Prober(path) as probe:
        assert_child_cgroup(path, V1_DEVICES)
        target = Cgroup(Version.V1, path)
        assert cgroup.allows_all(target)  # a new child inherits allow-all
        (path / "devices.deny").write_text("a")  # deny everything
        assert not cgroup.allows_all(target)
        assert [probe.open(n) for n in (n1, n2, n3, n4)] == ["EPERM"] * 4

        # found from the prober's pid, as the hook finds a container
        assert cgroup.detect(probe.pid) == target
        undo = cgroup.grant(probe.pid, [char(238, 1, "r"), char(238, 3, "rw")])
        assert undo.changed
        assert probe.open(n1, "r") == "ENXIO"
        assert probe.open(n1, "w") == "EPERM"  # only r granted
        assert probe.open(n3, "rw") == "ENXIO"
        assert probe.open(n2) == probe.open(n4) == "EPERM"
        assert [r.line() for r in cgroup.allowed(target)] == ["c 238:1 r", "c 238:3 rw"]

        # granting again changes nothing
        assert not cgroup.grant(target, [char(238, 1, "r")]).changed

        # revoke part of a grant
        cgroup.revoke(target, [char(238, 3, "w")]).release()
        assert probe.open(n3, "r") == "ENXIO" and probe.open(n3, "w") == "EPERM"

        # rollback restores the state from before the grant exactly
        undo.rollback()
        assert (path / "devices.list").read_text() == ""
        assert [probe.open(n) for n in (n1, n2, n3, n4)] == ["EPERM"] * 4


def test_revoke_refuses_a_hole_in_a_wildcard(tmp_path: Path) -> None:
    with child_cgroup(V1_DEVICES) as path:
        (path / "devices.deny").write_text("a")
        (path / "devices.allow").write_text("c 238:* r")
        with pytest.raises(CgroupError, match="wildcard"):
            cgroup.revoke(Cgroup(Version.V1, path), [char(238, 1, "r")])
        assert (path / "devices.list").read_text() == "c 238:* r\n"


def test_grant_rolls_back_when_the_context_fails(tmp_path: Path) -> None:
    (n1,) = make_nodes(tmp_path / "nodes", [1])
    with child_cgroup(V1_DEVICES) as path, Prober(path) as probe:
        (path / "devices.deny").write_text("a")
        with pytest.raises(RuntimeError), cgroup.grant(probe.pid, [char(238, 1, "r")]):
            assert probe.open(n1) == "ENXIO"
            raise RuntimeError("a later hook step failed")
        assert probe.open(n1) == "EPERM"


@needs_runc
def test_runc_container(tmp_path: Path) -> None:
    make_nodes(tmp_path / "nodes", [1, 2])
    with RuncHarness(tmp_path, cgroup2=False) as runc:
        bundle = runc.bundle(mounts=[BindMount(tmp_path / "nodes", "/nodes")])
        ctr = runc.run_detached(bundle)
        assert runc.probe(ctr, "/nodes/n1") == "EPERM"
        assert runc.probe(ctr, "/dev/null", "rw") == "OK"

        target = cgroup.detect(ctr.pid)
        assert target == Cgroup(Version.V1, runc.device_cgroup(bundle))
        assert_child_cgroup(Path(target.path), V1_DEVICES)
        before = cgroup.allowed(ctr.pid)
        assert not cgroup.allows_all(ctr.pid)

        with cgroup.grant(ctr.pid, [char(238, 1, "r")]):
            pass  # kept
        assert runc.probe(ctr, "/nodes/n1") == "ENXIO"
        assert runc.probe(ctr, "/nodes/n2") == "EPERM"
        assert runc.probe(ctr, "/dev/null", "rw") == "OK"

        cgroup.revoke(ctr.pid, [char(238, 1, "r")]).release()
        assert runc.probe(ctr, "/nodes/n1") == "EPERM"
        assert cgroup.allowed(ctr.pid) == before

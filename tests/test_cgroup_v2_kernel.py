"""cgroup v2 (eBPF) device access on the real kernel: child cgroups, then runc in unified mode.

A node of an unregistered major opens with ENXIO when the filter allows it and EPERM when it
denies it.  Every cgroup is a child of /sys/fs/cgroup/unified that we created (checked);
programs and cgroups are removed afterwards.
"""

from __future__ import annotations

import errno
import json
import logging
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from capctl import cgroup
from capctl.cgroup import Cgroup, Version, devfilter
from capctl.cgroup.bpf import (
    BPF_F_REPLACE,
    Bpf,
    BpfError,
    ProgInfo,
    memlock_for_bpf,
)
from capctl.cgroup.v2 import V2Devices
from capctl.edits.rules import DENY_ALL, char
from capctl.errors import CgroupError
from capctl.request.oci import oci_device_rules
from tests.support.cgroups import (
    V2_ROOT,
    Prober,
    assert_child_cgroup,
    attach_deny_all,
    child_cgroup,
    make_nodes,
)
from tests.support.hostcg import LAYOUT, needs
from tests.support.runc import BindMount, RuncHarness

REPO = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.kernel,
    needs(v2=True),
]
needs_runc = needs(tools=("runc", "busybox"), v2=True)


class ZeroedReader(Bpf):
    """A kernel that withholds program images (as with bpf_jit_harden / kptr_restrict)."""

    def prog_info(self, prog_fd: int) -> ProgInfo:
        info = super().prog_info(prog_fd)
        return ProgInfo(info.id, info.type, info.name, bytes(len(info.xlated)))


def lengths(dev: V2Devices) -> list[int]:
    return [len(p) for p in dev.programs()]


def test_refuses_the_root_cgroup() -> None:
    with pytest.raises(CgroupError, match="root cgroup"):
        V2Devices(V2_ROOT)


def test_no_program_means_everything_allowed(tmp_path: Path) -> None:
    (n1,) = make_nodes(tmp_path / "nodes", [1])
    with child_cgroup(V2_ROOT) as path, Prober(path) as probe:
        target = Cgroup(Version.V2, path)
        assert cgroup.allows_all(target)
        assert not cgroup.grant(target, [char(238, 1, "r")]).changed
        assert V2Devices(path).program_ids() == ()
        assert probe.open(n1) == "ENXIO"


def test_child_cgroup_extend_regrant_revoke_rollback(tmp_path: Path) -> None:
    n1, n2, n3, n4 = make_nodes(tmp_path / "nodes", [1, 2, 3, 4])
    with child_cgroup(V2_ROOT) as path, Prober(path) as probe:
        attach_deny_all(path)
        dev = V2Devices(path)
        target = Cgroup(Version.V2, path)
        assert not dev.allows_all()
        original = dev.programs()
        assert [probe.open(n) for n in (n1, n2, n3, n4)] == ["EPERM"] * 4

        undo = cgroup.grant(target, [char(238, 1, "r"), char(238, 3, "rw")])
        assert probe.open(n1, "r") == "ENXIO"
        assert probe.open(n1, "w") == "EPERM"
        assert probe.open(n3, "rw") == "ENXIO"
        assert probe.open(n2) == probe.open(n4) == "EPERM"
        assert [r.line() for r in cgroup.allowed(target)] == ["c 238:1 r", "c 238:3 rw"]
        granted_len = lengths(dev)
        granted_ids = dev.program_ids()
        assert len(granted_ids) == 1

        # the same grant again: no reload, no growth
        again = cgroup.grant(target, [char(238, 3, "rw"), char(238, 1, "r")])
        assert not again.changed and dev.program_ids() == granted_ids
        # a grant that adds nothing new beyond a merge also keeps the length stable
        undo2 = cgroup.grant(target, [char(238, 4, "r")])
        assert probe.open(n4) == "ENXIO"
        undo2.rollback()
        assert lengths(dev) == granted_len and probe.open(n4) == "EPERM"

        # revoke one rule, then the rest: back to the runtime's own program
        cgroup.revoke(target, [char(238, 3, "rw")]).release()
        assert probe.open(n3) == "EPERM" and probe.open(n1) == "ENXIO"
        with pytest.raises(CgroupError, match="did not grant"):
            cgroup.revoke(target, [char(238, 2, "r")])
        cgroup.revoke(target, [char(238, 1, "r")]).release()
        assert dev.programs() == original
        assert probe.open(n1) == "EPERM"

        # re-grant: same program as the first time
        regrant = cgroup.grant(target, [char(238, 1, "r"), char(238, 3, "rw")])
        assert lengths(dev) == granted_len
        regrant.release()

        # a stale handle (its program was replaced since) refuses to roll back
        with pytest.raises(CgroupError, match="changed since"):
            undo.rollback()
        assert lengths(dev) == granted_len

        # a fresh handle restores what was there before it
        cgroup.grant(target, [char(238, 2, "r")]).rollback()
        assert lengths(dev) == granted_len and probe.open(n2) == "EPERM"
        cgroup.revoke(target, [char(238, 1, "r"), char(238, 3, "rw")]).release()
        assert dev.programs() == original
        assert [probe.open(n) for n in (n1, n2, n3, n4)] == ["EPERM"] * 4


def test_several_programs_are_all_extended(tmp_path: Path) -> None:
    n1, n2 = make_nodes(tmp_path / "nodes", [1, 2])
    with child_cgroup(V2_ROOT) as path, Prober(path) as probe:
        attach_deny_all(path)
        attach_deny_all(path)
        dev = V2Devices(path)
        with cgroup.grant(Cgroup(Version.V2, path), [char(238, 1, "r")]):
            pass
        assert len(dev.program_ids()) == 2
        assert all(devfilter.split(p)[0] == [char(238, 1, "r")] for p in dev.programs())
        assert probe.open(n1) == "ENXIO" and probe.open(n2) == "EPERM"


def test_unreadable_program_falls_back_to_the_spec(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    n1, n2, n3 = make_nodes(tmp_path / "nodes", [1, 2, 3])
    with child_cgroup(V2_ROOT) as path, Prober(path) as probe:
        attach_deny_all(path)
        dev = V2Devices(path, bpf=ZeroedReader())
        ids = dev.program_ids()

        # without the container's rules: fail closed, nothing changed
        with pytest.raises(CgroupError, match="cannot be read back"):
            dev.grant([char(238, 1, "r")])
        assert dev.program_ids() == ids and probe.open(n1) == "EPERM"

        spec = [DENY_ALL, char(238, 2, "r")]
        with caplog.at_level(logging.WARNING, logger="capctl.cgroup"):
            undo = dev.grant([char(238, 1, "r")], spec_rules=spec)
        assert "rebuilding the whole filter" in caplog.text
        assert probe.open(n1) == "ENXIO"  # our grant
        assert probe.open(n2) == "ENXIO"  # from the spec
        assert probe.open(n3) == "EPERM"
        rebuilt = V2Devices(path).programs()[0]  # readable for the real reader
        assert devfilter.split(rebuilt) == ([char(238, 1, "r")], devfilter.full_filter(spec))

        undo.rollback()
        assert V2Devices(path).program_ids() == ids
        assert probe.open(n1) == probe.open(n2) == "EPERM"


_NS_GRANT = """
import json, sys
from capctl import cgroup
from capctl.edits.rules import parse_rule
pid, rules = int(sys.argv[1]), [parse_rule(r) for r in sys.argv[2:]]
cg = cgroup.detect(pid)
undo = cgroup.grant(pid, rules)
undo.release()
print(json.dumps({"version": int(cg.version), "path": str(cg.path), "changed": undo.changed}))
"""


@needs_runc
def test_runc_container_unified(tmp_path: Path) -> None:
    make_nodes(tmp_path / "nodes", [1, 2])
    with RuncHarness(tmp_path, cgroup2=True) as runc:
        bundle = runc.bundle(mounts=[BindMount(tmp_path / "nodes", "/nodes")])
        ctr = runc.run_detached(bundle)
        host_path = runc.device_cgroup(bundle)
        assert_child_cgroup(host_path, V2_ROOT)
        assert runc.probe(ctr, "/nodes/n1") == "EPERM"
        assert runc.probe(ctr, "/dev/null", "rw") == "OK"
        dev = V2Devices(host_path)
        runc_prog = dev.programs()
        assert len(runc_prog) == 1  # runc's own filter

        if LAYOUT.v2_needs_namespace:
            # From the host namespace (hybrid), the mount says v1 and the container is in the
            # root devices cgroup there: refused, not silently mis-granted.
            with pytest.raises(CgroupError, match="root devices cgroup"):
                cgroup.detect(ctr.pid)
        else:  # a v2-only host: the host's view is runc's
            assert cgroup.detect(ctr.pid).path == str(host_path)

        # Where runc runs (the private namespace), capctl finds the cgroup2 cgroup itself.
        def ns_grant(*rules: str) -> dict[str, object]:
            argv = runc.ns_command([sys.executable, "-c", _NS_GRANT, str(ctr.pid), *rules])
            out = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=True)
            result: dict[str, object] = json.loads(out.stdout)
            return result

        result = ns_grant("c 238:1 r")
        assert result == {
            "version": 2,
            "path": f"/sys/fs/cgroup{bundle.cgroup}",
            "changed": True,
        }
        assert runc.probe(ctr, "/nodes/n1") == "ENXIO"
        assert runc.probe(ctr, "/nodes/n2") == "EPERM"
        assert runc.probe(ctr, "/dev/null", "rw") == "OK"  # runc's own rules still apply
        assert runc.probe(ctr, "/nodes/n1", "w") == "EPERM"
        granted_len = [len(p) for p in dev.programs()]
        assert devfilter.split(dev.programs()[0])[1] == runc_prog[0]

        # re-grant: no growth
        assert ns_grant("c 238:1 r")["changed"] is False
        assert [len(p) for p in dev.programs()] == granted_len

        # revoke: runc's program again
        dev.revoke([char(238, 1, "r")]).release()
        assert dev.programs() == runc_prog
        assert runc.probe(ctr, "/nodes/n1") == "EPERM"

        # fallback: pretend runc's program cannot be read; rebuild from the OCI spec
        spec_rules = oci_device_rules(bundle.config)
        V2Devices(host_path, bpf=ZeroedReader()).grant(
            [char(238, 2, "r")], spec_rules=spec_rules
        ).release()
        assert runc.probe(ctr, "/nodes/n2") == "ENXIO"
        assert runc.probe(ctr, "/nodes/n1") == "EPERM"
        assert runc.probe(ctr, "/dev/null", "rw") == "OK"  # runtime defaults kept
        assert runc.probe(ctr, "/dev/tty", "r") in ("ENXIO", "OK", "ENOENT")


class NoReplaceKernel(Bpf):
    """A kernel before 5.6: BPF_F_REPLACE is an unknown flag (EINVAL)."""

    def prog_attach(self, prog_fd: int, cgroup_fd: int, *, flags: int, replace_fd: int = 0) -> None:
        if flags & BPF_F_REPLACE:
            raise BpfError("PROG_ATTACH", errno.EINVAL)
        super().prog_attach(prog_fd, cgroup_fd, flags=flags, replace_fd=replace_fd)


def test_without_bpf_f_replace_attach_then_detach(tmp_path: Path) -> None:
    n1, n2 = make_nodes(tmp_path / "nodes", [1, 2])
    with child_cgroup(V2_ROOT) as path, Prober(path) as probe:
        attach_deny_all(path)
        dev = V2Devices(path, bpf=NoReplaceKernel())
        original = dev.programs()
        undo = dev.grant([char(238, 1, "r")])
        assert len(dev.program_ids()) == 1  # the old one was detached
        assert probe.open(n1) == "ENXIO" and probe.open(n2) == "EPERM"
        undo.rollback()
        assert dev.programs() == original and probe.open(n1) == "EPERM"


def test_memlock_is_raised_only_for_old_kernels() -> None:
    before = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    with memlock_for_bpf("6.1.0"):
        assert resource.getrlimit(resource.RLIMIT_MEMLOCK) == before
    with memlock_for_bpf("5.4.0-150-generic"):
        soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
        assert soft == hard and (hard == resource.RLIM_INFINITY or hard == before[1])
    assert resource.getrlimit(resource.RLIMIT_MEMLOCK) == before

"""Pure parts of capctl.cgroup.systemd: which cgroups are a systemd unit's, and the entries."""

from __future__ import annotations

import pytest

from capctl.cgroup import systemd
from capctl.edits.rules import DeviceRule, DeviceType, char
from capctl.errors import CgroupError


@pytest.mark.parametrize(
    ("path", "unit"),
    [
        ("/sys/fs/cgroup/system.slice/capctl-abc.scope", "capctl-abc.scope"),
        ("/sys/fs/cgroup/devices/system.slice/docker-1f.scope", "docker-1f.scope"),
        ("/sys/fs/cgroup/kubepods.slice/kubepods-besteffort.slice/cri-containerd-9.scope",
         "cri-containerd-9.scope"),
        ("/sys/fs/cgroup/system.slice/foo.service", "foo.service"),
        ("/sys/fs/cgroup/devices/docker/0123abcd", None),  # cgroupfs driver
        ("/sys/fs/cgroup/kubepods/besteffort/pod1/0123", None),
        ("/sys/fs/cgroup/system.slice", None),
        ("/sys/fs/cgroup/mine/x.scope", None),  # not inside a slice
        ("/sys/fs/cgroup/system.slice/.scope", None),
        ("/sys/fs/cgroup/system.slice/capctl-abc.scope/inner", None),
    ],
)  # fmt: skip
def test_unit_of(path: str, unit: str | None) -> None:
    assert systemd.unit_of(path) == unit


def test_entries() -> None:
    block = DeviceRule(DeviceType.BLOCK, 8, 1, char(1, 1, "m").access)
    rules = [char(238, 5, "r"), char(195, 0, "rw"), block]
    assert systemd.entries(rules) == [
        ("/dev/char/238:5", "r"), ("/dev/char/195:0", "rw"), ("/dev/block/8:1", "m"),
    ]  # fmt: skip


@pytest.mark.parametrize("rule", [char(195, None, "rw"), char(195, 1, "rw", allow=False)])
def test_entries_refuse_wildcards_and_denies(rule: DeviceRule) -> None:
    with pytest.raises(CgroupError, match="no DeviceAllow"):
        systemd.entries([rule])

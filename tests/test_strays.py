"""``sync`` never widens access: privileged capabilities under ``--all``, and stray nodes.

Real nodes (mknod, root).  What each case would let an unprivileged user open is checked by
the kernel in ``tests/test_grants_kernel.py``; here, what ``sync``, ``list`` and ``doctor`` do.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from capctl import doctor, simulated
from capctl.cli import cli
from capctl.devfs import sync
from capctl.devfs.nodes import Action
from capctl.driver import capnames, procfs
from capctl.host import Host

from .conftest import needs_root

pytestmark = needs_root

CAPS = "dev/nvidia-caps"
GI7 = "gpu0/gi7/access"
FABRIC = ("fabric-mgmt", "fabric-imex-mgmt")


def run_sync(host: Host, *, everything: bool = False, dry_run: bool = False) -> sync.SyncReport:
    state = procfs.load(host)
    return sync.apply(host, state, sync.plan(state, everything=everything), dry_run=dry_run)


def node(root: Path, name: str) -> Path:
    return root / CAPS / f"nvidia-cap{simulated.minor_of(name)}"


def remove_fabric_proc_files(root: Path) -> None:
    for name in FABRIC:
        (root / capnames.proc_relpath(name, simulated.OTHER_SOURCES[name])).unlink()


# --- privileged capabilities ----------------------------------------------------------------


def test_all_makes_no_node_for_a_capability_of_unknown_mode(sim_host: Host, sim_root: Path) -> None:
    remove_fabric_proc_files(sim_root)
    report = run_sync(sim_host, everything=True)
    assert report.count(Action.CREATED) == 4322  # mig-minors only
    for name in FABRIC:
        assert not node(sim_root, name).exists()
        assert not (sim_root / f"dev/char/238:{simulated.minor_of(name)}").exists()
    # The mig-minors capabilities without a file get the driver's documented defaults.
    assert stat.S_IMODE(os.lstat(node(sim_root, "gpu4/gi0/access")).st_mode) == 0o444


@pytest.mark.parametrize("everything", [False, True], ids=["existing", "all"])
def test_fabric_capabilities_get_the_mode_their_file_gives(
    sim_host: Host, sim_root: Path, everything: bool
) -> None:
    run_sync(sim_host, everything=everything)
    for name in FABRIC:
        st = os.lstat(node(sim_root, name))
        assert stat.S_IMODE(st.st_mode) == 0o400 and (st.st_uid, st.st_gid) == (0, 0)


def test_no_node_from_all_is_open_to_others_beyond_the_driver_default(
    sim_host: Host, sim_root: Path
) -> None:
    """Every node ``--all`` makes: 0400 for config/fabric, 0444 only for monitor and GI/CI."""
    run_sync(sim_host, everything=True)
    table = procfs.load(sim_host).table
    for entry in os.scandir(sim_root / CAPS):
        st = entry.stat(follow_symlinks=False)
        cap = table.by_minor(os.minor(st.st_rdev))
        assert cap is not None
        if st.st_mode & 0o004:
            assert cap.source is capnames.Source.MIG and cap.name != "config", cap.name


def test_list_shows_fabric_without_file_as_absent(sim_root: Path) -> None:
    remove_fabric_proc_files(sim_root)
    CliRunner().invoke(cli, ["--root", str(sim_root), "sync", "--all"])
    res = CliRunner().invoke(cli, ["--root", str(sim_root), "list", "--json"])
    entries = {e["name"]: e for e in json.loads(res.output)}
    assert entries["fabric-mgmt"]["node"] == "absent"
    assert entries["fabric-imex-mgmt"]["exists"] is False


# --- stray and aliasing nodes ---------------------------------------------------------------


def _mknod(path: Path, major: int, minor: int, mode: int = 0o444) -> None:
    old = os.umask(0)
    try:
        os.mknod(path, stat.S_IFCHR | mode, os.makedev(major, minor))
    finally:
        os.umask(old)


STRAYS = [
    # (name, major, minor): the nvidia-cap21 -> 238:66, another name for a capability,
    # a hidden one, one for a capability that does not exist now, and a name for a minor that
    # opens a GPU instead.
    ("misnamed", "nvidia-cap21", 238, 66),
    ("other-name", "gi7", 238, 66),
    ("hidden", ".x", 238, 1),
    ("future-capability", "my-gpu4", 238, 1000),
    ("leading-zero", "nvidia-cap066", 238, 66),
    ("name-for-another-device", "nvidia-cap4000", 195, 0),
]


@pytest.mark.parametrize(("name", "major", "minor"), [s[1:] for s in STRAYS],
                         ids=[s[0] for s in STRAYS])
@pytest.mark.parametrize("everything", [False, True], ids=["existing", "all"])
def test_sync_removes_stray_nodes(
    sim_host: Host, sim_root: Path, name: str, major: int, minor: int, everything: bool
) -> None:
    run_sync(sim_host)
    stray = sim_root / CAPS / name
    _mknod(stray, major, minor)
    planned = everything and capnames.minor_of_node_name(name) >= 0
    dry = run_sync(sim_host, everything=everything, dry_run=True)
    assert stray.exists()
    report = run_sync(sim_host, everything=everything)
    if planned:
        # The name is one sync makes: the node is repaired in place, never missing.
        (change,) = [c for c in report.changes if c.path == str(stray)]
        assert change.action is Action.REPAIRED and f"is {major}:{minor}" in change.reason
        assert [c.action for c in dry.changes if c.path == str(stray)] == [Action.REPAIRED]
        st = os.lstat(stray)
        assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (238, int(name[10:]))
    else:
        assert [(c.path, c.action) for c in dry.removed] == [(str(stray), Action.REMOVED)]
        assert [c.path for c in report.removed] == [str(stray)]
        assert not os.path.lexists(stray)
    assert len(run_sync(sim_host, everything=everything).removed) == 0


def test_right_nodes_and_other_files_are_no_strays(sim_host: Host, sim_root: Path) -> None:
    """A correct node for a capability that does not exist now, a file, a symlink, a directory
    and a node of another major under a non-capability name are left alone."""
    run_sync(sim_host)
    caps = sim_root / CAPS
    _mknod(caps / "nvidia-cap1000", 238, 1000)
    (caps / "notes").write_text("x")
    (caps / "link").symlink_to("nvidia-cap1")
    (caps / "sub").mkdir()
    _mknod(caps / "foreign", 195, 0)
    report = run_sync(sim_host)
    assert len(report.removed) == 0
    assert {p.name for p in caps.iterdir()} >= {"nvidia-cap1000", "notes", "link", "sub", "foreign"}


def test_list_reports_strays_and_the_capability_they_open(sim_host: Host, sim_root: Path) -> None:
    run_sync(sim_host)
    gi7, monitor = simulated.minor_of(GI7), simulated.minor_of("monitor")
    _mknod(sim_root / CAPS / "nvidia-cap21", 238, gi7)  # a capability's name: repaired by sync
    _mknod(sim_root / CAPS / "mon", 238, monitor)  # no capability's name: removed by sync
    res = CliRunner().invoke(cli, ["--root", str(sim_root), "list", "--json"])
    assert res.exit_code == 0, res.output
    entries = json.loads(res.output)
    by_name = {e["name"]: e for e in entries}
    assert by_name[GI7]["node"] == "wrong"
    assert by_name[GI7]["detail"] == "also opened by stray node /dev/nvidia-caps/nvidia-cap21"
    assert by_name["gpu0/gi2/access"]["node"] == "wrong"  # minor 21: its name taken
    assert by_name["monitor"]["detail"] == "also opened by stray node /dev/nvidia-caps/mon"
    stray = entries[-1]
    assert stray["source"] == "stray" and stray["name"] == "mon" and stray["exists"] is False
    assert stray["node"] == "stray" and stray["minor"] == monitor
    assert stray["path"] == "/dev/nvidia-caps/mon"
    assert "under another name" in stray["detail"]
    assert len(entries) == 4324 + 1


def test_doctor_fails_on_strays_until_sync(sim_host: Host, sim_root: Path) -> None:
    run_sync(sim_host)
    _mknod(sim_root / CAPS / "nvidia-cap21", 238, simulated.minor_of(GI7))
    findings = doctor.check_nodes(sim_host)
    fails = [f for f in findings if f.level is doctor.Level.FAIL]
    assert fails and "stray node" in fails[0].what and fails[0].fix == "capctl sync"
    assert not any("in place" in f.what for f in findings)
    res = CliRunner().invoke(cli, ["--root", str(sim_root), "sync"])
    assert res.exit_code == 0
    assert f"removed: {sim_root / CAPS / 'nvidia-cap21'}" in res.output
    assert res.output.rstrip().endswith(", 1 removed")
    assert not any(f.level is doctor.Level.FAIL for f in doctor.check_nodes(sim_host))


def test_stray_for_a_capability_that_does_not_exist(sim_host: Host, sim_root: Path) -> None:
    """gpu4 has MIG disabled: an alias of one of its future capabilities still fails doctor."""
    run_sync(sim_host)
    _mknod(sim_root / CAPS / "later", 238, simulated.minor_of("gpu4/gi1/access"))
    assert any("stray" in f.what for f in doctor.check_nodes(sim_host))

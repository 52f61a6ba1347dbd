"""``sync`` on simulated roots: every create/repair/keep case, with real mknod (root)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from capctl import simulated
from capctl.cli import cli
from capctl.devfs import sync
from capctl.devfs.nodes import Action, Change
from capctl.driver import capnames, procfs
from capctl.errors import NodeError, UnsafePathError
from capctl.host import Host

from .conftest import IS_ROOT, needs_root

pytestmark = needs_root

CAPS = "dev/nvidia-caps"
GI7 = "gpu0/gi7/access"


def run_sync(host: Host, *, everything: bool = False, dry_run: bool = False) -> sync.SyncReport:
    state = procfs.load(host)
    return sync.apply(host, state, sync.plan(state, everything=everything), dry_run=dry_run)


def node(root: Path, name: str) -> Path:
    return root / CAPS / f"nvidia-cap{simulated.minor_of(name)}"


def test_creates_existing_capabilities(sim_host: Host, sim_root: Path) -> None:
    report = run_sync(sim_host)
    names = simulated.capability_names()
    assert report.count(Action.CREATED) == len(names)
    for name in names:
        st = os.lstat(node(sim_root, name))
        assert stat.S_ISCHR(st.st_mode)
        assert os.major(st.st_rdev) == 238 and os.minor(st.st_rdev) == simulated.minor_of(name)
        assert stat.S_IMODE(st.st_mode) == simulated.mode_of(name)  # fabric-*: 0400 too
        assert (st.st_uid, st.st_gid) == (0, 0)
    assert stat.S_IMODE(os.stat(sim_root / CAPS).st_mode) == 0o755
    # Capabilities that do not exist get no node without --all.
    assert not node(sim_root, "gpu4/gi0/access").exists()


@pytest.mark.parametrize("value", ["0", "2", "-1"])
def test_unmanaged_capability_keeps_its_node_but_gets_its_link(
    sim_host: Host, sim_root: Path, value: str
) -> None:
    """DeviceFileModify other than 1: the node is someone else's, the /dev/char link is made
    anyway (as nvidia-modprobe does)."""
    proc = simulated.write_capability_file(sim_root, GI7, modify=int(value))
    assert proc.read_text().endswith(f"DeviceFileModify: {value}\n")
    report = run_sync(sim_host)
    assert [s.name for s in report.skipped] == [GI7]
    assert not node(sim_root, GI7).exists()
    link = sim_root / "dev/char" / f"238:{simulated.minor_of(GI7)}"
    assert os.readlink(link) == f"../nvidia-caps/nvidia-cap{simulated.minor_of(GI7)}"
    assert all(c.action is Action.UNCHANGED for c in run_sync(sim_host).link_changes)


def test_char_links(sim_host: Host, sim_root: Path) -> None:
    run_sync(sim_host)
    link = sim_root / "dev/char" / f"238:{simulated.minor_of(GI7)}"
    assert os.readlink(link) == f"../nvidia-caps/nvidia-cap{simulated.minor_of(GI7)}"
    assert link.resolve() == node(sim_root, GI7).resolve()


def test_idempotent_same_inode(sim_host: Host, sim_root: Path) -> None:
    run_sync(sim_host)
    before = {p.name: os.lstat(p).st_ino for p in (sim_root / CAPS).iterdir()}
    links_before = {p.name: os.lstat(p).st_ino for p in (sim_root / "dev/char").iterdir()}
    report = run_sync(sim_host)
    assert report.count(Action.CREATED) == report.count(Action.REPAIRED) == 0
    assert all(c.action is Action.UNCHANGED for c in report.link_changes)
    assert {p.name: os.lstat(p).st_ino for p in (sim_root / CAPS).iterdir()} == before
    assert {p.name: os.lstat(p).st_ino for p in (sim_root / "dev/char").iterdir()} == links_before


def _mknod(mode: int, major: int = 238, minor: int | None = None) -> Callable[[Path], None]:
    def make(p: Path) -> None:
        p.unlink()
        os.mknod(p, mode, os.makedev(major, simulated.minor_of(GI7) if minor is None else minor))

    return make


def _chown(p: Path) -> None:
    os.chown(p, 1000, 1000)


def _regular(p: Path) -> None:
    p.unlink()
    p.write_text("not a node")


def _fifo(p: Path) -> None:
    p.unlink()
    os.mkfifo(p)


REPAIRS: list[tuple[str, Callable[[Path], None], str]] = [
    ("wrong-mode", lambda p: os.chmod(p, 0o666), "mode 0666, want 0444"),
    ("wrong-owner", _chown, "owner 1000:1000, want 0:0"),
    ("wrong-minor", _mknod(stat.S_IFCHR | 0o444, minor=5), "is 238:5, want 238:"),
    ("wrong-major", _mknod(stat.S_IFCHR | 0o444, major=10), "is 10:"),
    ("block-device", _mknod(stat.S_IFBLK | 0o444), "is a block device"),
    ("regular-file", _regular, "is a regular file"),
    ("fifo", _fifo, "not a device node"),
]


@pytest.mark.parametrize(
    ("damage", "reason"), [(r[1], r[2]) for r in REPAIRS], ids=[r[0] for r in REPAIRS]
)
def test_repairs(
    sim_host: Host, sim_root: Path, damage: Callable[[Path], None], reason: str
) -> None:
    run_sync(sim_host)
    target = node(sim_root, GI7)
    damage(target)
    report = run_sync(sim_host)
    repaired = [c for c in report.changes if c.action is Action.REPAIRED]
    assert [c.path for c in repaired] == [str(target)]
    assert reason in repaired[0].reason
    st = os.lstat(target)
    assert stat.S_ISCHR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o444 and st.st_uid == 0
    assert os.minor(st.st_rdev) == simulated.minor_of(GI7)
    assert run_sync(sim_host).count(Action.REPAIRED) == 0


def test_symlink_replaced_target_untouched(sim_host: Host, sim_root: Path, tmp_path: Path) -> None:
    run_sync(sim_host)
    victim = tmp_path / "victim"
    victim.write_text("secret")
    os.chmod(victim, 0o600)
    target = node(sim_root, GI7)
    target.unlink()
    target.symlink_to(victim)
    report = run_sync(sim_host)
    assert any(c.action is Action.REPAIRED and "symlink" in c.reason for c in report.changes)
    assert stat.S_ISCHR(os.lstat(target).st_mode)
    assert victim.read_text() == "secret" and stat.S_IMODE(victim.stat().st_mode) == 0o600


def test_dangling_symlink_replaced(sim_host: Host, sim_root: Path) -> None:
    run_sync(sim_host)
    target = node(sim_root, GI7)
    target.unlink()
    target.symlink_to("/nonexistent/capctl-test")
    run_sync(sim_host)
    assert stat.S_ISCHR(os.lstat(target).st_mode)
    assert not Path("/nonexistent/capctl-test").exists()


def test_directory_at_node_path_refused(sim_host: Host, sim_root: Path) -> None:
    run_sync(sim_host)
    target = node(sim_root, GI7)
    target.unlink()
    target.mkdir()
    with pytest.raises(NodeError, match="is a directory"):
        run_sync(sim_host)


def test_symlinked_caps_dir_refused(sim_host: Host, sim_root: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (sim_root / CAPS).symlink_to(elsewhere)
    with pytest.raises(UnsafePathError, match="symlink"):
        run_sync(sim_host)
    assert list(elsewhere.iterdir()) == []


def test_caps_dir_mode_repaired(sim_host: Host, sim_root: Path) -> None:
    (sim_root / CAPS).mkdir(mode=0o777)
    os.chmod(sim_root / CAPS, 0o777)
    run_sync(sim_host)
    assert stat.S_IMODE(os.stat(sim_root / CAPS).st_mode) == 0o755


def test_modify_zero_left_alone(sim_host: Host, sim_root: Path) -> None:
    proc = sim_root / capnames.proc_relpath(GI7, capnames.Source.MIG)
    proc.write_text(
        f"DeviceFileMinor: {simulated.minor_of(GI7)}\nDeviceFileMode: 292\nDeviceFileModify: 0\n"
    )
    report = run_sync(sim_host)
    assert [s.name for s in report.skipped] == [GI7]
    assert not node(sim_root, GI7).exists()


def test_mode_from_capability_file(sim_host: Host, sim_root: Path) -> None:
    proc = sim_root / capnames.proc_relpath(GI7, capnames.Source.MIG)
    proc.write_text(
        f"DeviceFileMinor: {simulated.minor_of(GI7)}\nDeviceFileMode: 288\nDeviceFileModify: 1\n"
    )
    run_sync(sim_host)
    assert stat.S_IMODE(os.lstat(node(sim_root, GI7)).st_mode) == 0o440


def test_all_creates_every_mig_minor(sim_host: Host, sim_root: Path) -> None:
    report = run_sync(sim_host, everything=True)
    assert report.count(Action.CREATED) == 4322 + 2
    assert len(os.listdir(sim_root / CAPS)) == 4324
    st = os.lstat(node(sim_root, "gpu31/gi14/ci7/access"))
    assert os.minor(st.st_rdev) == 4322 and stat.S_IMODE(st.st_mode) == 0o444
    assert run_sync(sim_host, everything=True).count(Action.UNCHANGED) == 4324


def test_dry_run_changes_nothing(sim_host: Host, sim_root: Path) -> None:
    report = run_sync(sim_host, dry_run=True)
    assert report.count(Action.CREATED) == len(simulated.capability_names())
    assert not (sim_root / CAPS).exists() and not (sim_root / "dev/char").exists()
    run_sync(sim_host)
    os.chmod(node(sim_root, GI7), 0o666)
    report = run_sync(sim_host, dry_run=True)
    assert report.count(Action.REPAIRED) == 1
    assert stat.S_IMODE(os.lstat(node(sim_root, GI7)).st_mode) == 0o666


def test_concurrent_reader_never_sees_node_missing(sim_host: Host, sim_root: Path) -> None:
    run_sync(sim_host)
    target = node(sim_root, GI7)
    missing: list[int] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                os.lstat(target)
            except FileNotFoundError:
                missing.append(1)

    t = threading.Thread(target=reader)
    t.start()
    try:
        for _ in range(50):
            os.chmod(target, 0o666)
            run_sync(sim_host)
    finally:
        stop.set()
        t.join()
    assert missing == []


def test_concurrent_sync_processes(sim_root: Path) -> None:
    """Several ``capctl sync --all`` at once on one root: all succeed, result exact."""
    cmd = [sys.executable, "-m", "capctl", "--root", str(sim_root), "sync", "--all"]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(6)
    ]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, errors
    entries = sorted(os.listdir(sim_root / CAPS))
    assert len(entries) == 4324 and not [e for e in entries if e.startswith(".")]
    for name in ("config", "monitor", GI7, "gpu31/gi14/ci7/access"):
        st = os.lstat(node(sim_root, name))
        assert stat.S_ISCHR(st.st_mode) and os.minor(st.st_rdev) == simulated.minor_of(name)
    links = os.listdir(sim_root / "dev/char")
    assert len([n for n in links if n.startswith("238:")]) == 4324
    if IS_ROOT:  # the GPU, control and UVM nodes exist: their links too
        assert os.readlink(sim_root / "dev/char/195:255") == "../nvidiactl"


def test_cli_sync_and_list(sim_root: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(cli, ["--root", str(sim_root), "sync"])
    assert res.exit_code == 0, res.output
    assert f"{len(simulated.capability_names())} created, 0 repaired" in res.output
    res = runner.invoke(cli, ["--root", str(sim_root), "sync", "--json"])
    assert res.exit_code == 0
    res = runner.invoke(cli, ["--root", str(sim_root), "list", "--json"])
    import json

    entries = {e["name"]: e for e in json.loads(res.output)}
    assert entries["config"] == {
        "name": "config",
        "minor": 1,
        "path": "/dev/nvidia-caps/nvidia-cap1",
        "source": "mig-minors",
        "exists": True,
        "node": "ok",
        "detail": None,
    }
    assert entries["gpu4/gi0/access"]["node"] == "absent"
    assert len(entries) == 4324


def test_cli_error_is_one_line(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["--root", str(tmp_path), "sync"])
    assert res.exit_code == 1
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("capctl: error: ") and "proc/devices" in lines[0]
    assert "Traceback" not in res.output


# --- the fast paths of ensure (first run, re-run, partly populated) -------------------------


def test_first_run_ignores_umask(sim_host: Host, sim_root: Path) -> None:
    old = os.umask(0o077)
    try:
        run_sync(sim_host, everything=True)
    finally:
        os.umask(old)
    st = os.lstat(node(sim_root, "config"))
    assert stat.S_IMODE(st.st_mode) == 0o400 and (st.st_uid, st.st_gid) == (0, 0)
    st = os.lstat(node(sim_root, "gpu31/gi14/ci7/access"))
    assert stat.S_IMODE(st.st_mode) == 0o444 and (st.st_uid, st.st_gid) == (0, 0)
    assert stat.S_IMODE(os.stat(sim_root / CAPS).st_mode) == 0o755


def test_partly_populated_directories(sim_host: Host, sim_root: Path) -> None:
    """Nodes and links present up to some name, missing after: looked up, then listed."""
    run_sync(sim_host)  # the existing capabilities only: config, monitor, ...
    gone = node(sim_root, "gpu0/gi7/ci0/access")
    gone.unlink()
    (sim_root / "dev/char" / f"238:{simulated.minor_of(GI7)}").unlink()
    report = run_sync(sim_host, everything=True)
    n_existing = len(simulated.capability_names())
    assert report.count(Action.CREATED) == 4324 - n_existing + 1
    assert report.count(Action.UNCHANGED) == n_existing - 1
    links = {c.path.rsplit("/", 1)[1]: c.action for c in report.link_changes}
    assert links[f"238:{simulated.minor_of(GI7)}"] is Action.CREATED
    assert links["238:1"] is Action.UNCHANGED
    assert stat.S_ISCHR(os.lstat(gone).st_mode)
    assert run_sync(sim_host, everything=True).count(Action.UNCHANGED) == 4324


def test_last_node_missing_on_rerun(sim_host: Host, sim_root: Path) -> None:
    run_sync(sim_host, everything=True)
    last = node(sim_root, "gpu31/gi14/ci7/access")
    last.unlink()
    (sim_root / "dev/char/238:4322").unlink()
    report = run_sync(sim_host, everything=True)
    assert [c.path for c in report.changes if c.action is Action.CREATED] == [str(last)]
    assert [c.path for c in report.link_changes if c.action is Action.CREATED] == [
        str(sim_root / "dev/char/238:4322")
    ]
    assert os.readlink(sim_root / "dev/char/238:4322") == "../nvidia-caps/nvidia-cap4322"


def test_setgid_directory_new_nodes_still_root_group(tmp_path: Path) -> None:
    """A node made in a set-group-ID directory takes its group: capctl chowns it back."""
    from capctl.devfs import nodes, safefs

    d = tmp_path / "caps"
    d.mkdir()
    os.chown(d, 0, 1234)
    os.chmod(d, 0o2755)
    fd = safefs.open_root(str(d))
    try:
        assert safefs.new_node_owner(fd) == (0, 1234)
        specs = [nodes.NodeSpec("a", 238, 1, 0o444), nodes.NodeSpec("b", 238, 2, 0o440, 0, 1234)]
        changes = nodes.ensure_nodes(fd, specs, display_dir=str(d))
        assert changes.tally(Action.CREATED) == 2
        assert (os.lstat(d / "a").st_uid, os.lstat(d / "a").st_gid) == (0, 0)
        assert (os.lstat(d / "b").st_uid, os.lstat(d / "b").st_gid) == (0, 1234)
        assert nodes.ensure_nodes(fd, specs, display_dir=str(d)).tally(Action.UNCHANGED) == 2
    finally:
        os.close(fd)


def _link(root: Path) -> Path:
    return root / "dev/char" / f"238:{simulated.minor_of(GI7)}"


def _relink(target: str) -> Callable[[Path], None]:
    def make(p: Path) -> None:
        p.unlink()
        p.symlink_to(target)

    return make


LINK_REPAIRS: list[tuple[str, Callable[[Path], None], Action, str]] = [
    (
        "points-elsewhere",
        _relink("../nvidia-caps/nvidia-cap1"),
        Action.REPAIRED,
        "points elsewhere",
    ),
    (
        "absolute-target",
        _relink("/dev/nvidia-caps/nvidia-cap21"),
        Action.REPAIRED,
        "points elsewhere",
    ),
    ("dangling", _relink("/nonexistent/capctl-test"), Action.REPAIRED, "points elsewhere"),
    ("regular-file", _regular, Action.REPAIRED, "not a symlink"),
    ("char-node", _mknod(stat.S_IFCHR | 0o444), Action.REPAIRED, "not a symlink"),
    ("missing", lambda p: p.unlink(), Action.CREATED, "missing"),
]


@pytest.mark.parametrize(
    ("damage", "action", "reason"),
    [r[1:] for r in LINK_REPAIRS],
    ids=[r[0] for r in LINK_REPAIRS],
)
def test_link_repairs(
    sim_host: Host, sim_root: Path, damage: Callable[[Path], None], action: Action, reason: str
) -> None:
    run_sync(sim_host)
    link = _link(sim_root)
    inode = os.lstat(link).st_ino
    damage(link)
    dry = run_sync(sim_host, dry_run=True)
    assert [
        (c.path, c.action, c.reason) for c in dry.link_changes if c.action is not Action.UNCHANGED
    ] == [(str(link), action, reason)]
    report = run_sync(sim_host)
    changed = [c for c in report.link_changes if c.action is not Action.UNCHANGED]
    assert [(c.path, c.action, c.reason) for c in changed] == [(str(link), action, reason)]
    assert os.readlink(link) == f"../nvidia-caps/nvidia-cap{simulated.minor_of(GI7)}"
    assert os.lstat(link).st_ino != inode or action is Action.CREATED
    assert all(c.action is Action.UNCHANGED for c in run_sync(sim_host).link_changes)


def test_directory_at_link_path_refused(sim_host: Host, sim_root: Path) -> None:
    run_sync(sim_host)
    link = _link(sim_root)
    link.unlink()
    link.mkdir()
    with pytest.raises(NodeError, match=r"238:\d+: is a directory"):
        run_sync(sim_host)
    assert link.is_dir()


def test_report_changes_read_like_lists(sim_host: Host, sim_root: Path) -> None:
    report = run_sync(sim_host)
    n = len(simulated.capability_names())
    assert len(report.changes) == len(report.link_changes) == n
    both = report.changes + report.link_changes
    assert isinstance(both, list) and len(both) == 2 * n
    first = next(iter(report.changes))
    assert first == Change(str(node(sim_root, "config")), Action.CREATED, "missing")
    assert report.changes == list(report.changes) and report.changes != list(report.changes)[1:]
    assert report.changes.tally(Action.CREATED) == report.count(Action.CREATED) == n
    assert "nvidia-cap1" in repr(report.changes)


def test_cli_sync_json_and_text(sim_root: Path) -> None:
    import json

    runner = CliRunner()
    res = runner.invoke(cli, ["--root", str(sim_root), "sync", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    n = len(simulated.capability_names())
    assert out["dry_run"] is False and out["skipped"] == []
    assert out["nodes"][0] == {
        "path": str(sim_root / CAPS / "nvidia-cap1"),
        "action": "created",
        "reason": "missing",
    }
    assert out["links"][0] == {
        "path": str(sim_root / "dev/char/238:1"),
        "action": "created",
        "reason": "missing",
    }
    assert len(out["nodes"]) == len(out["links"]) == n
    os.chmod(node(sim_root, GI7), 0o666)
    res = runner.invoke(cli, ["--root", str(sim_root), "sync"])
    assert res.output.splitlines() == [
        f"repaired: {node(sim_root, GI7)} (mode 0666, want 0444)",
        f"0 created, 1 repaired, {n - 1} unchanged, 0 skipped",
    ]
    res = runner.invoke(cli, ["--root", str(sim_root), "sync", "-v"])
    assert f"unchanged: {sim_root / 'dev/char/238:1'}" in res.output.splitlines()


@needs_root
def test_a_first_sync_prints_a_summary(sim_root: Path) -> None:
    """Thousands of created nodes are counted, not listed (printing them was most of a first
    sync's time); -v lists each."""
    runner = CliRunner()
    res = runner.invoke(cli, ["--root", str(sim_root), "sync", "--all"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert len(lines) == 2 and lines[0].endswith(" nodes and /dev/char links changed; -v lists each")
    assert lines[1] == "4324 created, 0 repaired, 0 unchanged, 0 skipped"  # all of mig-minors
    n = len(simulated.capability_names())
    res = runner.invoke(cli, ["--root", str(sim_root), "sync", "--all", "-v"])
    assert sum(1 for line in res.output.splitlines() if line.startswith("unchanged: ")) > n


@needs_root
def test_device_links_for_gpu_control_and_uvm_nodes(sim_host: Host, sim_root: Path) -> None:
    """udev makes no /dev/char links for the nodes nvidia-modprobe makes: sync does, for the
    GPU, control and UVM nodes that exist, and repairs a wrong one."""
    report = run_sync(sim_host)
    made = {c.path.rsplit("/", 1)[1] for c in report.device_links if c.action is Action.CREATED}
    assert {"195:0", "195:255", "195:254", "239:0", "239:1"} <= made, made
    assert os.readlink(sim_root / "dev/char/195:0") == "../nvidia0"
    assert os.readlink(sim_root / "dev/char/239:1") == "../nvidia-uvm-tools"
    (sim_root / "dev/char/195:0").unlink()
    (sim_root / "dev/char/195:0").symlink_to("../nvidia1")
    again = run_sync(sim_host)
    assert [c.action for c in again.device_links if c.path.endswith("/195:0")] == [Action.REPAIRED]
    assert os.readlink(sim_root / "dev/char/195:0") == "../nvidia0"

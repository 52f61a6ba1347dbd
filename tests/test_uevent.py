"""``capctl watch``: the pure filter and debouncer, then the listener against real uevents.

Real uevents: writing an action to ``/sys/class/mem/null/uevent`` makes the kernel emit a
synthetic uevent for ``/dev/null`` (Documentation/ABI/testing/sysfs-uevent).  The default
filter (module ``nvidia``) cannot be triggered that way without the driver, so it is tested end
to end with forged kernel-format datagrams sent to the uevent multicast group inside a private
network namespace (``unshare -n``), where nothing else listens.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from capctl.watch import uevent
from capctl.watch.uevent import Debouncer, Uevent

from .conftest import needs_root

NULL_UEVENT = Path("/sys/class/mem/null/uevent")


def ev(action: str, devpath: str, subsystem: str, **env: str) -> Uevent:
    return Uevent(action, devpath, subsystem,
                  {"ACTION": action, "DEVPATH": devpath, "SUBSYSTEM": subsystem, **env})


@pytest.mark.parametrize(
    ("event", "want"),
    [
        (ev("add", "/module/nvidia", "module"), True),
        (ev("remove", "/module/nvidia", "module"), False),
        (ev("add", "/module/nvidia_uvm", "module"), False),
        (ev("add", "/module/nvidia-caps", "module"), False),
        (ev("bind", "/devices/pci0000:00/0000:00:07.0", "pci", DRIVER="nvidia"), True),
        (ev("bind", "/devices/pci0000:00/0000:00:03.0", "pci", DRIVER="virtio-pci"), False),
        (ev("add", "/devices/pci0000:00/0000:00:07.0", "pci", DRIVER="nvidia"), False),
        (ev("add", "/devices/virtual/nvidia-caps-imex-channels/channel0",
            "nvidia-caps-imex-channels"), False),  # IMEX channels: not capctl's nodes
        (ev("remove", "/devices/virtual/nvidia-caps-imex-channels/channel0",
            "nvidia-caps-imex-channels"), False),
        (ev("change", "/devices/virtual/mem/null", "mem"), False),
    ],
    ids=["module-add", "module-remove", "uvm", "other-module", "pci-bind", "pci-bind-other",
         "pci-add", "caps-class-add", "caps-class-remove", "null"],
)
def test_filter(event: Uevent, want: bool) -> None:
    assert uevent.is_driver_event(event) is want


@pytest.mark.parametrize(
    ("data", "want"),
    [
        (b"add@/module/nvidia\0ACTION=add\0DEVPATH=/module/nvidia\0SUBSYSTEM=module\0SEQNUM=7\0",
         ("add", "/module/nvidia", "module")),
        (b"libudev\0" + b"\0" * 32, None),
        (b"no-at-sign\0ACTION=add\0", None),
        (b"add@/x\0DEVPATH=/x\0", None),
        (b"add@/x\0ACTION=add\0DEVPATH=/x\0junk\0=v\0", ("add", "/x", "")),
    ],
    ids=["kernel", "libudev", "no-header", "no-action", "junk-items"],
)
def test_parse(data: bytes, want: tuple[str, str, str] | None) -> None:
    got = uevent.parse(data)
    assert (None if got is None else (got.action, got.devpath, got.subsystem)) == want


def test_from_pyroute2_message() -> None:
    msg = {"header": {"message": "add@/module/nvidia"}, "ACTION": "add",
           "DEVPATH": "/module/nvidia", "SUBSYSTEM": "module"}
    got = uevent.from_message(msg)
    assert got is not None and uevent.is_driver_event(got)


def test_debouncer_waits_for_quiet() -> None:
    d = Debouncer(quiet=1.0, max_delay=10.0)
    assert d.due_at() is None and not d.take(0.0)
    d.event(100.0)
    d.event(100.5)
    assert d.due_at() == 101.5
    assert not d.take(101.4)
    assert d.take(101.5)
    assert not d.pending and not d.take(200.0)


def test_debouncer_caps_the_delay() -> None:
    d = Debouncer(quiet=1.0, max_delay=3.0)
    for t in (0.0, 0.8, 1.6, 2.4, 3.2):
        d.event(t)
    assert d.due_at() == 3.0
    assert d.take(3.2)


# --- the listener ----------------------------------------------------------------------------


@needs_root
@pytest.mark.skipif(not NULL_UEVENT.exists(), reason="no /sys/class/mem/null/uevent")
def test_real_uevents_debounced(tmp_path: Path) -> None:
    """A burst of 5 real uevents gives one trigger after the quiet period; SIGTERM exits 0."""
    script = tmp_path / "w.py"
    script.write_text(textwrap.dedent("""
        import sys, time
        from capctl.watch import uevent
        def ready():
            print("ready", flush=True)
        def trigger():
            print("trigger", time.monotonic(), flush=True)
        uevent.watch(trigger, quiet=0.5,
                     match=lambda e: e.devpath == "/devices/virtual/mem/null",
                     on_ready=ready)
        print("stopped", flush=True)
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                            cwd=str(Path(__file__).resolve().parents[1]))
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        for _ in range(5):
            NULL_UEVENT.write_text("change")
            time.sleep(0.05)
        burst_end = time.monotonic()
        line = proc.stdout.readline().split()
        assert line[0] == "trigger"
        assert float(line[1]) >= burst_end + 0.4  # waited for the quiet period
        # A second burst gives a second trigger.
        NULL_UEVENT.write_text("change")
        assert proc.stdout.readline().startswith("trigger")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
        assert proc.returncode == 0
        assert out.split() == ["stopped"]  # exactly two triggers, then a clean stop
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


FORGE = """
import socket, time
s = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 15)
s.bind((0, 0))
def send(action, devpath, subsystem, **env):
    items = [f"ACTION={action}", f"DEVPATH={devpath}", f"SUBSYSTEM={subsystem}"]
    items += [f"{k}={v}" for k, v in env.items()]
    s.sendto(f"{action}@{devpath}".encode() + b"\\0" + "\\0".join(items).encode() + b"\\0", (0, 1))
"""


@needs_root
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1)")
def test_cli_watch_syncs_on_driver_load(sim_root: Path, tmp_path: Path) -> None:
    """``capctl watch`` in a private netns: sync at start, nothing for unrelated events, one
    sync for a burst of forged nvidia load events (a mode changed in a proc file, which no
    node event announces, is repaired), a sync when the node directory goes (inotify), exit 0
    on SIGTERM."""
    driver_script = tmp_path / "drive.py"
    caps_dir = sim_root / "dev/nvidia-caps"
    proc = sim_root / "proc/driver/nvidia/capabilities/gpu0/mig/gi7/access"
    driver_script.write_text(FORGE + textwrap.dedent(f"""
        import os, select, shutil, subprocess, sys, signal
        w = subprocess.Popen([sys.executable, "-m", "capctl", "--root", {str(sim_root)!r},
                              "--config", {str(tmp_path / "c.toml")!r}, "watch", "--quiet", "0.3"],
                             stderr=subprocess.PIPE, bufsize=0)
        def line():
            return w.stderr.readline().decode().strip()
        def pending():
            return bool(select.select([w.stderr], [], [], 0)[0])
        print(line(), flush=True)      # watching...
        print(line(), flush=True)      # initial sync
        send("change", "/devices/virtual/mem/null", "mem")
        send("add", "/module/nvidia_uvm", "module")
        time.sleep(0.8)
        print("after-unrelated", pending(), flush=True)
        with open({str(proc)!r}, "w") as f:
            f.write("DeviceFileMinor: 66\\nDeviceFileMode: 288\\nDeviceFileModify: 1\\n")
        for _ in range(3):
            send("add", "/module/nvidia", "module")
            send("bind", "/devices/pci0000:00/0000:00:07.0", "pci", DRIVER="nvidia")
        print(line(), flush=True)      # one sync for the burst
        shutil.rmtree({str(caps_dir)!r})
        print(line(), flush=True)      # the node directory went: inotify
        time.sleep(0.3)
        w.send_signal(signal.SIGTERM)
        rest = w.stderr.read().decode()
        print("rc", w.wait(), repr(rest), flush=True)
    """))
    res = subprocess.run(["unshare", "-n", sys.executable, str(driver_script)], capture_output=True,
                         text=True, timeout=60, cwd=str(Path(__file__).resolve().parents[1]),
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    if res.returncode != 0 and "unshare failed" in res.stderr:
        pytest.skip(f"cannot unshare a network namespace: {res.stderr.strip()}")
    lines = res.stdout.splitlines()
    assert res.returncode == 0, res.stderr
    assert lines[0].startswith("watching")
    assert lines[1].startswith("sync: 48 node(s)")
    assert lines[2] == "after-unrelated False"
    assert lines[3].startswith("sync: 1 node(s)")
    assert lines[4].startswith("sync: 48 node(s)")
    assert lines[5] == "rc 0 ''"  # one sync for the whole burst, then a clean exit
    assert (caps_dir / "nvidia-cap1").exists()
    assert os.stat(caps_dir / "nvidia-cap66").st_mode & 0o777 == 0o440

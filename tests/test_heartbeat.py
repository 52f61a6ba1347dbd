"""The watcher's heartbeat and ``capctl health``: alive means the watch loop still turns
(a stopped, not dead, watcher fails liveness); ready means its last sync and CDI spec refresh
succeeded."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from capctl.cli import cli
from capctl.errors import ParseError
from capctl.watch import heartbeat
from capctl.watch.heartbeat import Beat, Heartbeat, HeartbeatError
from tests.support.clients import terminate, wait_for

from .conftest import needs_root

REPO = Path(__file__).resolve().parents[1]
CAPS = "proc/driver/nvidia/capabilities"


@pytest.mark.parametrize("text", [
    "", "[]", "{", '{"synced": true, "pid": 1}', '{"beat": "1", "synced": true, "pid": 1}',
    '{"beat": true, "synced": true, "pid": 1}', '{"beat": 1, "synced": 1, "pid": 1}',
    '{"beat": 1, "synced": true, "error": 3, "pid": 1}', '{"beat": 1, "synced": true}',
    '{"beat": NaN, "synced": true, "pid": 1}', '{"beat": Infinity, "synced": true, "pid": 1}',
    '{"beat": 1' + "0" * 400 + ', "synced": true, "pid": 1}',
], ids=["empty", "list", "truncated", "no-beat", "beat-string", "beat-bool", "synced-int",
        "error-int", "no-pid", "beat-nan", "beat-infinite", "beat-out-of-range"])
def test_parse_refuses_anything_but_a_heartbeat(text: str) -> None:
    with pytest.raises(ParseError, match=r"^hb: not a heartbeat"):
        heartbeat.parse("hb", text)


def test_parse() -> None:
    assert heartbeat.parse("hb", '{"beat": 5, "synced": false, "error": "x", "pid": 3}') == \
        Beat(5.0, False, "x", 3)


@pytest.mark.parametrize(("beat", "at", "ready", "verdict"), [
    (Beat(100.0, True), 110.0, False, "alive, beat 10.0 s ago; in sync"),
    (Beat(100.0, True), 110.0, True, "alive, beat 10.0 s ago; in sync"),
    (Beat(100.0, False, "bad"), 110.0, False, "alive, beat 10.0 s ago; not in sync (bad)"),
    (Beat(100.0, False, "bad"), 110.0, True, "hb: nodes and CDI spec not in sync: bad"),
    (Beat(100.0, False), 101.0, True, "hb: nodes and CDI spec not in sync yet"),
    (Beat(100.0, True), 161.0, False, "hb: the watcher last beat 61.0 s ago (more than 60 s): "
                                      "stuck"),
    (Beat(1e300, True), 110.0, False, "hb: the heartbeat is from the future"),
], ids=["alive", "ready", "alive-not-synced", "not-ready", "not-ready-yet", "stuck", "future"])
def test_judge(beat: Beat, at: float, ready: bool, verdict: str) -> None:
    if verdict.startswith("hb: "):
        with pytest.raises(HeartbeatError) as err:
            heartbeat.judge("hb", beat, at, max_age=60.0, ready=ready)
        assert str(err.value).startswith(verdict)
    else:
        assert heartbeat.judge("hb", beat, at, max_age=60.0, ready=ready) == verdict


def test_writer_beats_at_most_every_interval_and_at_once_on_a_change(tmp_path: Path) -> None:
    path = tmp_path / "run" / "heartbeat"
    hb = Heartbeat(str(path), every=3600.0)
    hb.tick()  # the first tick writes (the directory is created)
    first = json.loads(path.read_text())
    assert first["synced"] is False and first["error"] is None and first["pid"] == os.getpid()
    hb.tick()
    assert json.loads(path.read_text()) == first  # within the interval: not rewritten
    hb.synced(None)
    assert json.loads(path.read_text())["synced"] is True  # a change: at once
    hb.synced("sync failed")
    assert json.loads(path.read_text())["error"] == "sync failed"
    assert heartbeat.check(str(path)).endswith("not in sync (sync failed)")
    with pytest.raises(HeartbeatError, match="not in sync: sync failed"):
        heartbeat.check(str(path), ready=True)
    assert [p.name for p in path.parent.iterdir()] == ["heartbeat"]  # no temporary left
    hb.remove()
    hb.remove()  # already gone: fine
    assert not path.exists()


@pytest.mark.parametrize(("content", "args", "code", "out"), [
    (None, [], 1, "capctl: error: {hb}: no heartbeat: the watcher is not running"),
    ("garbage", [], 1, "capctl: error: {hb}: not a heartbeat: "),
    ('{"beat": 0, "synced": true, "pid": 1}', [], 1, "capctl: error: {hb}: the watcher last beat"),
    ("NOW", ["--ready"], 0, "alive, beat 0.0 s ago; in sync"),
    ("NOW", ["--max-age", "0.5"], 2, "Invalid value for '--max-age'"),
    ("FIFO", [], 1, "capctl: error: {hb}: cannot read the heartbeat: not a regular file"),
    ("LINK", [], 1, "capctl: error: {hb}: cannot read the heartbeat: "),
], ids=["missing", "garbage", "stuck", "ready", "max-age-below-1", "fifo", "symlink"])
def test_health_command(tmp_path: Path, content: str | None, args: list[str], code: int,
                        out: str) -> None:
    hb = tmp_path / "hb"
    if content == "NOW":
        content = json.dumps(Beat(heartbeat.now(), True, None, 1).to_json())
    if content == "FIFO":
        os.mkfifo(hb)  # a probe must not block on it
    elif content == "LINK":  # a good beat, but reached through a link planted there
        (tmp_path / "real").write_text(json.dumps(Beat(heartbeat.now(), True, None, 1).to_json()))
        hb.symlink_to(tmp_path / "real")
    elif content is not None:
        hb.write_text(content)
    res = CliRunner().invoke(cli, ["--config", str(tmp_path / "c.toml"), "health",
                                   "--heartbeat", str(hb), *args])
    assert res.exit_code == code, res.output
    assert out.format(hb=hb) in res.output


def _health(hb: Path, *args: str) -> int:
    return subprocess.run([sys.executable, "-m", "capctl", "--config", "/nonexistent.toml",
                           "health", "--heartbeat", str(hb), *args],
                          capture_output=True, cwd=str(REPO)).returncode


@needs_root
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1)")
def test_a_stopped_watcher_fails_liveness_and_a_failing_sync_readiness(
        sim_root: Path, tmp_path: Path) -> None:
    hb, cfg = tmp_path / "hb", tmp_path / "c.toml"
    cfg.write_text("")
    os.chmod(cfg, 0o644)
    cmd = ["unshare", "-n", sys.executable, "-m", "capctl", "--root", str(sim_root),
           "--topology", str(sim_root / "topology.json"), "--config", str(cfg), "watch",
           "--cdi-output", str(tmp_path / "cdi.json"), "--heartbeat", str(hb)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, cwd=str(REPO))
    try:
        wait_for(lambda: _health(hb, "--ready") == 0, 30, "the watcher ready")
        # Stopped, not dead: the process is there, its loop does not turn.
        proc.send_signal(signal.SIGSTOP)
        wait_for(lambda: _health(hb, "--max-age", "5") == 1, 30, "liveness to fail")
        proc.send_signal(signal.SIGCONT)
        wait_for(lambda: _health(hb, "--max-age", "5") == 0, 30, "liveness back")
        # A sync that fails (a config others may write is refused) is alive but not ready.
        # (An instance change makes it sync: GPU 1's GI 2 goes away for a while.)
        os.chmod(cfg, 0o666)
        gi2 = sim_root / CAPS / "gpu1/mig/gi2"
        gi2.rename(tmp_path / "gi2")
        wait_for(lambda: _health(hb, "--ready") == 1, 30, "readiness to fail")
        assert _health(hb) == 0
        os.chmod(cfg, 0o644)
        (tmp_path / "gi2").rename(gi2)  # back as it was: the next sync succeeds
        wait_for(lambda: _health(hb, "--ready") == 0, 30, "ready again")
    finally:
        proc.send_signal(signal.SIGCONT)
        err = terminate(proc)
    assert proc.returncode == 0, err
    assert not hb.exists()  # a stopped watcher has no heartbeat

"""The watcher's heartbeat: a small file ``capctl watch`` rewrites while its loop turns, and
the check a liveness or readiness probe runs on it (``capctl health``).

A process that is alive may still be stuck (a ``sync`` blocked on a driver file, a loop that
no longer wakes), and a probe that only asks "is the process there" cannot see it.  The watch
loop wakes at least once per instance poll (``--poll``, 1 s by default); each wake-up calls
:meth:`Heartbeat.tick`, which rewrites the file at most every ``every`` seconds and at once
when the sync state changes.  A stuck loop stops rewriting it, and :func:`check` then finds
the beat older than the probe's ``max_age``.

The file is one JSON object, replaced atomically (:func:`capctl.devfs.atomic.replace_file`)::

    {"beat": 12345.6, "synced": true, "error": null, "pid": 7}

- ``beat``: ``CLOCK_BOOTTIME`` seconds, one clock for every process on the machine that a wall
  clock step (NTP) does not move, so a probe run in another process compares it with its own
  reading;
- ``synced``: the last run of ``sync`` and of the CDI spec refresh succeeded: the nodes,
  grants and spec match the driver as it was then (readiness);
- ``error``: the last failure's message, or null.

Pure apart from the one write and one read, both here.  The probe's side (:func:`check`)
imports no ``json``, ``dataclasses`` or click: ``capctl health`` runs without click
(:mod:`capctl.commands.fast`), every few seconds on every node.
"""

from __future__ import annotations

import os
import time

from capctl._lite import jsonload
from capctl._lite.record import Record
from capctl.devfs import safefs
from capctl.errors import CapctlError, ParseError

_INF = float("inf")
#: Seconds between rewrites of an unchanged state.
EVERY = 2.0
#: A liveness probe's default: a beat older than this means the watcher is stuck.
MAX_AGE = 60.0
FILE_MODE = 0o644
#: The largest heartbeat read (one is about 80 bytes).
MAX_FILE = 4096


class HeartbeatError(CapctlError):
    """The heartbeat says the watcher is stuck, not in sync, or never beat."""


def now() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


class Beat(Record):
    beat: float
    synced: bool
    error: str | None = None
    pid: int = 0

    def to_json(self) -> dict[str, object]:
        return {"beat": self.beat, "synced": self.synced, "error": self.error, "pid": self.pid}


def parse(path: str, text: str) -> Beat:
    """A heartbeat file's content; :class:`ParseError` for anything else (fail closed)."""
    try:
        doc = jsonload.loads(text)  # refuses NaN, Infinity and numbers beyond a double
    except ValueError as err:
        raise ParseError(path, f"not a heartbeat: {err}") from err
    if not isinstance(doc, dict):
        raise ParseError(path, "not a heartbeat: not a JSON object")
    beat, synced, error, pid = doc.get("beat"), doc.get("synced"), doc.get("error"), doc.get("pid")
    if isinstance(beat, bool) or not isinstance(beat, int | float):
        raise ParseError(path, "not a heartbeat: 'beat' is not a number")
    try:
        at = float(beat)
    except OverflowError as err:
        raise ParseError(path, "not a heartbeat: 'beat' is out of range") from err
    if at != at or at in (_INF, -_INF):  # an integer is finite; jsonload refuses the rest
        raise ParseError(path, "not a heartbeat: 'beat' is not a finite number")
    if not isinstance(synced, bool):
        raise ParseError(path, "not a heartbeat: 'synced' is not true or false")
    if error is not None and not isinstance(error, str):
        raise ParseError(path, "not a heartbeat: 'error' is not a string")
    if isinstance(pid, bool) or not isinstance(pid, int):
        raise ParseError(path, "not a heartbeat: 'pid' is not an integer")
    return Beat(at, synced, error, pid)


def judge(path: str, beat: Beat, at: float, *, max_age: float, ready: bool) -> str:
    """Pure: the probe's verdict on ``beat`` read at ``at``: a one-line summary when it
    passes; :class:`HeartbeatError` when the beat is older than ``max_age`` or, with
    ``ready``, the last sync did not succeed."""
    age = at - beat.beat
    if age < -1.0:  # written by a clock ahead of this boot's: not this watcher's beat
        raise HeartbeatError(f"{path}: the heartbeat is from the future ({-age:.1f} s ahead): "
                             "not this watcher's")
    if age > max_age:
        raise HeartbeatError(
            f"{path}: the watcher last beat {age:.1f} s ago (more than {max_age:g} s): stuck")
    if ready and not beat.synced:
        why = f": {beat.error}" if beat.error else " yet"
        raise HeartbeatError(f"{path}: nodes and CDI spec not in sync{why}")
    state = "in sync" if beat.synced else f"not in sync ({beat.error or 'not yet'})"
    return f"alive, beat {max(age, 0.0):.1f} s ago; {state}"


def check(path: str, *, max_age: float = MAX_AGE, ready: bool = False) -> str:
    """Read ``path`` and :func:`judge` it now."""
    try:
        # Not through a link planted there, and never a FIFO's or a device's open.
        found = safefs.read_regular(path, MAX_FILE)
        if found is None:
            raise HeartbeatError(f"{path}: no heartbeat: the watcher is not running")
        text = found[0].decode()
    except (safefs.UnreadableFile, OSError, UnicodeDecodeError) as err:
        raise HeartbeatError(f"{path}: cannot read the heartbeat: {err}") from err
    return judge(path, parse(path, text), now(), max_age=max_age, ready=ready)


class Heartbeat:
    """The writer, for ``capctl watch``: :meth:`tick` on every loop turn, :meth:`synced`
    after every sync."""

    def __init__(self, path: str, *, every: float = EVERY):
        self.path = os.path.abspath(path)
        self.every = every
        self._synced = False
        self._error: str | None = None
        self._written: float | None = None

    def synced(self, error: str | None) -> None:
        """The last sync and spec refresh: None when both succeeded, else why not."""
        changed = (error is None) != self._synced or error != self._error
        self._synced, self._error = error is None, error
        if changed:
            self._written = None  # write at the next tick... which is now
            self.tick()

    def tick(self) -> None:
        at = now()
        if self._written is not None and at - self._written < self.every:
            return
        import json

        from capctl.devfs.atomic import replace_file

        data = json.dumps(Beat(at, self._synced, self._error, os.getpid()).to_json())
        try:
            os.makedirs(os.path.dirname(self.path), mode=0o755, exist_ok=True)
            replace_file(self.path, data.encode(), mode=FILE_MODE, durable=False)
        except OSError as err:
            raise HeartbeatError(f"{self.path}: cannot write the heartbeat: {err.strerror}") \
                from err
        self._written = at

    def remove(self) -> None:
        """On a clean stop: a stopped watcher has no heartbeat (a probe says so)."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as err:
            raise HeartbeatError(f"{self.path}: cannot remove the heartbeat: {err.strerror}") \
                from err

"""Detect MIG reconfiguration: poll the driver's capability files for GPU/compute instances.

The driver sends no uevent when a GPU or compute instance is created or destroyed; what
changes is its capability tree, ``/proc/driver/nvidia/capabilities/gpu<N>/mig/gi<G>/access``
and ``.../gi<G>/ci<C>/access`` (``docs/driver.md``), whose files appear and disappear with
the instances.  A driver reload re-registers the whole tree, and procfs gives the new
directories new inode numbers, so a reload shows as a change too even when the same
instances come back.  inotify does not work on procfs, hence a poll (``docs/cdi.md`` has its
measured cost).

API, in three parts:

- :func:`fingerprint`: one cheap read of the tree (a ``scandir`` per directory, nothing
  opened) plus the identity (inode, size, mtime) of extra files such as a topology snapshot.
  Equal fingerprints mean "nothing changed".
- :class:`Detector`: pure.  Feed it each fingerprint with the time; :meth:`Detector.observe`
  returns True once a change has been stable for ``settle`` seconds, so a reconfiguration in
  progress (a GPU instance made, then its compute instances, then the snapshot rewritten) is
  reported once, when it is over.  :meth:`Detector.retry` asks for another report (the
  consumer failed and wants to try again on the next stable poll).
- :class:`Poller`: a fingerprint plus a detector on a host; ``poll()`` is what a watch loop
  calls every ``interval`` seconds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from capctl.driver import capnames
from capctl.host import Host

#: Default seconds between polls, and how long a change must hold before it is reported:
#: a change is reported 0.5-1.5 s after it happens (``docs/cdi.md``: goal 2 s).
INTERVAL = 0.5
SETTLE = 0.5

Fingerprint = tuple[tuple[str, int], ...]


def _scan(path: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            return list(it)
    except (FileNotFoundError, NotADirectoryError):
        return []  # no driver, or a directory that vanished while we looked: a change itself


def fingerprint(host: Host, files: tuple[str, ...] = ()) -> Fingerprint:
    """Every MIG capability path under the capabilities tree with its directory's inode,
    then ``(path, identity)`` of each of ``files`` (absolute paths; 0 when absent).

    Reads ``gpu*/mig/gi*/`` and ``gi*/ci*/`` directories only: a few ``getdents`` per GPU
    and instance, no file is opened.
    """
    out: list[tuple[str, int]] = []
    top = host.path(capnames.CAPABILITIES_DIR)
    for gpu in _scan(top):
        if not gpu.name.startswith("gpu") or not gpu.is_dir(follow_symlinks=False):
            continue
        mig = os.path.join(gpu.path, "mig")
        for gi in _scan(mig):
            if not gi.name.startswith("gi") or not gi.is_dir(follow_symlinks=False):
                continue
            out.append((f"{gpu.name}/mig/{gi.name}", gi.inode()))
            for entry in _scan(gi.path):
                if entry.name.startswith("ci") and entry.is_dir(follow_symlinks=False):
                    for leaf in _scan(entry.path):
                        out.append((f"{gpu.name}/mig/{gi.name}/{entry.name}/{leaf.name}",
                                    entry.inode()))
                else:
                    out.append((f"{gpu.name}/mig/{gi.name}/{entry.name}", gi.inode()))
    out.sort()
    for path in files:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            out.append((path, 0))
            continue
        out.append((path, hash((st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))))
    return tuple(out)


@dataclass
class Detector:
    """Pure: has the fingerprint changed, and held still for ``settle`` seconds?"""

    settle: float = SETTLE
    _reported: Fingerprint | None = None
    _seen: Fingerprint | None = None
    _since: float = 0.0
    _retry: bool = field(default=False)

    def start(self, fp: Fingerprint) -> None:
        """The fingerprint the consumer has acted on already (at start)."""
        self._reported = self._seen = fp

    def retry(self) -> None:
        """Report the current state again on the next stable observation."""
        self._retry = True

    def observe(self, fp: Fingerprint, now: float) -> bool:
        """True when ``fp`` differs from the last reported one (or a retry is due) and has
        not changed for ``settle`` seconds; the consumer should act now."""
        if fp != self._seen:
            self._seen, self._since = fp, now
            return False
        if fp == self._reported and not self._retry:
            return False
        if now - self._since < self.settle:
            return False
        self._reported, self._retry = fp, False
        return True


class Poller:
    """:func:`fingerprint` + :class:`Detector` for one host; call :meth:`poll` periodically."""

    def __init__(self, host: Host, *, files: tuple[str, ...] = (), settle: float = SETTLE):
        self.host = host
        self.files = files
        self.detector = Detector(settle)
        self.detector.start(fingerprint(host, files))

    def poll(self, now: float) -> bool:
        """True when a MIG reconfiguration or driver reload has happened and settled."""
        return self.detector.observe(fingerprint(self.host, self.files), now)

    def retry(self) -> None:
        self.detector.retry()

"""Detect changes to the capability nodes and to the set of MIG instances, as they happen.

Two sources, because the driver signals only one of them (``docs/driver.md``, "Events"):

- **nodes**: inotify on ``<root>/dev/nvidia-caps`` (create, attribute change, move in and out,
  delete, and the directory itself going away).  nvidia-modprobe, run by ``nvidia-smi`` and
  the container toolkit, re-creates a node or changes its mode without telling anyone; the
  kernel tells inotify at once.  While the directory is missing, ``<root>/dev`` is watched for
  it to appear;
- **instances**: a poll of the capability files under
  ``<root>/proc/driver/nvidia/capabilities/gpu*/mig/``.  The driver sends no uevent when a GPU
  or compute instance is created or destroyed, and procfs supports no inotify, so the tree is
  read every ``poll_interval`` seconds (a ``getdents`` per GPU and GPU instance, no file
  opened: :func:`fingerprint`) together with the identity of ``files`` (the topology
  snapshot).  A driver reload re-registers the whole tree and procfs gives the new
  directories new inode numbers, so a reload shows as a change even when the same instances
  come back.

Two kinds of instance subscribers:

- ``subscribe_instances``: the set of instances changed, reported by the poll that sees it
  (``capctl watch`` puts grants back at once);
- ``subscribe_settled``: the instances, a reload or one of ``files`` changed and then held
  still for ``settle`` seconds (:class:`Settle`), so a reconfiguration in progress (a GPU
  instance made, then its compute instances, then the snapshot rewritten) is reported once,
  when it is over (the CDI spec is regenerated from both).  While a change settles the next
  poll comes ``settle`` seconds after it was seen, not ``poll_interval``.  :meth:`retry`
  reports the current state again at the next stable poll (the consumer failed).

The API, for ``capctl watch`` and any other consumer::

    detector = ChangeDetector(host, poll_interval=1.0, files=(snapshot,), settle=0.5)
    detector.subscribe_nodes(lambda change: ...)       # NodeChange: names, overflow
    detector.subscribe_instances(lambda change: ...)   # InstanceChange: added, removed, now
    detector.subscribe_settled(lambda change: ...)     # Settled: now
    detector.run(stop_event)                           # blocking loop, or:
    loop.add_reader(detector.fileno(), detector.read_nodes)   # in an event loop, plus
    detector.poll()                                    # at next_poll_at()
    detector.retry()                                   # after a settled change failed
    detector.close()

Subscribers are called on the thread that reads or polls, in subscription order, with plain
immutable values.  ``read_nodes`` and ``poll`` also return what they dispatched (None for
nothing; ``poll`` returns the instance change), so a caller may use either style.
:meth:`ChangeDetector.instances` is the current set, taken at construction and after each
poll.

inotify is reached through ``ctypes`` (the C library's ``inotify_init1`` and
``inotify_add_watch``): the standard library has no binding, and no dependency is needed for
three calls.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from capctl.driver import capnames
from capctl.errors import DriverError
from capctl.host import Host

# <sys/inotify.h>
IN_ATTRIB = 0x00000004
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

#: What happens to a node: nvidia-modprobe unlinks and re-creates it, then chmods and chowns it;
#: a rename onto it is a move in; the directory going away is a driver unload or a cleanup.
NODE_MASK = (
    IN_CREATE | IN_ATTRIB | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_DELETE_SELF
    | IN_MOVE_SELF | IN_ONLYDIR
)
#: ``<root>/dev``: only ``nvidia-caps`` appearing matters.
PARENT_MASK = IN_CREATE | IN_MOVED_TO | IN_ONLYDIR

#: Default seconds a change must hold still before ``subscribe_settled`` hears of it: with
#: the default poll a change is reported 0.5-1.5 s after it happens (``docs/cdi.md``).
SETTLE = 0.5

_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then the name


@dataclass(frozen=True, slots=True)
class NodeChange:
    """Something changed in ``/dev/nvidia-caps``.

    ``names``: the entries concerned (``nvidia-cap21``), or empty with ``overflow`` when the
    kernel's queue overflowed or the directory itself appeared, vanished or moved: then
    anything may have changed.
    """

    names: frozenset[str]
    overflow: bool = False


@dataclass(frozen=True, slots=True)
class InstanceChange:
    """The set of MIG capabilities with a proc file changed (instances created or destroyed).

    Names as in ``mig-minors`` (``gpu0/gi7/access``, ``gpu0/gi7/ci0/access``).
    """

    added: frozenset[str]
    removed: frozenset[str]
    now: frozenset[str]


@dataclass(frozen=True, slots=True)
class Settled:
    """The instances, the driver or a watched file changed and then held still.

    ``now``: the GI/CI capabilities with a proc file at that moment.
    """

    now: frozenset[str]


def parse_events(data: bytes) -> list[tuple[int, int, str]]:
    """``(wd, mask, name)`` of each ``struct inotify_event`` in ``data``.  Pure."""
    out: list[tuple[int, int, str]] = []
    pos, end = 0, len(data)
    while pos + _EVENT.size <= end:
        wd, mask, _cookie, length = _EVENT.unpack_from(data, pos)
        pos += _EVENT.size
        raw = data[pos : pos + length]
        pos += length
        out.append((wd, mask, os.fsdecode(raw.split(b"\0", 1)[0])))
    return out


Fingerprint = tuple[tuple[str, int], ...]


def _scan(path: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            return list(it)
    except (FileNotFoundError, NotADirectoryError):
        return []  # no driver, or a directory that vanished while we looked: a change itself
    except OSError as err:
        raise DriverError(f"{path}: cannot read: {err.strerror or err}") from err


def _numbered_dir(entry: os.DirEntry[str], prefix: str) -> bool:
    name = entry.name
    return (name[: len(prefix)] == prefix and name[len(prefix) :].isdigit()
            and entry.is_dir(follow_symlinks=False))


def _tree(capabilities_dir: str) -> list[tuple[str, int]]:
    """``(gpu<N>/mig/gi<G>[/ci<C>]/access, inode of its directory)`` for every GI/CI
    capability whose proc file exists under ``capabilities_dir``, sorted.

    One ``getdents`` for the directory, one per GPU in MIG mode and one per GPU instance
    (its ``access`` file and its ``ci<C>`` directories), nothing per compute instance and no
    file opened: a ``ci<C>`` directory exists exactly while its ``access`` file does (the
    driver makes and removes both with the instance).  The inode numbers (free in
    ``getdents``) tell a driver reload, which re-creates every directory.
    """
    out: list[tuple[str, int]] = []
    for gpu in _scan(capabilities_dir):
        if not _numbered_dir(gpu, "gpu"):
            continue
        for gi in _scan(f"{gpu.path}/mig"):
            if not _numbered_dir(gi, "gi"):
                continue
            prefix = f"{gpu.name}/mig/{gi.name}"
            for entry in _scan(gi.path):
                if entry.name == "access":
                    out.append((f"{prefix}/access", gi.inode()))
                elif _numbered_dir(entry, "ci"):
                    out.append((f"{prefix}/{entry.name}/access", entry.inode()))
    out.sort()
    return out


def _names(tree: list[tuple[str, int]]) -> frozenset[str]:
    """Capability names (``gpu0/gi7/ci0/access``) of :func:`_tree`'s paths."""
    return frozenset(path.replace("/mig/", "/", 1) for path, _ino in tree)


def _identities(files: tuple[str, ...]) -> list[tuple[str, int]]:
    """``(path, identity)`` of each file: inode, size and times hashed; 0 when absent."""
    out: list[tuple[str, int]] = []
    for path in files:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            out.append((path, 0))
            continue
        except OSError as err:
            raise DriverError(f"{path}: cannot stat: {err.strerror or err}") from err
        out.append((path, hash((st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))))
    return out


def scan_instances(capabilities_dir: str) -> frozenset[str]:
    """Names of the GI/CI capabilities whose proc file exists under ``capabilities_dir``
    (as in ``mig-minors``).  A directory that vanishes while being read is an instance
    destroyed meanwhile."""
    return _names(_tree(capabilities_dir))


def fingerprint(host: Host, files: tuple[str, ...] = ()) -> Fingerprint:
    """The MIG capability tree under ``host`` with its directories' inodes (:func:`_tree`),
    then ``(path, identity)`` of each of ``files`` (absolute paths; 0 when absent).

    Equal fingerprints mean "nothing changed": no instance made or destroyed, no driver
    reload, none of ``files`` rewritten.
    """
    return (*_tree(host.path(capnames.CAPABILITIES_DIR)), *_identities(files))


@dataclass
class Settle:
    """Pure: has the fingerprint changed, and held still for ``settle`` seconds?"""

    settle: float = SETTLE
    _reported: Fingerprint | None = None
    _seen: Fingerprint | None = None
    _since: float = 0.0
    _retry: bool = False

    def start(self, fp: Fingerprint) -> None:
        """The fingerprint the consumer has acted on already (at start)."""
        self._reported = self._seen = fp

    def retry(self) -> None:
        """Report the current state again on the next stable observation."""
        self._retry = True

    @property
    def pending(self) -> bool:
        """Is a report due once the last observation holds still?"""
        return self._retry or self._seen != self._reported

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


class _Inotify:
    """The three inotify calls, through the C library."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise DriverError(f"inotify_init1: {os.strerror(err)}")
        self.fd: int = fd

    def add_watch(self, path: str, mask: int) -> int | None:
        """The watch descriptor, or None if ``path`` is missing or not a directory."""
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(path), ctypes.c_uint32(mask))
        if wd >= 0:
            return int(wd)
        err = ctypes.get_errno()
        if err in (errno.ENOENT, errno.ENOTDIR):
            return None
        raise DriverError(f"{path}: inotify_add_watch: {os.strerror(err)}")

    def rm_watch(self, wd: int) -> None:
        self._libc.inotify_rm_watch(self.fd, ctypes.c_int(wd))  # EINVAL if gone: fine

    def read(self) -> bytes:
        try:
            return os.read(self.fd, 64 * 1024)
        except BlockingIOError:
            return b""

    def close(self) -> None:
        os.close(self.fd)


NodeSubscriber = Callable[[NodeChange], None]
InstanceSubscriber = Callable[[InstanceChange], None]
SettledSubscriber = Callable[[Settled], None]


class ChangeDetector:
    """Node changes from inotify, instance (and watched file) changes from a poll, to
    subscribers."""

    def __init__(self, host: Host, *, poll_interval: float = 1.0, files: tuple[str, ...] = (),
                 settle: float = SETTLE, clock: Callable[[], float] = time.monotonic) -> None:
        self.poll_interval = poll_interval
        self._clock = clock  # seconds; tests drive a fake one
        self._caps_dir = host.path(capnames.CAPS_DEV_DIR)
        self._dev_dir = os.path.dirname(self._caps_dir)
        self._capabilities = host.path(capnames.CAPABILITIES_DIR)
        self._files = tuple(files)
        self._node_subs: list[NodeSubscriber] = []
        self._instance_subs: list[InstanceSubscriber] = []
        self._settled_subs: list[SettledSubscriber] = []
        self._inotify = _Inotify()
        self._caps_wd: int | None = None
        self._dev_wd: int | None = None
        self._arm()
        tree = _tree(self._capabilities)
        self._instances = _names(tree)
        self._settle = Settle(settle)
        self._settle.start((*tree, *_identities(self._files)))
        self._next_poll = clock() + poll_interval

    # --- subscribing ---------------------------------------------------------------------

    def subscribe_nodes(self, fn: NodeSubscriber) -> None:
        self._node_subs.append(fn)

    def subscribe_instances(self, fn: InstanceSubscriber) -> None:
        self._instance_subs.append(fn)

    def subscribe_settled(self, fn: SettledSubscriber) -> None:
        self._settled_subs.append(fn)

    @property
    def instances(self) -> frozenset[str]:
        """The GI/CI capabilities that had a proc file at the last poll."""
        return self._instances

    # --- nodes ---------------------------------------------------------------------------

    def fileno(self) -> int:
        """The inotify descriptor: readable when node events wait (for select/add_reader)."""
        return self._inotify.fd

    def _arm(self) -> bool:
        """Watch ``nvidia-caps`` if it exists, else its parent for it; True if it was just
        found (an event in itself: nodes may be there that no event announced)."""
        if self._caps_wd is not None:
            return False
        self._caps_wd = self._inotify.add_watch(self._caps_dir, NODE_MASK)
        if self._caps_wd is None:
            if self._dev_wd is None:
                self._dev_wd = self._inotify.add_watch(self._dev_dir, PARENT_MASK)
            return False
        return True

    def read_nodes(self) -> NodeChange | None:
        """Read the pending inotify events; dispatch and return the change, None if none."""
        names: set[str] = set()
        overflow = False
        while True:
            data = self._inotify.read()
            if not data:
                break
            for wd, mask, name in parse_events(data):
                if mask & IN_Q_OVERFLOW:
                    overflow = True
                elif wd == self._caps_wd and wd is not None:
                    if mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED):
                        if not mask & IN_IGNORED:
                            self._inotify.rm_watch(wd)
                        self._caps_wd = None
                        overflow = True
                    elif name:
                        names.add(name)
                elif wd == self._dev_wd and name == os.path.basename(self._caps_dir):
                    overflow = True
        if self._arm():
            overflow = True
        if not names and not overflow:
            return None
        change = NodeChange(frozenset(() if overflow else names), overflow)
        self._dispatch_nodes(change)
        return change

    # --- instances -----------------------------------------------------------------------

    def next_poll_at(self) -> float:
        """When :meth:`poll` is next due (seconds of the detector's clock, by default
        ``time.monotonic()``)."""
        return self._next_poll

    def poll(self) -> InstanceChange | None:
        """Compare the instances with the last poll; dispatch and return a change, or None.

        Also tells ``subscribe_settled`` once a change (instances, a driver reload, a watched
        file) has held still for ``settle`` seconds, and re-arms the node watch if
        ``nvidia-caps`` (or ``dev``) appeared unseen.
        """
        now = self._clock()
        if self._caps_wd is None and self._arm():
            self._dispatch_nodes(NodeChange(frozenset(), True))
        tree = _tree(self._capabilities)
        names = _names(tree)
        change = None
        if names != self._instances:
            change = InstanceChange(names - self._instances, self._instances - names, names)
            self._instances = names
            for fn in self._instance_subs:
                fn(change)
        if self._settle.observe((*tree, *_identities(self._files)), now):
            settled = Settled(names)
            for tell in self._settled_subs:
                tell(settled)
        self._next_poll = now + self._wait()
        return change

    def retry(self) -> None:
        """Tell ``subscribe_settled`` the current state again at the next stable poll (its
        consumer failed and wants another try)."""
        self._settle.retry()
        self._next_poll = min(self._next_poll, self._clock() + self._wait())

    def _wait(self) -> float:
        """Seconds to the next poll: ``poll_interval``, or ``settle`` while a change settles
        (it is reported at the first poll that finds it still for that long)."""
        if self._settled_subs and self._settle.pending:
            return min(self.poll_interval, self._settle.settle)
        return self.poll_interval

    def _dispatch_nodes(self, change: NodeChange) -> None:
        for fn in self._node_subs:
            fn(change)

    # --- a loop for callers without one --------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Read and poll until ``stop`` is set (checked at least every ``poll_interval``)."""
        while not stop.is_set():
            timeout = max(0.0, self._next_poll - self._clock())
            ready, _w, _x = select.select([self.fileno()], [], [], timeout)
            if ready:
                self.read_nodes()
            if self._clock() >= self._next_poll:
                self.poll()

    def close(self) -> None:
        self._inotify.close()

    def __enter__(self) -> ChangeDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""``capctl watch``: run ``sync`` when the NVIDIA driver (re)loads, from kernel uevents, and
when a capability node or the set of MIG instances changes (:mod:`capctl.watch.changes`).

For hosts and driver containers without udev.  The listener joins the kernel's uevent
multicast group (``NETLINK_KOBJECT_UEVENT``, group 1: events as the kernel sends them, before
udev) through pyroute2's ``AsyncUeventSocket``, on an asyncio loop that also takes SIGTERM and
SIGINT (clean exit) and times the debounce.

Three parts, two of them pure and tested on their own:

- :func:`parse` / :func:`from_message`: a uevent's ``ACTION``, ``DEVPATH``, ``SUBSYSTEM`` and
  the rest of its ``KEY=VALUE`` environment;
- :func:`is_driver_event`: the filter -- does this event mean the capability nodes may need
  (re)making?
- :class:`Debouncer`: a reload emits a burst (the module, then one PCI ``bind`` per GPU); run
  one sync once the burst has been quiet for ``quiet`` seconds, and never wait longer than
  ``max_delay`` after the first event of a burst.

A forged event (root can send to the group) costs one ``sync``, which is idempotent.

Node and instance changes (a :class:`~capctl.watch.changes.ChangeDetector` on the same loop)
use a second debouncer with a short quiet period (``NODE_QUIET``): nvidia-modprobe re-creates
a node in a few system calls (unlink, mknod, chmod, chown), and one ``sync`` after the last
puts the grant back.  capctl's own ``sync`` changes nodes too, which costs one more ``sync``
that finds nothing to do.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from capctl.watch.changes import ChangeDetector

#: The kernel's uevent multicast group (``MONITOR_GROUP_KERNEL`` in pyroute2; udev's is 2).
KERNEL_GROUP = 1
#: Quiet period and longest wait after a node change before ``sync`` (seconds).
NODE_QUIET = 0.01
NODE_MAX_DELAY = 0.05


@dataclass(frozen=True, slots=True)
class Uevent:
    action: str
    devpath: str
    subsystem: str
    env: Mapping[str, str] = field(default_factory=dict)


def parse(data: bytes) -> Uevent | None:
    """Parse a kernel uevent datagram: ``action@devpath`` then NUL-separated ``KEY=VALUE``.

    None for anything else (libudev's binary-headed messages, junk): the listener ignores it.
    """
    if data.startswith(b"libudev\0"):
        return None
    head, _sep, rest = data.partition(b"\0")
    if b"@" not in head:
        return None
    env: dict[str, str] = {}
    for item in rest.split(b"\0"):
        k, eq, v = item.partition(b"=")
        if eq and k:
            env[k.decode("ascii", "replace")] = v.decode("utf-8", "replace")
    return _from_env(env)


def _from_env(env: Mapping[str, str]) -> Uevent | None:
    action, devpath = env.get("ACTION"), env.get("DEVPATH")
    if not action or not devpath:
        return None
    return Uevent(action, devpath, env.get("SUBSYSTEM", ""), dict(env))


def from_message(msg: Mapping[str, Any]) -> Uevent | None:
    """The event in a pyroute2 ``ueventmsg`` (a dict of the ``KEY=VALUE`` pairs)."""
    return _from_env({k: v for k, v in msg.items() if isinstance(k, str) and isinstance(v, str)})


def is_driver_event(ev: Uevent) -> bool:
    """Does ``ev`` mean the driver's capabilities may have (re)appeared?

    - ``add`` of the ``nvidia`` module: its capabilities, ``/proc/devices`` entry and minors
      files exist by then, since the kernel sends a module's ``add`` after its init function
      returns (``do_init_module`` in kernel/module/main.c); a reload has wiped what capctl made
      from the old ``nvidia-caps`` major's point of view (the major may change);
    - ``bind`` of a PCI device to the ``nvidia`` driver: a GPU (re)attached (reset, rebind).

    Removals need nothing: a gone driver has nothing to sync.  Devices of the
    ``nvidia-caps-imex-channels`` class are IMEX channels, whose nodes capctl does not manage
    (``/dev/nvidia-caps-imex-channels``, nvidia-modprobe's ``-i``): not an event for ``sync``.
    """
    if ev.subsystem == "module":
        return ev.action == "add" and ev.devpath == "/module/nvidia"
    if ev.subsystem == "pci":
        return ev.action == "bind" and ev.env.get("DRIVER") == "nvidia"
    return False


@dataclass
class Debouncer:
    """Pure: when is a burst over?  Times are ``time.monotonic()`` seconds."""

    quiet: float = 1.0
    max_delay: float = 10.0
    _first: float | None = None
    _last: float | None = None

    def event(self, now: float) -> None:
        if self._first is None:
            self._first = now
        self._last = now

    @property
    def pending(self) -> bool:
        return self._first is not None

    def due_at(self) -> float | None:
        """When to run, or None with nothing pending."""
        if self._first is None or self._last is None:
            return None
        return min(self._last + self.quiet, self._first + self.max_delay)

    def take(self, now: float) -> bool:
        """True (and reset) if a pending burst is due at ``now``."""
        due = self.due_at()
        if due is None or now < due:
            return False
        self._first = self._last = None
        return True


Trigger = Callable[[], None]
Match = Callable[[Uevent], bool]


async def _listen(
    on_trigger: Trigger,
    match: Match,
    debouncer: Debouncer,
    on_ready: Callable[[], None] | None,
    on_event: Callable[[Uevent], None] | None,
    detector: ChangeDetector | None = None,
    on_tick: Callable[[], None] | None = None,
) -> None:
    from pyroute2.netlink.uevent import AsyncUeventSocket

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    kick = asyncio.Event()
    fast = Debouncer(NODE_QUIET, NODE_MAX_DELAY)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if detector is not None:

        def changed(_change: object) -> None:
            fast.event(time.monotonic())
            kick.set()

        detector.subscribe_nodes(changed)
        detector.subscribe_instances(changed)
        loop.add_reader(detector.fileno(), detector.read_nodes)
    sock = AsyncUeventSocket()
    try:
        await sock.bind(groups=KERNEL_GROUP)

        async def receive() -> list[Any]:
            return [m async for m in sock.get()]

        if on_ready is not None:
            on_ready()
        stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        recv: asyncio.Future[Any] | None = None
        kicked: asyncio.Future[Any] | None = None
        try:
            while not stop.is_set():
                if recv is None:
                    recv = asyncio.ensure_future(receive())
                if kicked is None:
                    kicked = asyncio.ensure_future(kick.wait())
                dues = [debouncer.due_at(), fast.due_at()]
                if detector is not None:
                    dues.append(detector.next_poll_at())
                due = min((d for d in dues if d is not None), default=None)
                timeout = None if due is None else max(0.0, due - time.monotonic())
                waiting: set[asyncio.Future[Any]] = {recv, stopping, kicked}
                done, _pending = await asyncio.wait(
                    waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if kicked in done:
                    kick.clear()
                    kicked = None
                if detector is not None and time.monotonic() >= detector.next_poll_at():
                    detector.poll()
                if recv in done:
                    msgs, recv = recv.result(), None
                    for msg in msgs:
                        ev = from_message(msg)
                        if ev is not None and match(ev):
                            if on_event is not None:
                                on_event(ev)
                            debouncer.event(time.monotonic())
                now = time.monotonic()
                driver, nodes = debouncer.take(now), fast.take(now)
                if not stop.is_set() and (driver or nodes):
                    on_trigger()
                if on_tick is not None:
                    on_tick()
        finally:
            if detector is not None:
                loop.remove_reader(detector.fileno())
            for fut in (recv, stopping, kicked):
                if fut is not None and not fut.done():
                    fut.cancel()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        sock.close()


def watch(
    on_trigger: Trigger,
    *,
    quiet: float = 1.0,
    max_delay: float = 10.0,
    match: Match = is_driver_event,
    on_ready: Callable[[], None] | None = None,
    on_event: Callable[[Uevent], None] | None = None,
    detector: ChangeDetector | None = None,
    on_tick: Callable[[], None] | None = None,
) -> None:
    """Call ``on_trigger`` after each burst of matching uevents, and (with ``detector``) soon
    after each node or instance change; return on SIGTERM/SIGINT.

    ``on_trigger`` runs on the listening thread; events arriving meanwhile wait in the socket's
    receive buffer (and the inotify queue) and cause one more run.  ``on_ready`` is called once
    the socket is bound (no event after that is missed).  The detector's other subscribers
    (``subscribe_settled``: the CDI spec) run on the same thread, from its polls.
    ``on_tick`` is called at the end of every turn of the loop, which turns at least once per
    detector poll: the heartbeat (:mod:`capctl.watch.heartbeat`) that shows the loop is not
    stuck.
    """
    asyncio.run(_listen(on_trigger, match, Debouncer(quiet, max_delay), on_ready, on_event,
                        detector, on_tick))

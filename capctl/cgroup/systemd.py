"""Keep a grant in the ``DeviceAllow=`` of the systemd unit that owns a container's cgroup.

With the systemd cgroup driver (runc ``--systemd-cgroup``, the Kubernetes default) each
container is a transient unit, usually a scope such as ``system.slice/capctl-<id>.scope``,
and systemd owns its device access: ``systemctl daemon-reload`` re-applies the unit's
``DeviceAllow=`` list (v1: rewrites ``devices.list``; v2: attaches its own program beside
every other one, and each must allow), dropping a grant made in the cgroup alone
(docs/systemd.md).  So the grant is also added to the unit, at runtime, through systemd's
D-Bus API (org.freedesktop.systemd1(5)):

* ``Manager.SetUnitProperties(s name, b runtime, a(sv) properties)`` with
  ``("DeviceAllow", <a(ss) [(path, access)]>)``: a non-empty list is *appended* to the
  unit's list, an empty one resets it (so a rollback sends the empty list, then the list read
  before the grant, in one call);
* ``/dev/char/<major>:<minor>`` paths, which systemd parses without looking the link up
  (``device_path_parse_major_minor`` in systemd ``src/basic/devnum-util.c``).

The D-Bus client is jeepney (pure Python, no dependencies), imported only here, and this
module only when a cgroup belongs to a systemd unit: the hook's path stays free of it
otherwise.  The bus address is fixed (never ``DBUS_SYSTEM_BUS_ADDRESS`` from the
environment).
"""

from __future__ import annotations

import os

from capctl.cgroup.undo import Undo
from capctl.errors import CgroupError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

    from capctl.edits.rules import DeviceRule

SYSTEM_BUS = "unix:path=/run/dbus/system_bus_socket"
#: Exists iff systemd is the running init (sd_booted(3)).
SYSTEMD_RUN_DIR = "/run/systemd/system"
BUS_NAME = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER = "org.freedesktop.systemd1.Manager"
#: Unit types with a cgroup context, by name suffix: the interface holding ``DeviceAllow``.
INTERFACES = {
    ".scope": "org.freedesktop.systemd1.Scope",
    ".service": "org.freedesktop.systemd1.Service",
}
TIMEOUT = 10.0

Entry = tuple[str, str]  # (device path, access)


def unit_of(cgroup_path: str) -> str | None:
    """The systemd unit a cgroup directory is, or None if it is not one of systemd's.

    systemd names a unit's cgroup after the unit and nests it in its slice's cgroup
    (``.../system.slice/capctl-<id>.scope``); the cgroupfs driver's directories
    (``/docker/<id>``, ``/kubepods/...``) have no such names.
    """
    parts = [p for p in cgroup_path.split("/") if p]
    if len(parts) < 2 or not parts[-2].endswith(".slice"):
        return None
    name = parts[-1]
    return name if any(name.endswith(s) and len(name) > len(s) for s in INTERFACES) else None


def systemd_booted(run_dir: str = SYSTEMD_RUN_DIR) -> bool:
    return os.path.isdir(run_dir)


def entries(rules: Iterable[DeviceRule]) -> list[Entry]:
    """``DeviceAllow=`` entries for exact allow rules; fails closed on anything else."""
    out: list[Entry] = []
    for rule in rules:
        kind = {"c": "char", "b": "block"}.get(rule.type.value)
        if not rule.allow or kind is None or rule.major is None or rule.minor is None:
            raise CgroupError(f"rule {rule}: no DeviceAllow= entry for it (exact c/b allow only)")
        out.append((f"/dev/{kind}/{rule.major}:{rule.minor}", str(rule.access)))
    return out


class Systemd:
    """A connection to systemd on the system bus (jeepney, blocking)."""

    def __init__(self, address: str = SYSTEM_BUS):
        from jeepney.io.blocking import open_dbus_connection

        try:
            self.conn = open_dbus_connection(bus=address)
        except (OSError, ValueError) as err:
            raise CgroupError(f"systemd: cannot reach the system bus {address}: {err}") from err

    def close(self) -> None:
        self.conn.close()

    def _call(self, path: str, interface: str, method: str, sig: str, body: tuple[object, ...]
              ) -> tuple[object, ...]:
        from jeepney import DBusAddress, new_method_call
        from jeepney.wrappers import DBusErrorResponse, unwrap_msg

        addr = DBusAddress(path, bus_name=BUS_NAME, interface=interface)
        try:
            reply = self.conn.send_and_get_reply(
                new_method_call(addr, method, sig, body), timeout=TIMEOUT
            )
            result: tuple[object, ...] = unwrap_msg(reply)
        except DBusErrorResponse as err:
            raise CgroupError(f"systemd: {method}{body[:1]}: {err.name}: {err.data}") from err
        except (OSError, TimeoutError) as err:
            raise CgroupError(f"systemd: {method}: {err}") from err
        return result

    def device_allow(self, unit: str) -> list[Entry]:
        """The unit's ``DeviceAllow=`` list."""
        (path,) = self._call(MANAGER_PATH, MANAGER, "GetUnit", "s", (unit,))
        iface = next(i for s, i in INTERFACES.items() if unit.endswith(s))
        (variant,) = self._call(
            str(path), "org.freedesktop.DBus.Properties", "Get", "ss", (iface, "DeviceAllow")
        )
        if not (isinstance(variant, tuple) and len(variant) == 2 and variant[0] == "a(ss)"):
            raise CgroupError(f"systemd: {unit}: DeviceAllow is {variant!r}, not a(ss)")
        value: list[tuple[str, str]] = variant[1]
        return [(str(p), str(a)) for p, a in value]

    def set_device_allow(self, unit: str, *lists: list[Entry]) -> None:
        """One ``SetUnitProperties(unit, runtime=true, ...)`` call assigning each list in turn
        (an empty list resets, a non-empty one appends)."""
        props = [("DeviceAllow", ("a(ss)", list(lst))) for lst in lists]
        self._call(MANAGER_PATH, MANAGER, "SetUnitProperties", "sba(sv)", (unit, True, props))


def allow(unit: str, rules: Iterable[DeviceRule], *, address: str = SYSTEM_BUS) -> Undo:
    """Add ``DeviceAllow=`` entries for *rules* to *unit*; the :class:`Undo` restores the list
    the unit had before (reset, then re-assign)."""
    wanted = entries(rules)
    bus = Systemd(address)
    try:
        before = bus.device_allow(unit)
        new = [e for e in wanted if e not in before]
        if not new:
            bus.close()
            return Undo(f"{unit} DeviceAllow (unchanged)")
        bus.set_device_allow(unit, new)
    except BaseException:
        bus.close()
        raise

    def rollback() -> None:
        if before:
            bus.set_device_allow(unit, [], before)
        else:
            bus.set_device_allow(unit, [])

    return Undo(f"{unit} DeviceAllow", rollback, bus.close)

"""Pure parsing of what an OCI runtime hands a hook: the container state and ``config.json``.

Both come from the runtime, but ``config.json``'s ``process.env`` is the image's and the
user's: hostile.  Everything is bounded and validated; anything malformed is a
:class:`HookError` naming the field, and the hook fails closed (OCI runtime spec,
"Lifecycle" and "POSIX-platform Hooks": the state is on stdin, ``bundle`` is absolute).
Both are decoded by :mod:`capctl._lite.jsonload`: UTF-8 only, and a key repeated in one object or
a ``NaN`` is an error, since the runtime that reads the same file may not read it the same way.
"""

from __future__ import annotations

# collections.abc is a submodule: importing it runs collections/__init__ (about 1 ms at
# every hook start).  _collections_abc holds the very same classes and is loaded at every
# start already (os imports it).
from _collections_abc import Mapping

from capctl._lite import jsonload
from capctl._lite.record import Record
from capctl.edits.rules import Access, DeviceRule, DeviceType, char
from capctl.errors import HookError, ParseError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: A state is a few hundred bytes; annotations can add some.
MAX_STATE = 64 * 1024
#: config.json with large env and mount lists stays far below this.
MAX_CONFIG = 4 * 1024 * 1024

#: createRuntime and prestart hooks see the container "creating" (runc) or "created"
#: (runtimes that report it once create has finished); anything later is a misconfigured stage.
HOOK_STATUSES = frozenset({"creating", "created"})

VISIBLE = "NVIDIA_VISIBLE_DEVICES"
MIG_CONFIG = "NVIDIA_MIG_CONFIG_DEVICES"
MIG_MONITOR = "NVIDIA_MIG_MONITOR_DEVICES"
_WANTED = (VISIBLE, MIG_CONFIG, MIG_MONITOR)
#: The NVIDIA device plugin's ``DEVICE_LIST_STRATEGY=volume-mounts``: the env names this
#: directory and each device is a mount ``DEVICE_LIST_DIR/<id>`` (k8s-device-plugin
#: ``internal/plugin/server.go``, ``deviceListAsVolumeMountsRoot``).
DEVICE_LIST_DIR = "/var/run/nvidia-container-devices"

# A container id is ``[A-Za-z0-9][A-Za-z0-9_.+:-]{0,1023}``: ASCII letters and digits, then
# also ``_.+:-``; nothing path-like.  Checked with sets, not a regular expression: importing
# ``re`` costs about 5 ms of every hook start (docs/hook-startup.md).
_ID_FIRST = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_ID_CHARS = _ID_FIRST | frozenset("_.+:-")
MAX_ID = 1024


def is_container_id(text: str) -> bool:
    """Whether ``text`` is a container id capctl accepts (the comment above says which)."""
    return 0 < len(text) <= MAX_ID and text[0] in _ID_FIRST and _ID_CHARS.issuperset(text)


class State(Record):
    id: str
    status: str
    pid: int
    bundle: str


#: The default of :attr:`Container.annotations` (never written to).
_NO_ANNOTATIONS: Mapping[str, str] = {}


class Container(Record):
    """What the hook needs from ``config.json``."""

    rootfs: str  # absolute
    env: Mapping[str, str]  # only the NVIDIA_* variables capctl reads
    sys_admin: bool  # CAP_SYS_ADMIN in the bounding set
    #: The device rules the runtime derived from the spec: used on cgroup v2 only when the
    #: container's own filter cannot be read back.  None if they cannot be derived.
    spec_rules: list[DeviceRule] | None
    #: ``linux.namespaces`` has a user namespace: its CAP_SYS_ADMIN is not the host's, and
    #: it cannot ``mknod`` device nodes (they are bind-mounted instead).
    user_namespace: bool = False
    #: The OCI ``annotations`` (string to string), which say who created the container.
    annotations: Mapping[str, str] = _NO_ANNOTATIONS
    #: ``(id, source)`` of each mount at ``DEVICE_LIST_DIR/<id>``: the device plugin's
    #: volume-mounts device list (see :mod:`capctl.request.trust`).
    device_list: tuple[tuple[str, str], ...] = ()

    @property
    def privileged(self) -> bool:
        """Host privilege: CAP_SYS_ADMIN in the bounding set *and* no user namespace
        (``docs/trust.md``)."""
        return self.sys_admin and not self.user_namespace


def _load_json(data: bytes, what: str, limit: int) -> dict[str, Any]:
    if len(data) > limit:
        raise HookError(f"{what}: larger than {limit} bytes; refusing")
    try:
        value = jsonload.loads(data)
    except jsonload.JSONError as err:
        raise HookError(f"{what}: not valid JSON ({err})") from err
    if not isinstance(value, dict):
        raise HookError(f"{what}: must be a JSON object")
    return value


def _str(obj: Mapping[str, Any], key: str, what: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value or "\0" in value:
        raise HookError(f"{what}: {key!r} must be a non-empty string")
    return value


def parse_state(data: bytes) -> State:
    """The container state a runtime writes to a hook's stdin."""
    obj = _load_json(data, "container state (stdin)", MAX_STATE)
    cid = _str(obj, "id", "container state")
    if not is_container_id(cid):
        raise HookError(f"container state: id {cid[:64]!r} is not a container id")
    status = _str(obj, "status", "container state")
    if status not in HOOK_STATUSES:
        raise HookError(
            f"container {cid}: status {status[:32]!r}; capctl runs as a prestart or createRuntime "
            "hook only (check the hook's stage)"
        )
    pid = obj.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or not 0 < pid < 1 << 22:
        raise HookError(f"container {cid}: 'pid' must be a positive process id, not {pid!r}")
    bundle = _str(obj, "bundle", "container state")
    if not bundle.startswith("/"):
        raise HookError(f"container {cid}: bundle {bundle[:256]!r} is not an absolute path")
    return State(cid, status, pid, bundle)


def _env(process: Mapping[str, Any], where: str) -> dict[str, str]:
    entries = process.get("env", [])
    if not isinstance(entries, list):
        raise HookError(f"{where}: process.env must be a list")
    found: dict[str, str] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, str):
            raise HookError(f"{where}: process.env[{i}] must be a string")
        name, sep, value = entry.partition("=")
        if not sep or name not in _WANTED:
            continue
        # getenv() returns the first, other readers the last: two different values are
        # ambiguous, and ambiguity in what to grant is refused.
        if name in found and found[name] != value:
            raise HookError(f"{where}: {name} is set twice with different values")
        found[name] = value
    return found


def parse_config(data: bytes, bundle: str, where: str = "config.json") -> Container:
    """The parts of a bundle's ``config.json`` the hook uses."""
    spec = _load_json(data, where, MAX_CONFIG)
    root = spec.get("root")
    if not isinstance(root, dict):
        raise HookError(f"{where}: 'root' must be an object")
    path = _str(root, "path", f"{where}: root")
    rootfs = path if path.startswith("/") else f"{bundle.rstrip('/')}/{path}"
    process = spec.get("process", {})
    if not isinstance(process, dict):
        raise HookError(f"{where}: 'process' must be an object")
    caps = process.get("capabilities", {})
    if not isinstance(caps, dict):
        raise HookError(f"{where}: process.capabilities must be an object")
    bounding = caps.get("bounding", [])
    if not isinstance(bounding, list) or not all(isinstance(c, str) for c in bounding):
        raise HookError(f"{where}: process.capabilities.bounding must be a list of strings")
    try:
        spec_rules: list[DeviceRule] | None = oci_device_rules(spec, where)
    except ParseError as err:
        raise HookError(str(err)) from err
    linux = spec.get("linux", {})  # an object: oci_device_rules checked it
    return Container(
        rootfs,
        _env(process, where),
        "CAP_SYS_ADMIN" in bounding,
        spec_rules,
        user_namespace=_has_user_namespace(linux, where),
        annotations=_annotations(spec, where),
        device_list=_device_list(spec, where),
    )


def _has_user_namespace(linux: Mapping[str, Any], where: str) -> bool:
    namespaces = linux.get("namespaces", [])
    if not isinstance(namespaces, list) or not all(isinstance(n, Mapping) for n in namespaces):
        raise HookError(f"{where}: linux.namespaces must be a list of objects")
    for i, ns in enumerate(namespaces):
        kind = ns.get("type")
        if not isinstance(kind, str):
            raise HookError(f"{where}: linux.namespaces[{i}].type must be a string")
        if kind == "user":
            return True
    return False


def _annotations(spec: Mapping[str, Any], where: str) -> dict[str, str]:
    value = spec.get("annotations", {})
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise HookError(f"{where}: annotations must be an object of strings")
    return value


def _device_list(spec: Mapping[str, Any], where: str) -> tuple[tuple[str, str], ...]:
    """``(id, source)`` of every mount whose destination is ``DEVICE_LIST_DIR/<id>``."""
    mounts = spec.get("mounts", [])
    if not isinstance(mounts, list) or not all(isinstance(m, Mapping) for m in mounts):
        raise HookError(f"{where}: mounts must be a list of objects")
    prefix = DEVICE_LIST_DIR + "/"
    found: list[tuple[str, str]] = []
    for i, mount in enumerate(mounts):
        dest = mount.get("destination")
        if not isinstance(dest, str):
            raise HookError(f"{where}: mounts[{i}].destination must be a string")
        if not dest.startswith(prefix):
            continue
        source = mount.get("source", "")
        if not isinstance(source, str):
            raise HookError(f"{where}: mounts[{i}].source must be a string")
        found.append((dest.removeprefix(prefix), source))
    return tuple(found)


# --- OCI spec --------------------------------------------------------------------------------

# The devices every OCI runtime allows, to rebuild a container's whole filter when its program
# cannot be read back (docs/runtimes.md, "cgroup v2: an unreadable program").  These are the
# OCI runtime spec's default devices (config-linux.md, "Default Devices": /dev/null, zero,
# full, random, urandom, tty, ptmx) and the pty slaves /dev/ptmx opens (/dev/pts/*), each
# with the node path that leaves it out when linux.devices names that path, as runc does.
# Runtimes add more of their own, and differently: runc 1.1 allows "c *:* m", "b *:* m" and
# c 10:200 (tun; absent in 1.2.0-1.2.3), crun c 5:1 (console) and others.  Rebuilding with
# any one runtime's list would give another runtime's containers a device they never had;
# rebuilding with the common ones only can narrow (mknod, tun, console), never widen.
_DEFAULT_DEVICES: tuple[tuple[str | None, DeviceRule], ...] = (
    ("/dev/null", char(1, 3, "rwm")),
    ("/dev/zero", char(1, 5, "rwm")),
    ("/dev/full", char(1, 7, "rwm")),
    ("/dev/random", char(1, 8, "rwm")),
    ("/dev/urandom", char(1, 9, "rwm")),
    ("/dev/tty", char(5, 0, "rwm")),
    (None, char(5, 2, "rwm")),  # /dev/ptmx
    (None, char(136, None, "rwm")),  # /dev/pts/*
)
DEFAULT_DEVICE_RULES: tuple[DeviceRule, ...] = tuple(rule for _path, rule in _DEFAULT_DEVICES)


def _spec_int(entry: Mapping[str, Any], key: str, where: str) -> int | None:
    value = entry.get(key)
    if value is None or value == -1:  # OCI: absent (or runc's -1) means wildcard
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise ParseError(where, f"{key} must be an integer, not {value!r}")
    return value


def oci_device_rules(config: Mapping[str, Any], where: str = "config.json") -> list[DeviceRule]:
    """The device cgroup rules any OCI runtime gives a container of this ``config.json``:
    ``linux.resources.devices``, then the OCI default devices (:data:`DEFAULT_DEVICE_RULES`)
    less those whose path ``linux.devices`` names.  A subset of what runc and crun allow (each
    adds defaults of its own), used only to rebuild a filter that cannot be read back.  The
    ``linux.devices`` nodes themselves get no rule (runc only creates them; the spec allows
    them in ``linux.resources.devices``, as Docker, containerd and podman do).  Fails closed
    (:class:`ParseError`) on anything malformed, including an empty ``access``, which runc
    refuses too.
    """
    linux = config.get("linux", {})
    if not isinstance(linux, Mapping):
        raise ParseError(where, "linux must be an object")
    resources = linux.get("resources", {})
    if not isinstance(resources, Mapping):
        raise ParseError(where, "linux.resources must be an object")
    rules: list[DeviceRule] = []
    for i, entry in enumerate(
        _spec_list(resources.get("devices"), where, "linux.resources.devices")
    ):
        here = f"{where}: linux.resources.devices[{i}]"
        allow = entry.get("allow")
        if not isinstance(allow, bool):
            raise ParseError(here, "allow must be true or false")
        type_text = entry.get("type", "a") or "a"
        access_text = entry.get("access")
        if not isinstance(access_text, str) or not access_text:
            raise ParseError(here, "access must be a non-empty string (runc refuses it too)")
        try:
            rules.append(
                DeviceRule(
                    DeviceType(type_text),
                    _spec_int(entry, "major", here),
                    _spec_int(entry, "minor", here),
                    Access.parse(access_text),
                    allow,
                )
            )
        except ValueError as err:
            raise ParseError(here, str(err)) from err
    node_paths: set[str] = set()
    for i, entry in enumerate(_spec_list(linux.get("devices"), where, "linux.devices")):
        here = f"{where}: linux.devices[{i}]"
        type_text = entry.get("type")
        if type_text not in ("c", "b", "u", "p"):
            raise ParseError(here, f"type must be c, b, u or p, not {type_text!r}")
        path = entry.get("path")
        if not isinstance(path, str) or not path.startswith("/"):
            raise ParseError(here, "path must be an absolute path")
        if type_text != "p":
            major, minor = _spec_int(entry, "major", here), _spec_int(entry, "minor", here)
            if major is None or minor is None:
                raise ParseError(here, "a device node needs a major and a minor")
        node_paths.add(path)
    rules.extend(rule for path, rule in _DEFAULT_DEVICES if path is None or path not in node_paths)
    return rules


def _spec_list(value: object, where: str, name: str) -> list[Mapping[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(e, Mapping) for e in value):
        raise ParseError(where, f"{name} must be a list of objects")
    return value

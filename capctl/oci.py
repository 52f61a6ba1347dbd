"""Pure parsing of what an OCI runtime hands a hook: the container state and ``config.json``.

Both come from the runtime, but ``config.json``'s ``process.env`` is the image's and the
user's: hostile.  Everything is bounded and validated; anything malformed is a
:class:`HookError` naming the field, and the hook fails closed (OCI runtime spec,
"Lifecycle" and "POSIX-platform Hooks": the state is on stdin, ``bundle`` is absolute).
Both are decoded by :mod:`capctl.jsonload`: UTF-8 only, and a key repeated in one object or
a ``NaN`` is an error, since the runtime that reads the same file may not read it the same way.
"""

from __future__ import annotations

from capctl import jsonload
from capctl.errors import HookError, ParseError
from capctl.record import record
from capctl.rules import DeviceRule, oci_device_rules

TYPE_CHECKING = False
if TYPE_CHECKING:  # collections.abc imports collections (about 1 ms at every hook start)
    from collections.abc import Mapping
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

# A container id is ``[A-Za-z0-9][A-Za-z0-9_.+:-]{0,1023}``: ASCII letters and digits, then
# also ``_.+:-``; nothing path-like.  Checked with sets, not a regular expression: importing
# ``re`` costs about 5 ms of every hook start (issue 5).
_ID_FIRST = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_ID_CHARS = _ID_FIRST | frozenset("_.+:-")
MAX_ID = 1024


def is_container_id(text: str) -> bool:
    """Whether ``text`` is a container id capctl accepts (the comment above says which)."""
    return 0 < len(text) <= MAX_ID and text[0] in _ID_FIRST and _ID_CHARS.issuperset(text)


@record
class State:
    id: str
    status: str
    pid: int
    bundle: str


@record
class Container:
    """What the hook needs from ``config.json``."""

    rootfs: str  # absolute
    env: Mapping[str, str]  # only the NVIDIA_* variables capctl reads
    sys_admin: bool  # CAP_SYS_ADMIN in the bounding set
    #: The device rules the runtime derived from the spec: used on cgroup v2 only when the
    #: container's own filter cannot be read back.  None if they cannot be derived.
    spec_rules: list[DeviceRule] | None


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
    return Container(rootfs, _env(process, where), "CAP_SYS_ADMIN" in bounding, spec_rules)

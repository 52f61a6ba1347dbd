"""capctl's own settings from the config file (``--config``, TOML), read safely.

The file also holds the grants (:mod:`capctl.policy.grants`); this module reads only the settings
tables.  It is configuration for a root process acting for untrusted containers, so it is
taken only from a root-owned file that nobody else can write (when capctl runs as root), read
with a size bound, and a malformed file is an error naming it, never "defaults".

    [hook]
    log_file = "/var/log/capctl-hook.log"   # besides syslog; absolute path

    [requests]                 # who may ask for devices (docs/trust.md)
    envvar = "auto"            # NVIDIA_VISIBLE_DEVICES from: "any", "privileged", "auto"
    volume_mounts = true       # accept the device plugin's volume-mounts device list
    [cdi]
    output = "/var/run/cdi/capctl.io-mig.json"   # sync also regenerates this CDI spec
    management = false         # true: mig-config / mig-monitor in their own spec beside it

Each table has its own record and loader, so the hook never parses tables it does not use.
"""

from __future__ import annotations

import os
import stat

from capctl._lite.record import Record
from capctl.errors import CapctlError, ConfigError, ParseError
from capctl.host import Host, is_root_owned_safe, with_host_table

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from capctl.host import StrPath

MAX_CONFIG = 1 << 20


#: ``[requests] envvar`` values: every container / privileged ones only / "privileged" for
#: containers a Kubernetes CRI runtime made and "any" for the others.
ENVVAR_POLICIES = ("any", "privileged", "auto")


class RequestSettings(Record):
    """``[requests]``: who may ask for devices, and how (``docs/trust.md``)."""

    envvar: str = "auto"  # one of ENVVAR_POLICIES
    volume_mounts: bool = True


class Settings(Record):
    hook_log: str | None = None
    requests: RequestSettings = RequestSettings()


def read_config(path: StrPath) -> bytes | None:
    """The config file's bytes, checked; None if it does not exist.

    The one reader of the config file (settings here, grants in :mod:`capctl.policy.grants`).
    Checks are made on the open file, not the path (no TOCTOU): a regular file, root-owned
    and not writable by others when capctl runs as root (a config others can write would let
    them grant themselves any capability), at most ``MAX_CONFIG`` bytes.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise ConfigError(f"{path}: cannot open: {err.strerror or err}") from err
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{path}: not a regular file")
        if os.geteuid() == 0 and not is_root_owned_safe(st):
            raise ConfigError(
                f"{path}: not owned by root or writable by group/others; refusing it "
                f"(chown root:root {path}; chmod 0644 {path})"
            )
        data = f.read(MAX_CONFIG + 1)
    if len(data) > MAX_CONFIG:
        raise ParseError(path, f"larger than {MAX_CONFIG} bytes; refusing")
    return data


def parse_config(path: StrPath, data: bytes) -> dict[str, Any]:
    """The config's TOML table; a malformed file is an error naming it, never "defaults"."""
    import tomllib  # about 6 ms (re, typing, datetime): only when the config must be parsed

    try:
        return tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ParseError(
            path, f"not valid TOML ({err}); fix or remove it, capctl will not overwrite it"
        ) from err


def read_table(path: StrPath) -> dict[str, Any] | None:
    """The whole config file as a TOML table; None if it does not exist."""
    data = read_config(path)
    return None if data is None else parse_config(path, data)


def load(path: StrPath) -> Settings:
    """The settings in the config file at ``path`` (defaults if there is none).

    Parsing TOML costs the hook more than the rest of its imports, so the settings parsed
    from a config are kept in a cache file beside it (:func:`cache_path`) together with the
    config's exact bytes; they are used only while the config still has those bytes.
    """
    data = read_config(path)
    if data is None:
        return Settings()
    cached = _cache_read(path, data)
    if cached is not None:
        return cached[0]
    table = parse_config(path, data)
    settings = from_table(path, table)
    try:
        host: HostSettings | None = host_from_table(path, table)
    except ConfigError:  # not the hook's table: refused where it is used (load_with_host)
        host = None
    _cache_write(path, data, settings, host)
    return settings


def load_with_host(path: StrPath, data: bytes | None) -> tuple[Settings, HostSettings]:
    """The settings and ``[host]`` of the config whose bytes ``data`` were read from ``path``
    (None: it does not exist), from the same cache as :func:`load`: the runtime wrapper's
    ``create`` parses no TOML while the config is unchanged (docs/runtimes.md)."""
    if data is None:
        return Settings(), HostSettings()
    if len(data) > MAX_CONFIG:
        raise ParseError(path, f"larger than {MAX_CONFIG} bytes; refusing")
    cached = _cache_read(path, data)
    if cached is not None and cached[1] is not None:
        return cached[0], cached[1]
    table = parse_config(path, data)
    settings, host = from_table(path, table), host_from_table(path, table)
    _cache_write(path, data, settings, host)
    return settings, host


def from_table(path: StrPath, table: dict[str, Any]) -> Settings:
    return Settings(hook_log=_hook_log(path, table), requests=requests_from_table(path, table))


def requests_from_table(path: StrPath, table: dict[str, Any]) -> RequestSettings:
    """``[requests]``, strictly: an unknown key or a wrong type is an error naming it."""
    requests = table.get("requests", {})
    if not isinstance(requests, dict):
        raise ConfigError(f"{path}: [requests] must be a table")
    unknown = set(requests) - {"envvar", "volume_mounts"}
    if unknown:
        raise ConfigError(f"{path}: [requests]: unknown setting(s) {', '.join(sorted(unknown))}")
    envvar = requests.get("envvar", "auto")
    if envvar not in ENVVAR_POLICIES:
        raise ConfigError(
            f"{path}: [requests] envvar must be one of {', '.join(map(repr, ENVVAR_POLICIES))}, "
            f"not {envvar!r}"
        )
    volume_mounts = requests.get("volume_mounts", True)
    if not isinstance(volume_mounts, bool):
        raise ConfigError(f"{path}: [requests] volume_mounts must be true or false")
    return RequestSettings(envvar, volume_mounts)


def _hook_log(path: StrPath, table: dict[str, Any]) -> str | None:
    hook = table.get("hook", {})
    if not isinstance(hook, dict):
        raise ConfigError(f"{path}: [hook] must be a table")
    unknown = set(hook) - {"log_file"}
    if unknown:
        raise ConfigError(f"{path}: [hook]: unknown setting(s) {', '.join(sorted(unknown))}")
    log_file = hook.get("log_file")
    if log_file is None:
        return None
    if not isinstance(log_file, str) or not log_file.startswith("/"):
        raise ConfigError(f"{path}: [hook] log_file must be an absolute path")
    return log_file


# The cache: a header line, a line per setting ("hook_log": its UTF-8 bytes in hex, "-" for
# unset; "requests": the envvar policy and volume_mounts as 0/1; "host": driver_root and
# topology in hex, topology "-" for unset, or a lone "!" for a [host] table that is refused),
# then the config's bytes.  Root-owned and written atomically, like the config; anything
# unexpected (absent, foreign owner, another format, other bytes) means "parse the config".
_CACHE_MAGIC = b"capctl settings cache 4\n"
#: Room for the setting lines when reading the cache: three absolute paths in hex and more.
_CACHE_HEAD = 64 * 1024


def cache_path(path: StrPath) -> str:
    """Where the settings parsed from the config at ``path`` are cached: ``.NAME.cache``."""
    head, name = os.path.split(os.fspath(path))
    return os.path.join(head, f".{name}.cache")


def _hex(value: str | None) -> str:
    return "-" if value is None else value.encode().hex()


def _unhex(value: str) -> str | None:
    """The absolute path written by :func:`_hex`; None if it is not one."""
    try:
        path = bytes.fromhex(value).decode()
    except (UnicodeDecodeError, ValueError):
        return None
    return path if path.startswith("/") else None


def _cache_bytes(data: bytes, settings: Settings, host: HostSettings | None) -> bytes:
    req = settings.requests
    hosts = "!" if host is None else f"{_hex(host.driver_root)} {_hex(host.topology)}"
    return (
        _CACHE_MAGIC
        + f"hook_log {_hex(settings.hook_log)}\nrequests {req.envvar} {int(req.volume_mounts)}\n"
          f"host {hosts}\n".encode()
        + data
    )  # fmt: skip


def _cached_requests(line: bytes) -> RequestSettings | None:
    key, _, value = line.partition(b" ")
    envvar, _, mounts = value.decode("ascii", "replace").partition(" ")
    if key != b"requests" or envvar not in ENVVAR_POLICIES or mounts not in ("0", "1"):
        return None
    return RequestSettings(envvar, mounts == "1")


_BAD = object()  # a cache line that does not parse


def _cached_host(line: bytes) -> HostSettings | object | None:
    """The ``host`` line: its settings, None for "refused", ``_BAD`` if malformed."""
    key, _, value = line.partition(b" ")
    if key != b"host":
        return _BAD
    if value == b"!":
        return None
    root, _, topology = value.decode("ascii", "replace").partition(" ")
    driver_root = None if root == "-" else _unhex(root)
    topo = None if topology == "-" else _unhex(topology)
    if (driver_root is None and root != "-") or (topo is None and topology != "-"):
        return _BAD
    return HostSettings(driver_root, topo)


def _cache_read(path: StrPath, data: bytes) -> tuple[Settings, HostSettings | None] | None:
    try:
        fd = os.open(cache_path(path), os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NOFOLLOW)
    except OSError:
        return None
    if stat.S_ISDIR(os.fstat(fd).st_mode):  # fdopen refuses a directory
        os.close(fd)
        return None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (os.geteuid() == 0 and not is_root_owned_safe(st)):
            return None
        blob = f.read(len(data) + _CACHE_HEAD)
    if not blob.startswith(_CACHE_MAGIC):
        return None
    lines = blob[len(_CACHE_MAGIC) :].split(b"\n", 3)
    if len(lines) != 4 or lines[3] != data:
        return None
    key, _, value = lines[0].partition(b" ")
    requests = _cached_requests(lines[1])
    host = _cached_host(lines[2])
    if key != b"hook_log" or requests is None or host is _BAD:
        return None
    assert host is None or isinstance(host, HostSettings)
    if value == b"-":
        return Settings(requests=requests), host
    log = _unhex(value.decode("ascii", "replace"))
    return None if log is None else (Settings(hook_log=log, requests=requests), host)


def _cache_write(path: StrPath, data: bytes, settings: Settings, host: HostSettings | None) -> None:
    """Best effort: a read-only config directory just means parsing every time."""
    from capctl.devfs.atomic import replace_file

    try:  # not durable: a cache is checked against the config when read
        replace_file(
            cache_path(path), _cache_bytes(data, settings, host), mode=0o644, durable=False
        )
    except OSError:
        pass


# --- [host] and [runtime]: for entry points that cannot take capctl's options -----------------

#: The real OCI runtime the wrapper runs when the config names none.
DEFAULT_RUNTIME = "/usr/sbin/runc"


class HostSettings(Record):
    """``[host]``: what ``--root`` and ``--topology`` give every entry point where no option
    does (:func:`capctl.host.with_host_table`).  None: not set there (then ``/`` and NVML)."""

    driver_root: str | None = None
    topology: str | None = None


class RuntimeSettings(Record):
    """``[runtime]``: the real OCI runtime ``capctl-runtime`` runs."""

    runtime: str = DEFAULT_RUNTIME


def _table(path: StrPath, table: dict[str, Any], name: str, keys: set[str]) -> dict[str, Any]:
    sub = table.get(name, {})
    if not isinstance(sub, dict):
        raise ConfigError(f"{path}: [{name}] must be a table")
    unknown = set(sub) - keys
    if unknown:
        raise ConfigError(f"{path}: [{name}]: unknown setting(s) {', '.join(sorted(unknown))}")
    for key, value in sub.items():
        if not isinstance(value, str) or not value.startswith("/"):
            raise ConfigError(f"{path}: [{name}] {key} must be an absolute path")
    return sub


def host_from_table(path: StrPath, table: dict[str, Any]) -> HostSettings:
    sub = _table(path, table, "host", {"driver_root", "topology"})
    return HostSettings(sub.get("driver_root"), sub.get("topology"))


def with_config_host(host: Host, *, tolerant: bool) -> Host:
    """``host`` with the config's ``[host]`` for what no option or variable gave: the one
    precedence of every entry point (:func:`capctl.host.with_host_table`).  ``tolerant``: a
    config that cannot be read leaves the defaults (``doctor`` reports the config itself)."""
    if "default" not in (host.root_from, host.topology_from):
        return host
    try:
        table = read_table(host.config)
        if table is None:
            return host
        hs = host_from_table(host.config, table)
    except CapctlError:
        if tolerant:
            return host
        raise
    return with_host_table(host, hs.driver_root, hs.topology)


def runtime_from_table(path: StrPath, table: dict[str, Any]) -> RuntimeSettings:
    sub = _table(path, table, "runtime", {"runtime"})
    return RuntimeSettings(sub.get("runtime", DEFAULT_RUNTIME))


def load_runtime(path: StrPath) -> str:
    """``[runtime] runtime`` of the config at ``path`` (the default if there is none)."""
    return runtime_from_table(path, read_table(path) or {}).runtime


# --- [cdi] ------------------------------------------------------------------------------------
class CdiSettings(Record):
    """``[cdi]``: where ``capctl sync`` also writes the CDI spec (None: it does not), and
    whether the management devices ``mig-config`` / ``mig-monitor`` are written too, to their
    own spec beside it (``docs/cdi.md``).  Not in the settings cache: only ``sync``, ``watch``
    and ``cdi generate`` read it, never the hook."""

    output: str | None = None
    management: bool = False


def load_cdi(path: StrPath) -> CdiSettings:
    """The ``[cdi]`` table of the config at ``path`` (defaults if there is none)."""
    table = read_table(path)
    return CdiSettings() if table is None else cdi_from_table(path, table)


def cdi_from_table(path: StrPath, table: dict[str, Any]) -> CdiSettings:
    """``output``: an absolute path ending in ``.json`` (CDI reads only ``*.json`` and
    ``*.yaml`` spec files, container-device-interface pkg/cdi/spec-dirs.go); ``management``:
    a boolean."""
    cdi = table.get("cdi", {})
    if not isinstance(cdi, dict):
        raise ConfigError(f"{path}: [cdi] must be a table")
    unknown = set(cdi) - {"output", "management"}
    if unknown:
        raise ConfigError(f"{path}: [cdi]: unknown setting(s) {', '.join(sorted(unknown))}")
    management = cdi.get("management", False)
    if not isinstance(management, bool):
        raise ConfigError(f"{path}: [cdi] management must be true or false")
    output = cdi.get("output")
    if output is not None and (not isinstance(output, str) or not output.startswith("/")
                               or not output.endswith(".json")):
        raise ConfigError(f"{path}: [cdi] output must be an absolute path ending in .json")
    return CdiSettings(output=output, management=management)

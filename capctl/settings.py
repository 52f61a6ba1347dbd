"""capctl's own settings from the config file (``--config``, TOML), read safely.

The file also holds the grants (:mod:`capctl.grants`); this module reads only the settings
tables.  It is configuration for a root process acting for untrusted containers, so it is
taken only from a root-owned file that nobody else can write (when capctl runs as root), read
with a size bound, and a malformed file is an error naming it, never "defaults".

    [hook]
    log_file = "/var/log/capctl-hook.log"   # besides syslog; absolute path
"""

from __future__ import annotations

import os
import stat

from capctl.errors import ConfigError, ParseError
from capctl.host import is_root_owned_safe
from capctl.record import record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from capctl.host import StrPath

MAX_CONFIG = 1 << 20


@record
class Settings:
    hook_log: str | None = None


def read_table(path: StrPath) -> dict[str, Any] | None:
    """The whole config file as a TOML table; None if it does not exist.

    The one reader of the config file (settings here, grants in :mod:`capctl.grants`).
    Checks are made on the open file, not the path (no TOCTOU): a regular file, root-owned
    and not writable by others when capctl runs as root (a config others can write would let
    them grant themselves any capability), at most ``MAX_CONFIG`` bytes, valid TOML.
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
    import tomllib

    try:
        return tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ParseError(
            path, f"not valid TOML ({err}); fix or remove it, capctl will not overwrite it"
        ) from err


def load(path: StrPath) -> Settings:
    table = read_table(path)
    if table is None:
        return Settings()
    hook = table.get("hook", {})
    if not isinstance(hook, dict):
        raise ConfigError(f"{path}: [hook] must be a table")
    unknown = set(hook) - {"log_file"}
    if unknown:
        raise ConfigError(f"{path}: [hook]: unknown setting(s) {', '.join(sorted(unknown))}")
    log_file = hook.get("log_file")
    if log_file is None:
        return Settings()
    if not isinstance(log_file, str) or not log_file.startswith("/"):
        raise ConfigError(f"{path}: [hook] log_file must be an absolute path")
    return Settings(hook_log=log_file)

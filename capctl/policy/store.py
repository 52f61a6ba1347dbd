"""The config file as the grants' store: read, validate, edit atomically, lock.

The config file (``--config``, TOML) is read with ``tomllib``, refused when it is not root-owned
or is group/world-writable (configuration comes from root only), and edited atomically (temp
file, fsync, rename, fsync directory) under an ``flock`` on ``<config>.lock``, which is also
held while the change is applied so concurrent ``grant``/``revoke``/``sync`` runs serialise
(:mod:`capctl.policy.lock`).
An edit changes only the grants tables of the capabilities whose grantees change
(:mod:`capctl.policy.tomledit`); a file that does not parse is refused and never written.
"""

from __future__ import annotations

import os
from pathlib import Path

from capctl.devfs.atomic import replace_file
from capctl.errors import ConfigError, ParseError
from capctl.policy import settings
from capctl.policy.grants import CapGrants, Document, Policy, parse_document

#: The config is a few KiB at most; refuse to parse anything absurd.
MAX_CONFIG = 1 << 20
#: The first lines of a config file capctl creates.
HEADER = (
    "# capctl settings and delegation policy.\n"
    "# [grants.\"<capability>\"] tables are written by 'capctl grant' and 'capctl revoke';\n"
    "# the numeric uid/gid is what applies, the name is for people (see 'capctl grants').\n"
)


def _changes(before: Policy, after: Policy) -> dict[str, CapGrants]:
    names = sorted(set(before.grants) | set(after.grants))
    return {n: after.get(n) for n in names if before.get(n) != after.get(n)}


def format_document(d: Document, source: str | None = None) -> str:
    """The config's text holding ``d``: ``source`` (the file's text, which must hold
    ``d.other``) with only the grants of the capabilities that change edited, or a new file
    (:data:`HEADER`, the other tables, the grants) when there is none."""
    import tomllib

    import tomlkit  # about 15 ms: only when the config is written, never on the hook's path

    from capctl.policy import tomledit

    if source is None:
        try:
            source = HEADER + ("\n" + tomlkit.dumps(dict(d.other)) if d.other else "")
        except (TypeError, ValueError) as err:
            raise ConfigError(f"cannot write the config: {err}") from err
        before = Document(Policy(), d.other)
    else:
        try:
            before = parse_document(tomllib.loads(source), "config")
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"not valid TOML ({err}); capctl will not overwrite it") from err
        if before.other != d.other:
            raise ConfigError("the config's other tables changed since it was read; try again")
    text = tomledit.edit(source, _changes(before.policy, d.policy))
    try:
        after = parse_document(tomllib.loads(text), "config")
    except (tomllib.TOMLDecodeError, ParseError) as err:
        raise ConfigError(f"editing the config's grants would break it ({err}); "
                          "left it unchanged") from err
    if after != d:
        raise ConfigError("editing the config's grants would change more than them; "
                          "left it unchanged")
    return text


# --- the config file ---------------------------------------------------------------------------


def load_document(path: Path) -> Document:
    """Read and validate the config (:func:`capctl.policy.settings.read_table`); absent: empty."""
    doc = settings.read_table(path)
    if doc is None:
        return Document(Policy())
    return parse_document(doc, str(path))


def load_policy(path: Path) -> Policy:
    return load_document(path).policy


def save_document(path: Path, d: Document) -> None:
    """Edit the config to hold ``d`` (:func:`format_document`) and replace it atomically: temp
    file in its directory, fsync, rename, fsync dir.  The file is read again here, with the
    checks of :func:`capctl.policy.settings.read_config` (callers hold :func:`locked`); one
    that does not parse is refused, never overwritten."""
    data = settings.read_config(path)
    source = None
    if data is not None:
        settings.parse_config(path, data)  # refuses what is not TOML, naming the file
        source = data.decode("utf-8")
    try:
        new = format_document(d, source)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err
    if new == source:
        return
    text = new.encode("utf-8")
    parent = path.parent
    try:
        parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        dir_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as err:
        raise ConfigError(f"{parent}: cannot open config directory: {err.strerror or err}") from err
    try:
        replace_file(path.name, text, mode=0o644, owner=(0, 0) if os.geteuid() == 0 else None,
                     dir_fd=dir_fd)
    except OSError as err:
        raise ConfigError(f"{path}: cannot write: {err.strerror or err}") from err
    finally:
        os.close(dir_fd)

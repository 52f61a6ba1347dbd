"""``capctl uninstall``: remove what ``capctl install`` and ``capctl watch`` wrote, and nothing
else.

What goes, each only when capctl wrote it (the same tests ``install`` uses before replacing
a file, :mod:`capctl.install`):

- the hooks.d definition (a hook that runs capctl's hook entry);
- the containerd and CRI-O drop-ins (starting with :data:`capctl.install.MARK`);
- capctl-runtime's launcher (its second line is :data:`capctl.install.LAUNCHER_MARK`) and
  the start-up pack beside it (:func:`capctl.modpack.is_pack`), which the launchers left in
  place (``capctl``'s, for the udev rules) then do without;
- the CDI spec a watcher keeps (a JSON spec of capctl's CDI kind), and the management spec
  beside it (:func:`capctl.deliver.cdifile.is_management_spec`).

Each name is looked at without following a symlink there, and only a regular file of at most
:data:`MAX_FILE` bytes is read (never a device node or a FIFO: opening one can act or block);
anything else, or a file that cannot be read, is left and reported, and the others are still
removed.  A file is unlinked only if it is still the one that was read (same device, inode
and change time).

A file at one of those names that capctl did not write stays, and is reported: removal
leaves a node as it was before capctl, never less.  Docker's ``daemon.json`` is shared with
every other runtime entry and is not edited here (``capctl install`` on a host is undone by
hand there: docs/kubernetes.md, "Removal").

Pure planning (:func:`plan`) apart from the reads; :func:`remove` does the unlinks.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass

from capctl import install, modpack
from capctl.deliver import cdi, cdifile
from capctl.devfs import safefs
from capctl.errors import CapctlError

#: The largest file looked at: capctl's are a few KB (a management spec for 32 GPUs ~1 MB).
MAX_FILE = 16 << 20


class UninstallError(CapctlError):
    """A file capctl wrote cannot be removed."""


@dataclass(frozen=True, slots=True)
class Removal:
    """One path: removed (``own``) or left because capctl did not write it (``reason``)."""

    path: str
    what: str
    own: bool
    reason: str = ""
    identity: tuple[int, ...] = ()  # of the file that was read: :func:`_identity`


def _identity(st: os.stat_result) -> tuple[int, ...]:
    """Device, inode and change time: a file written since (even on a reused inode) differs."""
    return (st.st_dev, st.st_ino, st.st_ctime_ns)


def _read(path: str) -> tuple[bytes, tuple[int, ...]] | str | None:
    """The bytes and identity of the regular file ``path`` (not followed if a symlink, never
    opened if anything else: :func:`capctl.devfs.safefs.read_regular`); None if there is
    nothing there; else why it is not looked at."""
    try:
        found = safefs.read_regular(path, MAX_FILE)
    except safefs.UnreadableFile as err:
        return str(err)
    except OSError as err:
        return f"cannot read it: {err.strerror or err}"
    if found is None:
        return None
    data, st = found
    return data, _identity(st)


def _text(own: Callable[[str], bool]) -> Callable[[bytes], bool]:
    """``own`` for a file capctl writes as UTF-8 text: anything else is not capctl's."""
    def check(data: bytes) -> bool:
        try:
            return own(data.decode("utf-8"))
        except UnicodeDecodeError:
            return False

    return check


def _own_hook(text: str) -> bool:
    try:
        return install.is_own_hook(json.loads(text))
    except ValueError:
        return False


def _own_launcher(text: str) -> bool:
    return text.split("\n", 2)[1:2] == [install.LAUNCHER_MARK]


def _own_spec(text: str, kind: str) -> bool:
    try:
        doc = json.loads(text)
    except ValueError:
        return False
    return isinstance(doc, dict) and doc.get("kind") == kind


def plan(
    *,
    hooks_dir: str | None = None,
    containerd_dir: str | None = None,
    crio_dir: str | None = None,
    launcher_dir: str | None = None,
    cdi_output: str | None = None,
    cdi_kind: str = cdi.DEFAULT_KIND,
) -> list[Removal]:
    """What removing capctl from the places given means, in the order to do it: the
    definitions that run capctl first, then what they run, then the spec."""
    out: list[Removal] = []

    def consider(directory: str | None, name: str, what: str,
                 own: Callable[[bytes], bool]) -> None:
        if directory is None:
            return
        path = os.path.join(directory, name)
        found = _read(path)
        if found is None:
            return
        if isinstance(found, str):
            out.append(Removal(path, what, False, f"{found}; left in place"))
            return
        data, identity = found
        if own(data):
            out.append(Removal(path, what, True, "", identity))
        else:
            out.append(Removal(path, what, False, "not written by capctl; left in place"))

    marked = _text(lambda t: t.startswith(install.MARK))
    consider(hooks_dir, install.HOOK_FILE, "hooks.d definition", _text(_own_hook))
    consider(containerd_dir, install.SNIPPET, "containerd drop-in", marked)
    consider(crio_dir, install.CRIO_SNIPPET, "CRI-O drop-in", marked)
    consider(launcher_dir, install.LAUNCHER, "capctl-runtime launcher", _text(_own_launcher))
    consider(launcher_dir, install.PACK, "start-up pack", modpack.is_pack)
    if cdi_output is not None:
        consider(os.path.dirname(cdi_output) or ".", os.path.basename(cdi_output), "CDI spec",
                 _text(lambda t: _own_spec(t, cdi_kind)))
        mgmt = cdifile.management_path(cdi_output)
        consider(os.path.dirname(mgmt) or ".", os.path.basename(mgmt), "CDI management spec",
                 cdifile.is_management_spec)
    return out


def remove(removal: Removal) -> None:
    """Unlink one of capctl's files (already gone: nothing to do)."""
    if not removal.own:
        raise UninstallError(f"{removal.path}: {removal.reason}")
    try:
        st = os.lstat(removal.path)
    except FileNotFoundError:
        return
    except OSError as err:
        raise UninstallError(f"{removal.path}: cannot look at it: {err.strerror or err}") from err
    if _identity(st) != removal.identity:
        raise UninstallError(f"{removal.path}: replaced since it was read; left in place")
    try:
        os.unlink(removal.path)
    except FileNotFoundError:
        pass
    except OSError as err:
        raise UninstallError(f"{removal.path}: cannot remove: {err.strerror or err}") from err

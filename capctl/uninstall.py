"""``capctl uninstall``: remove what ``capctl install`` and ``capctl watch`` wrote, and nothing
else.

What goes, each only when capctl wrote it (the same tests ``install`` uses before replacing
a file, :mod:`capctl.install`):

- the hooks.d definition (a hook that runs capctl's hook entry);
- the containerd and CRI-O drop-ins (starting with :data:`capctl.install.MARK`);
- capctl-runtime's launcher (its second line is :data:`capctl.install.LAUNCHER_MARK`);
- the CDI spec a watcher keeps (a JSON spec of capctl's CDI kind).

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

from capctl import install
from capctl.deliver import cdi
from capctl.errors import CapctlError


class UninstallError(CapctlError):
    """A file capctl wrote cannot be removed."""


@dataclass(frozen=True, slots=True)
class Removal:
    """One path: removed (``own``) or left because capctl did not write it (``reason``)."""

    path: str
    what: str
    own: bool
    reason: str = ""


def _read(path: str) -> str | None:
    try:
        return install._read(path)
    except install.InstallError as err:
        raise UninstallError(str(err)) from err


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
    checks: list[tuple[str, str, bool]] = []

    def consider(directory: str | None, name: str, what: str, own: Callable[[str], bool]) -> None:
        if directory is None:
            return
        path = os.path.join(directory, name)
        text = _read(path)
        if text is not None:
            checks.append((path, what, own(text)))

    consider(hooks_dir, install.HOOK_FILE, "hooks.d definition", _own_hook)
    consider(containerd_dir, install.SNIPPET, "containerd drop-in",
             lambda t: t.startswith(install.MARK))
    consider(crio_dir, install.CRIO_SNIPPET, "CRI-O drop-in", lambda t: t.startswith(install.MARK))
    consider(launcher_dir, install.LAUNCHER, "capctl-runtime launcher", _own_launcher)
    if cdi_output is not None:
        consider(os.path.dirname(cdi_output) or ".", os.path.basename(cdi_output), "CDI spec",
                 lambda t: _own_spec(t, cdi_kind))
    return [Removal(p, w, own, "" if own else "not written by capctl; left in place")
            for p, w, own in checks]


def remove(removal: Removal) -> None:
    """Unlink one of capctl's files (already gone: nothing to do)."""
    if not removal.own:
        raise UninstallError(f"{removal.path}: {removal.reason}")
    try:
        os.unlink(removal.path)
    except FileNotFoundError:
        pass
    except OSError as err:
        raise UninstallError(f"{removal.path}: cannot remove: {err.strerror or err}") from err

"""Write capctl's CDI spec files atomically, from the host's current topology.

Two files: the main spec at the output path, and the management spec (``mig-config`` /
``mig-monitor``) beside it, ``NAME-management.json`` for ``NAME.json``
(:func:`management_path`), only when management is on.  When it is off, a management spec
capctl wrote earlier is removed.  A file there that capctl did not write (not a regular file,
not JSON, another kind, other devices) is never removed or replaced: turned off, capctl leaves
it alone; turned on, that is an error naming it, raised before anything is written.

A runtime reads spec files whenever it starts a container, and a CDI cache re-reads the spec
directories on every change it sees (inotify), so a reader must never find a partial file:
it is replaced with :func:`capctl.devfs.atomic.replace_file` (temporary file in the same
directory, ``fsync``, rename, directory synced).  The file is mode 0644 and, when capctl runs
as root, owned by root (``docs/cdi.md``).

The temporary file starts with ``.`` and does not end in ``.json``: CDI's directory scan reads
only ``*.json`` and ``*.yaml`` files (container-device-interface pkg/cdi/spec-dirs.go).
"""

from __future__ import annotations

import json
import os

from capctl._lite.record import Record
from capctl.deliver import cdi
from capctl.devfs import safefs
from capctl.devfs.atomic import replace_file
from capctl.errors import CapctlError, NodeError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from capctl.host import Host

FILE_MODE = 0o644
DIR_MODE = 0o755
#: What :func:`management_path` adds to the output's name, before its extension.
MANAGEMENT_SUFFIX = "-management"
#: The largest management spec capctl reads back to see whether it wrote it (32 GPUs' worth
#: is about 1 MB).
MAX_SPEC = 16 << 20


class Specs(Record):
    """The file contents for the host: the main spec, and the management spec (None: there
    is none to write, because management is off or the driver has no management capability)."""

    main: bytes
    management: bytes | None = None


class Outcome(Record):
    """What happened (or, in a dry run, would happen) to one spec file."""

    path: str
    # "written", "unchanged", "removed", or "absent": no spec of capctl's there, none written
    # (a file capctl did not write may be there, left alone)
    action: str

    @property
    def changed(self) -> bool:
        return self.action in ("written", "removed")


def management_path(output: str) -> str:
    """Where the management spec goes: beside ``output``, ``NAME-management.json`` for
    ``NAME.json`` (``/var/run/cdi/capctl.io-mig-management.json`` by default)."""
    stem, ext = os.path.splitext(output)
    return f"{stem}{MANAGEMENT_SUFFIX}{ext}"


def dumps(spec: dict[str, Any]) -> bytes:
    """The spec file's bytes: compact JSON and a final newline.

    Compact because a runtime parses every spec file on each start that asks for a CDI
    device, at a cost that grows with the file's size (``docs/cdi.md``: podman 4.3 took
    20 ms less per start for the simulated host's spec without indentation).
    """
    return (json.dumps(spec, separators=(",", ":")) + "\n").encode("ascii")


def render(host: Host, kind: str = cdi.DEFAULT_KIND, *, management: bool = False) -> Specs:
    """The specs for the host's current driver state and topology, as file bytes (the
    management spec only when ``management`` is true)."""
    from capctl.driver import procfs
    from capctl.request import topology

    state = procfs.load(host)
    topo = topology.load_topology(host)
    main = dumps(cdi.build_spec(topo, state, host, kind))
    if not management:
        return Specs(main)
    spec = cdi.build_management_spec(topo, state, host, kind)
    return Specs(main, None if spec is None else dumps(spec))


def _unchanged(dir_fd: int, name: str, data: bytes) -> bool:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return False
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if st.st_mode & 0o7777 != FILE_MODE or (os.geteuid() == 0 and st.st_uid != 0):
            return False
        return f.read(len(data) + 1) == data


def _open_parent(path: str, create: bool) -> tuple[int | None, str]:
    """A descriptor of ``path``'s directory (created, mode 0755, when ``create``; None when it
    is missing and not created) and the file's name in it."""
    parent, name = os.path.split(os.path.abspath(path))
    try:
        if create:
            os.makedirs(parent, mode=DIR_MODE, exist_ok=True)
        return os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), name
    except FileNotFoundError as err:
        if not create:
            return None, name
        raise NodeError(parent, f"cannot open the CDI spec directory: {err.strerror}") from err
    except OSError as err:
        raise NodeError(parent, f"cannot open the CDI spec directory: {err.strerror or err}") \
            from err


def write_atomic(path: str, data: bytes, *, dry_run: bool = False) -> bool:
    """Replace the file at ``path`` with ``data`` atomically; False if it already held them.

    Creates the parent directory (mode 0755) when missing.  Errors are :class:`NodeError`
    naming the path; the temporary file is removed on any failure.  A dry run only compares.
    """
    dir_fd, name = _open_parent(path, create=not dry_run)
    if dir_fd is None:
        return True
    try:
        if _unchanged(dir_fd, name, data):
            return False
        if not dry_run:
            replace_file(name, data, mode=FILE_MODE,
                         owner=(0, 0) if os.geteuid() == 0 else None, dir_fd=dir_fd)
        return True
    except OSError as err:
        raise NodeError(path, f"cannot write the CDI spec: {err.strerror or err}") from err
    finally:
        os.close(dir_fd)


def remove(path: str) -> bool:
    """Remove a spec that can no longer be made current; False if there was none."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError as err:
        raise NodeError(path, f"cannot remove the CDI spec: {err.strerror or err}") from err
    return True


def is_management_spec(data: bytes) -> bool:
    """Whether ``data`` is a management spec capctl writes: a JSON spec of a valid CDI kind
    (any: one written before ``--kind`` changed is capctl's too) whose devices are some of
    ``mig-config`` / ``mig-monitor``, and nothing else.  Anything malformed is not."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return False
    if not isinstance(doc, dict) or not isinstance(doc.get("kind"), str):
        return False
    try:
        cdi.check_kind(doc["kind"])
    except CapctlError:
        return False
    devices = doc.get("devices")
    return (isinstance(devices, list) and bool(devices)
            and all(isinstance(d, dict) and isinstance(d.get("name"), str)
                    and d["name"] in cdi.ADMIN_NAMES for d in devices))


def _ours(dir_fd: int, name: str, path: str) -> bool | None:
    """None if there is no file ``name``; else whether it is a management spec capctl wrote.
    A symlink, a device, anything but such a regular file is not ours, and is never opened
    (opening a device node can act on the device: :func:`capctl.devfs.safefs.read_regular`)."""
    try:
        found = safefs.read_regular(name, MAX_SPEC, dir_fd=dir_fd)
    except safefs.UnreadableFile:
        return False
    except OSError as err:
        raise NodeError(path, f"cannot read the CDI spec: {err.strerror or err}") from err
    return None if found is None else is_management_spec(found[0])


def _foreign(path: str) -> NodeError:
    return NodeError(path, "not a management spec capctl wrote; refusing to replace it "
                           "(move it away, or write the specs to another --output)")


def update_management(path: str, data: bytes | None, *, dry_run: bool = False) -> Outcome:
    """Write the management spec ``data`` at ``path``, or (``data`` None) remove the one capctl
    wrote there.  A file there that capctl did not write: left alone when ``data`` is None,
    else a :class:`NodeError`."""
    dir_fd, name = _open_parent(path, create=data is not None and not dry_run)
    if dir_fd is None:
        return Outcome(path, "absent" if data is None else "written")
    try:
        ours = _ours(dir_fd, name, path)
        if data is not None:
            if ours is False:
                raise _foreign(path)
            return Outcome(path, "written" if write_atomic(path, data, dry_run=dry_run)
                           else "unchanged")
        if not ours:
            return Outcome(path, "absent")
        if not dry_run:
            try:
                os.unlink(name, dir_fd=dir_fd)
            except FileNotFoundError:
                return Outcome(path, "absent")
            except OSError as err:
                raise NodeError(path, f"cannot remove the CDI spec: {err.strerror or err}") \
                    from err
        return Outcome(path, "removed")
    finally:
        os.close(dir_fd)


def write(output: str, specs: Specs, *, dry_run: bool = False) -> tuple[Outcome, Outcome]:
    """Put ``specs`` at ``output`` and its :func:`management_path` (removing a management spec
    capctl wrote there when ``specs`` has none); what happened to each.

    The main spec first: it is current whatever happens next, so a foreign file where the
    management spec goes (a :class:`NodeError` naming it) never leaves an out-of-date main
    spec behind, which could map a destroyed instance's UUID to minors a new one owns.
    """
    mpath = management_path(output)
    changed = write_atomic(output, specs.main, dry_run=dry_run)
    main = Outcome(output, "written" if changed else "unchanged")
    return main, update_management(mpath, specs.management, dry_run=dry_run)


def generate(host: Host, output: str, kind: str = cdi.DEFAULT_KIND, *,
             management: bool = False, dry_run: bool = False) -> tuple[Outcome, Outcome]:
    """Write the host's current specs to ``output`` (and the management spec beside it when
    ``management``, else remove capctl's); what happened to each file."""
    return write(output, render(host, kind, management=management), dry_run=dry_run)


def refresh(host: Host, output: str, kind: str = cdi.DEFAULT_KIND, *,
            management: bool = False, dry_run: bool = False) -> tuple[Outcome, Outcome]:
    """:func:`generate`, for callers that keep the specs current (``sync``, ``watch``).

    When the current specs cannot be built (a topology that disagrees with the driver's
    capability files, a driver that is not loaded) the old files are removed (the management
    spec only if capctl wrote it) before the error is raised: a spec that is known to be out
    of date may map a destroyed instance's UUID to capability minors a new instance now owns,
    while a missing spec only makes CDI requests fail until the next refresh succeeds (fail
    closed).  A dry run removes nothing.
    """
    try:
        specs = render(host, kind, management=management)
    except CapctlError:
        if not dry_run:
            remove(output)
            update_management(management_path(output), None)
        raise
    return write(output, specs, dry_run=dry_run)

"""Write capctl's CDI spec file atomically, from the host's current topology.

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

from capctl.deliver import cdi
from capctl.devfs.atomic import replace_file
from capctl.errors import CapctlError, NodeError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from capctl.host import Host

FILE_MODE = 0o644
DIR_MODE = 0o755


def dumps(spec: dict[str, Any]) -> bytes:
    """The spec file's bytes: compact JSON and a final newline.

    Compact because a runtime parses every spec file on each start that asks for a CDI
    device, at a cost that grows with the file's size (``docs/cdi.md``: podman 4.3 took
    20 ms less per start for the simulated host's spec without indentation).
    """
    return (json.dumps(spec, separators=(",", ":")) + "\n").encode("ascii")


def render(host: Host, kind: str = cdi.DEFAULT_KIND, *, management: bool = True) -> bytes:
    """The spec for the host's current driver state and topology, as file bytes (without the
    management devices when ``management`` is false)."""
    from capctl.driver import procfs
    from capctl.request import topology

    state = procfs.load(host)
    topo = topology.load_topology(host)
    return dumps(cdi.build_spec(topo, state, host, kind, management=management))


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


def write_atomic(path: str, data: bytes) -> bool:
    """Replace the file at ``path`` with ``data`` atomically; False if it already held them.

    Creates the parent directory (mode 0755) when missing.  Errors are :class:`NodeError`
    naming the path; the temporary file is removed on any failure.
    """
    parent, name = os.path.split(os.path.abspath(path))
    try:
        os.makedirs(parent, mode=DIR_MODE, exist_ok=True)
        dir_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as err:
        raise NodeError(parent, f"cannot open the CDI spec directory: {err.strerror or err}") \
            from err
    try:
        if _unchanged(dir_fd, name, data):
            return False
        replace_file(name, data, mode=FILE_MODE, owner=(0, 0) if os.geteuid() == 0 else None,
                     dir_fd=dir_fd)
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


def generate(host: Host, output: str, kind: str = cdi.DEFAULT_KIND, *,
             management: bool = True) -> bool:
    """Write the host's current spec to ``output``; False if the file was already current."""
    return write_atomic(output, render(host, kind, management=management))


def refresh(host: Host, output: str, kind: str = cdi.DEFAULT_KIND, *,
            management: bool = True) -> bool:
    """:func:`generate`, for callers that keep a spec current (``sync``, ``watch``).

    When the current spec cannot be built (a topology that disagrees with the driver's
    capability files, a driver that is not loaded) the old file is removed before the error
    is raised: a spec that is known to be out of date may map a destroyed instance's UUID to
    capability minors a new instance now owns, while a missing spec only makes CDI requests
    fail until the next refresh succeeds (fail closed).
    """
    try:
        data = render(host, kind, management=management)
    except CapctlError:
        remove(output)
        raise
    return write_atomic(output, data)

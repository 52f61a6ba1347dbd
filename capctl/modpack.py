"""Build the start-up pack :mod:`capctl._lite.pack` serves: what ``capctl install`` writes.

The pack holds the compiled code of :data:`MODULES`, every capctl module one of the start-up
paths may import: the hook (cgroup v1 and v2, a systemd unit's cgroup, NVML's topology), the
Docker hook, the runtime wrapper's ``create``, and the ``sync`` and ``health`` that skip click.
A module left out only loads from its own file; ``tests/test_hook_imports.py`` holds each
entry point's imports to this list.  Each module is compiled from its source as the import
system would (``compile(..., dont_inherit=True)``) and recorded with that source's size and
modification time, read from the same open file.
"""

from __future__ import annotations

import marshal
import os
import sys

from capctl._lite.pack import HEADER

#: capctl's modules on the start-up paths, less the three every entry imports before the
#: pack is in use (``capctl``, ``capctl._lite`` and ``capctl._lite.pack``).
MODULES: tuple[str, ...] = (
    "capctl._lite.jsondump", "capctl._lite.jsonload", "capctl._lite.litenum",
    "capctl._lite.record", "capctl._lite.strpath",
    "capctl.cgroup", "capctl.cgroup.asm", "capctl.cgroup.bpf", "capctl.cgroup.devfilter",
    "capctl.cgroup.discovery", "capctl.cgroup.emulator", "capctl.cgroup.libc",
    "capctl.cgroup.systemd", "capctl.cgroup.undo", "capctl.cgroup.v1", "capctl.cgroup.v2",
    "capctl.commands", "capctl.commands.fast", "capctl.commands.sync",
    "capctl.deliver", "capctl.deliver.hook", "capctl.deliver.nsmount", "capctl.deliver.runtime",
    "capctl.devfs", "capctl.devfs.atomic", "capctl.devfs.nodes", "capctl.devfs.safefs",
    "capctl.devfs.sync",
    "capctl.devnum", "capctl.docker_hook",
    "capctl.driver", "capctl.driver.capfile", "capctl.driver.capnames",
    "capctl.driver.minorsfile", "capctl.driver.procdevices", "capctl.driver.procfs",
    "capctl.edits", "capctl.edits.edits", "capctl.edits.rules",
    "capctl.errors", "capctl.guard", "capctl.host", "capctl.main",
    "capctl.policy", "capctl.policy.acl", "capctl.policy.grants", "capctl.policy.lock",
    "capctl.policy.settings",
    "capctl.request", "capctl.request.container", "capctl.request.devices",
    "capctl.request.nvml", "capctl.request.oci", "capctl.request.resolve",
    "capctl.request.topology", "capctl.request.trust",
    "capctl.runtime_main", "capctl.trustedpath",
    "capctl.watch", "capctl.watch.heartbeat",
)


def capctl_root() -> str:
    """The directory holding the ``capctl`` package this process runs."""
    import capctl

    return os.path.dirname(os.path.dirname(os.path.abspath(capctl.__file__)))


def source_of(root: str, name: str) -> tuple[str, bool]:
    """``(source path, is a package)`` of the module ``name`` under ``root``."""
    base = os.path.join(root, *name.split("."))
    package = os.path.join(base, "__init__.py")
    if os.path.isfile(package):
        return package, True
    return f"{base}.py", False


def build(root: str | None = None, modules: tuple[str, ...] = MODULES) -> bytes:
    """The pack of ``modules`` under ``root`` (this process's capctl tree), for this
    interpreter; raises OSError or SyntaxError where a source cannot be read or compiled."""
    root = root or capctl_root()
    index: dict[str, tuple[str, bool, int, int, int, int]] = {}
    codes: list[bytes] = []
    offset = 0  # from the end of the head
    for name in modules:
        path, is_package = source_of(root, name)
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            source = f.read()
        code = marshal.dumps(compile(source, path, "exec", dont_inherit=True))
        index[name] = (path, is_package, st.st_mtime_ns, st.st_size, offset, len(code))
        codes.append(code)
        offset += len(code)
    head = marshal.dumps((sys.version, root, index))
    return HEADER + len(head).to_bytes(8, "little") + head + b"".join(codes)



def is_pack(data: bytes) -> bool:
    """Whether ``data`` is a pack (what ``install`` may replace and ``uninstall`` removes)."""
    return data.startswith(HEADER)

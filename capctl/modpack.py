"""Build the start-up pack :mod:`capctl._lite.pack` serves: what ``capctl install`` writes.

The pack holds the compiled code of :data:`MODULES`, every capctl module one of the start-up
paths may import: the hook (cgroup v1 and v2, a systemd unit's cgroup, NVML's topology), the
Docker hook, the runtime wrapper's ``create``, and the ``sync`` and ``health`` that skip click.
A module left out only loads from its own file; ``tests/test_hook_imports.py`` holds each
entry point's imports to this list.  Each module is compiled from its source as the import
system would (``compile(..., dont_inherit=True)``), less its docstrings
(:func:`without_docstrings`), and recorded with that source's size and modification time,
read from the same open file.
"""

from __future__ import annotations

import ast
import marshal
import os
import stat
import sys

from capctl._lite import pack
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


def without_docstrings(source: bytes, path: str) -> ast.Module:
    """The module's syntax tree less its docstrings (module, classes, functions), as
    ``python -OO`` drops them but with every ``assert`` kept: about a sixth of the bytes each
    start unmarshals, and nothing on the start-up paths reads a ``__doc__``.  Every other
    node keeps its line and column, so tracebacks point where the source does."""
    tree = ast.parse(source, path)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)):
                doc = body.pop(0)
                if not body:  # a body of nothing but its docstring
                    body.append(ast.copy_location(ast.Pass(), doc))
    return tree


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
        code = marshal.dumps(compile(without_docstrings(source, path), path, "exec",
                                     dont_inherit=True))
        index[name] = (path, is_package, st.st_mtime_ns, st.st_size, offset, len(code))
        codes.append(code)
        offset += len(code)
    head = marshal.dumps((sys.version, root, index))
    return HEADER + len(head).to_bytes(8, "little") + head + b"".join(codes)



def is_pack(data: bytes) -> bool:
    """Whether ``data`` is a pack (what ``install`` may replace and ``uninstall`` removes)."""
    return data.startswith(HEADER)


def problem(path: str) -> str | None:
    """Why the pack at ``path`` would not serve every module it holds to this interpreter
    (:func:`capctl._lite.pack.use`'s tests, each with its reason); None if it would."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return "absent"
    except OSError as err:
        return f"cannot look at it: {err.strerror or err}"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_uid not in (0, os.geteuid()):
        return f"owned by uid {st.st_uid}, not root"
    if st.st_mode & 0o022:
        return "writable by group or others"
    fd = pack.open_pack(path)
    if fd is None:
        return "cannot be opened"
    try:
        head = pack.read_head(fd)
    finally:
        os.close(fd)
    index = None if head is None else head[2]
    if head is None or not isinstance(index, dict):
        return "not a start-up pack, or damaged"
    version, root = head[:2]
    if version != sys.version:
        return f"built by another Python ({str(version).split()[0]}), not {sys.version.split()[0]}"
    import capctl

    if root != os.path.dirname(os.path.dirname(capctl.__file__)):
        return f"built for the capctl in {root}"
    changed = [name for name, entry in sorted(index.items()) if not _fresh(entry)]
    if changed:
        return (f"{len(changed)} of its {len(index)} modules changed since it was built "
                f"({', '.join(changed[:3])}{', ...' if len(changed) > 3 else ''})")
    return None


def _fresh(entry: object) -> bool:
    """Whether a pack index entry still matches its source file."""
    if not isinstance(entry, tuple) or len(entry) != 6:
        return False
    try:
        st = os.stat(entry[0])
    except (OSError, TypeError, ValueError):
        return False
    return bool(st.st_mtime_ns == entry[2] and st.st_size == entry[3])

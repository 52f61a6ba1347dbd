"""The start-up pack: capctl's modules for its start-up paths, in one file.

Every container start runs a fresh interpreter, and importing the 37 to 41 modules of the
hook's path one file at a time costs a good part of it (``docs/hook-startup.md``): for each
module the import system looks the name up in the package's directory, stats, opens, reads
and checks its ``.pyc`` in Python code run cold.  ``capctl install`` compiles those modules,
:data:`MODULES`, into one file beside its launchers (:func:`build`), and the definitions it
writes call :func:`use` first: each module is then one ``stat`` of its source, one ``pread``
of its code and a ``marshal.loads`` (:class:`PackFinder`).  This module is the one capctl
module every entry point imports from its file before that; it imports nothing but
``marshal``, ``os``, ``stat`` and ``sys`` (``ast`` only to build).

A pack is a cache, never the truth: each module is served only while its source file still
has the size and modification time it had when the pack was built (a ``pip install
--upgrade`` changes both), only to the interpreter build that compiled it, and only for the
capctl tree the interpreter already imports.  Anything that does not fit, and a pack that is
absent, unreadable, not a regular file (a symlink is not followed), owned by anyone but root
or the running user, writable by group or others, or malformed, leaves the import system as
it is: the module loads from its own file, as without a pack.  :func:`problem` says which,
for ``capctl doctor``.

:data:`MODULES` is every capctl module one of the start-up paths may import: the hook
(cgroup v1 and v2, a systemd unit's cgroup, NVML's topology), the Docker hook, the runtime
wrapper's ``create``, and the ``sync`` and ``health`` that skip click.  A module left out
only loads from its own file; ``tests/test_hook_imports.py`` holds each entry point's imports
to this list.  Each module is compiled from its source as the import system would
(``compile(..., dont_inherit=True)``), less its docstrings (:func:`without_docstrings`), and
recorded with that source's size and modification time, read from the same open file.
"""

from __future__ import annotations

import errno
import marshal
import os
import stat
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ast import Module
    from collections.abc import Callable, Sequence
    from importlib.machinery import ModuleSpec as Spec
    from types import CodeType, ModuleType

    Index = dict[str, tuple[str, bool, int, int, int, int]]

#: A pack's first bytes: what ``install`` and ``uninstall`` know their own file by.
HEADER = b"capctl module pack 1\n"
#: The largest index read (about 8 KB for capctl's 60 start-up modules).
MAX_INDEX = 1 << 20
#: ``importlib.machinery.ModuleSpec``: the class of this module's own spec, because importing
#: ``importlib`` imports ``warnings`` too (about 0.4 ms of every start).
ModuleSpec: Callable[..., Spec]
if __spec__ is None:  # run as a script: no spec to take the class from
    from importlib.machinery import ModuleSpec
else:
    ModuleSpec = type(__spec__)


def _nothing() -> None:
    """A function for its code's type (:data:`CODE`)."""


#: ``types.CodeType``, without importing ``types`` (``compile`` would cost 1 ms: the first
#: use of the compiler in a process sets it up).
CODE = type(_nothing.__code__)


class PackFinder:
    """A ``sys.meta_path`` finder and loader serving the modules of one pack.

    ``index`` maps a module's name to ``(source path, is a package, st_mtime_ns, st_size,
    offset, length)``: its code is the marshalled code object ``offset`` bytes after ``base``
    in the open pack ``fd``, read when the module is imported.  A module whose entry does not
    match its source now, or whose code cannot be read back, is left to the next finder.
    """

    def __init__(self, fd: int, base: int, index: Index) -> None:
        self.fd = fd
        self.base = base
        self.index = index

    def find_spec(self, name: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> Spec | None:
        entry = self.index.get(name)
        if entry is None:
            return None
        if not _fresh(entry):
            return None
        origin, is_package, _mtime_ns, _size, offset, length = entry
        try:
            code = marshal.loads(os.pread(self.fd, length, self.base + offset))
        except (OSError, ValueError, TypeError, EOFError):
            return None
        if type(code) is not CODE:
            return None
        spec = ModuleSpec(name, self, origin=origin, loader_state=code, is_package=is_package)
        if is_package:
            spec.submodule_search_locations = [os.path.dirname(origin)]
        return spec

    def create_module(self, spec: Spec) -> None:
        return None  # the import system's default module

    def exec_module(self, module: ModuleType) -> None:
        spec = module.__spec__
        assert spec is not None
        code: CodeType = spec.loader_state
        spec.loader_state = None
        module.__file__ = spec.origin
        exec(code, module.__dict__)


def opened(path: str) -> PackFinder | str:
    """A finder serving the pack at ``path`` (holding it open), or why there is none: the
    pack must be a regular file (the last component is not followed if it is a symlink, and
    a FIFO is not waited on) that only its owner, root or this process's user, may write,
    with a head built by this interpreter for the capctl tree it imports.  The reasons are
    :func:`problem`'s; :func:`use` drops them."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return "absent"
    except OSError as err:
        return ("not a regular file" if err.errno == errno.ELOOP
                else f"cannot open it: {err.strerror or err}")
    found = _judged(fd)
    if isinstance(found, str):
        os.close(fd)
    return found


def _judged(fd: int) -> PackFinder | str:
    """:func:`opened`'s tests of the open file ``fd``."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_uid not in (0, os.geteuid()):
        return f"owned by uid {st.st_uid}, not root"
    if st.st_mode & 0o022:
        return "writable by group or others"
    try:
        start = os.pread(fd, len(HEADER) + 8, 0)
    except OSError as err:
        return f"cannot read it: {err.strerror or err}"
    head = None
    if len(start) == len(HEADER) + 8 and start.startswith(HEADER):
        length = int.from_bytes(start[len(HEADER):], "little")
        try:
            head = marshal.loads(os.pread(fd, length, len(start))) if length <= MAX_INDEX else None
        except (OSError, ValueError, TypeError, EOFError):
            pass
    if not isinstance(head, tuple) or len(head) != 3 or not isinstance(head[2], dict):
        return "not a start-up pack, or damaged"
    version, root, index = head
    if version != sys.version:
        return f"built by another Python ({str(version).split()[0]}), not {sys.version.split()[0]}"
    import capctl

    if root != os.path.dirname(os.path.dirname(capctl.__file__)):
        return f"built for the capctl in {root}"
    return PackFinder(fd, len(start) + length, index)


def use(path: str) -> bool:
    """Serve capctl's modules from the pack at ``path`` from now on (a finder first on
    ``sys.meta_path``, holding the pack open); False, and nothing changed, where there is no
    usable pack (:func:`opened`)."""
    finder = opened(path)
    if isinstance(finder, str):
        return False
    sys.meta_path.insert(0, finder)
    return True


#: capctl's modules on the start-up paths, less the two every entry imports before the pack
#: is in use (``capctl`` and this module).
MODULES: tuple[str, ...] = (
    "capctl._lite", "capctl._lite.jsondump", "capctl._lite.jsonload", "capctl._lite.litenum",
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


def without_docstrings(source: bytes, path: str) -> Module:
    """The module's syntax tree less its docstrings (module, classes, functions), as
    ``python -OO`` drops them but with every ``assert`` kept: about a sixth of the bytes each
    start unmarshals, and nothing on the start-up paths reads a ``__doc__``.  Every other
    node keeps its line and column, so tracebacks point where the source does."""
    import ast

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
    (:func:`opened`'s reasons, or the modules whose source changed since); None if it would."""
    finder = opened(path)
    if isinstance(finder, str):
        return finder
    os.close(finder.fd)
    changed = [name for name, entry in sorted(finder.index.items()) if not _fresh(entry)]
    if changed:
        return (f"{len(changed)} of its {len(finder.index)} modules changed since it was built "
                f"({', '.join(changed[:3])}{', ...' if len(changed) > 3 else ''})")
    return None


def _fresh(entry: object) -> bool:
    """Whether a pack index entry is well formed and still matches its source file (size and
    ``st_mtime_ns``)."""
    if not isinstance(entry, tuple) or len(entry) != 6:
        return False
    try:
        st = os.stat(entry[0])
    except (OSError, TypeError, ValueError):
        return False
    return bool(st.st_mtime_ns == entry[2] and st.st_size == entry[3])

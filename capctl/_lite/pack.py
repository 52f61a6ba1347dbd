"""The start-up pack: capctl's modules for its start-up paths, read from one file.

Every container start runs a fresh interpreter, and importing the 37 to 41 modules of the
hook's path one file at a time costs a good part of it (``docs/hook-startup.md``): for each
module the import system looks the name up in the package's directory, stats, opens, reads
and checks its ``.pyc`` in Python code run cold.  ``capctl install`` compiles those modules
into one file beside its launchers (:mod:`capctl.modpack`); the definitions it writes call
:func:`use` first, and each module is then one ``stat`` of its source, one ``pread`` of its
code and a ``marshal.loads`` (:class:`PackFinder`).

A pack is a cache, never the truth: each module is served only while its source file still
has the size and modification time it had when the pack was built (a ``pip install
--upgrade`` changes both), only to the interpreter build that compiled it, and only for the
capctl tree the interpreter already imports.  Anything that does not fit, and a pack that is
absent, unreadable, not a regular file (a symlink is not followed), owned by anyone but root
or the running user, writable by group or others, or malformed, leaves the import system as
it is: the module loads from its own file, as without a pack.
"""

from __future__ import annotations

import marshal
import os
import stat
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
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
ModuleSpec: Callable[..., Spec] = type(__spec__)


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
        try:
            origin, is_package, mtime_ns, size, offset, length = entry
            st = os.stat(origin)
            if st.st_mtime_ns != mtime_ns or st.st_size != size:
                return None
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


def open_pack(path: str) -> int | None:
    """An open descriptor of the pack at ``path``, if it is a regular file that only its
    owner, root or this process's user, may write; else None.  The last component is not
    followed if it is a symlink."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_uid in (0, os.geteuid()) and not st.st_mode & 0o022:
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def read_head(fd: int) -> tuple[object, ...] | None:
    """The pack's head, ``(interpreter version, capctl root, index, where the code
    starts)``, unchecked; None if the file does not start with :data:`HEADER`, a head's
    length and a head of that length."""
    try:
        start = os.pread(fd, len(HEADER) + 8, 0)
        if len(start) != len(HEADER) + 8 or not start.startswith(HEADER):
            return None
        length = int.from_bytes(start[len(HEADER):], "little")
        if length > MAX_INDEX:
            return None
        head = marshal.loads(os.pread(fd, length, len(start)))
    except (OSError, ValueError, TypeError, EOFError):
        return None
    if not isinstance(head, tuple) or len(head) != 3:
        return None
    return (*head, len(start) + length)


def use(path: str) -> bool:
    """Serve capctl's modules from the pack at ``path`` from now on (a finder first on
    ``sys.meta_path``, holding the pack open); False, and nothing changed, where there is no
    usable pack."""
    fd = open_pack(path)
    if fd is None:
        return False
    head = read_head(fd)
    import capctl

    if head is not None:
        version, root, index, base = head
        if (version == sys.version and root == os.path.dirname(os.path.dirname(capctl.__file__))
                and isinstance(index, dict) and isinstance(base, int)):
            sys.meta_path.insert(0, PackFinder(fd, base, index))
            return True
    os.close(fd)
    return False

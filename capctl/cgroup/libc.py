"""C library functions through ctypes' C core (``_ctypes``), without the ``ctypes`` package.

The ``ctypes`` package costs the hook about 1 ms at every container start on cgroup v2
(docs/hook-startup.md), building classes capctl never uses.  ``bpf(2)`` and ``statfs(2)``
need only a foreign function, byte buffers at fixed addresses and ``errno``: the three
ctypes types below are defined exactly as ``ctypes/__init__.py`` defines them, and a
function is ``CDLL(None, use_errno=True)``'s (the program and the libraries it loaded).
Structures are ``_struct`` formats packed into these buffers.
"""

from __future__ import annotations

import _ctypes
from _struct import calcsize, pack_into

__all__ = [
    "Char", "Int", "Long", "VoidP", "addressof", "buffer", "function", "get_errno", "packed",
]  # fmt: skip

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ctypes import Array
    from ctypes import c_char as Char
    from ctypes import c_int as Int
    from ctypes import c_long as Long
    from ctypes import c_void_p as VoidP
else:

    class Char(_ctypes._SimpleCData):
        _type_ = "c"

    class Int(_ctypes._SimpleCData):
        _type_ = "i"

    class Long(_ctypes._SimpleCData):
        _type_ = "l"

    class VoidP(_ctypes._SimpleCData):
        _type_ = "P"


addressof = _ctypes.addressof
get_errno = _ctypes.get_errno


class _LongFunction(_ctypes.CFuncPtr):
    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
    _restype_ = Long


class _IntFunction(_ctypes.CFuncPtr):
    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
    _restype_ = Int


def function(name: str, *, returns_long: bool = False) -> _ctypes.CFuncPtr:
    """The C library's *name*, returning ``int`` (or ``long``), errno kept for
    :func:`get_errno`; arguments as ctypes passes them (ints as ``int``, bytes and
    buffers as pointers)."""
    # dlopen(NULL): the program and the libraries it loaded (ctypes' CDLL(None)).
    handle = _ctypes.dlopen(None, _ctypes.RTLD_LOCAL)  # type: ignore[arg-type]
    kind = _LongFunction if returns_long else _IntFunction
    return kind(_ctypes.dlsym(handle, name))


def buffer(size: int) -> Array[Char]:
    """*size* zeroed bytes at a fixed address (``ctypes.create_string_buffer(size)``)."""
    return (Char * size)()


def packed(fmt: str, *values: int | bytes) -> Array[Char]:
    """A buffer holding ``_struct.pack(fmt, *values)``."""
    buf = buffer(calcsize(fmt))
    pack_into(fmt, buf, 0, *values)
    return buf

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


#: The smallest buffer made: every attribute block and ``struct statfs`` fit.
MIN_BUFFER = 256


def buffer(size: int) -> Array[Char]:
    """At least *size* zeroed bytes at a fixed address (as ``ctypes.create_string_buffer``).

    Its length is *size* rounded up to a power of two, at least :data:`MIN_BUFFER`: each
    length is an array type of its own, which ctypes makes on first use (about 60 µs in a
    fresh process, 1 ms over a v2 grant's dozen sizes), so a start makes two or three.
    Callers pass the kernel the size they mean, never the buffer's length.
    """
    length = MIN_BUFFER
    while length < size:
        length <<= 1
    return (Char * length)()


def packed(fmt: str, *values: int | bytes) -> Array[Char]:
    """A buffer holding ``_struct.pack(fmt, *values)`` (then zeros, :func:`buffer`)."""
    buf = buffer(calcsize(fmt))
    pack_into(fmt, buf, 0, *values)
    return buf

"""Strict JSON decoding for the hook's path, without importing the :mod:`json` package.

``import json`` costs about 1 ms on top of :mod:`re` (``json.decoder`` imports it and
compiles patterns at import), paid on every container start (docs/hook-startup.md).  The work is done by
CPython's C scanner, ``_json.make_scanner``, which ``json`` itself uses; this module only
does what ``json.JSONDecoder.decode`` adds around it: skip JSON whitespace, require the
whole input to be consumed, and report errors with their position.

Stricter than :func:`json.loads` on purpose, since what is decoded here decides device
access and other parsers (runc's Go ``encoding/json``, crun's yajl) read the same files:

- a key repeated in one object is an error (Go keeps the last value, yajl-based readers
  the first: a document that means two things to two readers is refused);
- ``NaN``, ``Infinity`` and ``-Infinity`` are errors (not JSON, RFC 8259 section 6), and so
  is a number too large for a double (``1e999``), which ``json.loads`` reads as infinity and
  no JSON writer can write back (RFC 8259 section 6: such numbers do not interoperate);
- :class:`bytes` must be UTF-8 without a byte order mark (``json.loads`` also guesses
  UTF-16/32 and lets encoded surrogates through; Go's decoder does neither);
- nesting deep enough to exhaust the interpreter's recursion limit is a :class:`JSONError`
  rather than a :class:`RecursionError`.

Everything else (numbers, escapes, control characters refused in strings) is exactly
``json.loads``: the same C code decodes it.  Where ``_json`` does not exist (another Python
implementation), :func:`loads` uses ``json.loads`` with the same rules.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    Scanner = Callable[[str, int], tuple[object, int]]

#: JSON's whitespace (RFC 8259 section 2); str.strip() with no argument would take more.
WHITESPACE = " \t\n\r"
_BOM = "\ufeff"


class JSONError(ValueError):
    """Not one strict JSON document.  ``pos`` is the character offset where known.

    ``str()`` reads like :class:`json.JSONDecodeError`'s: ``msg: line L column C (char P)``.
    """

    def __init__(self, msg: str, doc: str = "", pos: int | None = None):
        self.msg = msg
        self.pos = pos
        if pos is None:
            self.lineno = self.colno = None
            super().__init__(msg)
            return
        self.lineno = doc.count("\n", 0, pos) + 1
        self.colno = pos - doc.rfind("\n", 0, pos)
        super().__init__(f"{msg}: line {self.lineno} column {self.colno} (char {pos})")


def _object(pairs: list[tuple[str, object]]) -> dict[str, object]:
    # Called by the scanner for every object, with its members in document order.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise JSONError(f"duplicate key {key!r}")
            seen.add(key)
    return obj


def _constant(name: str) -> object:
    raise JSONError(f"{name} is not JSON")


def _float(text: str) -> float:
    # Only for numbers with a fraction or exponent: integers keep the C fast path.
    value = float(text)
    if value - value != 0.0:  # inf - inf is nan; nan != 0.0 (no math import on this path)
        shown = text if len(text) <= 24 else text[:24] + "..."
        raise JSONError(f"number {shown} is out of range (not a finite double)")
    return value


class _Context:
    """What ``_json.make_scanner`` reads from its context (CPython 3.11
    ``Modules/_json.c``, ``scanner_new``): these six attributes, once.  Instance attributes,
    so the hooks are not bound as methods."""

    def __init__(self) -> None:
        self.strict = True  # control characters in strings are errors
        self.object_hook = None
        self.object_pairs_hook = _object
        self.parse_float = _float  # refuses overflow; floats are rare in what capctl reads
        self.parse_int = int  # the exact type lets the scanner take its C fast path
        self.parse_constant = _constant


def _c_scanner() -> Scanner | None:
    try:
        from _json import make_scanner
    except ImportError:
        return None
    # typeshed types the context as a scanner; any object with the attributes will do.
    return make_scanner(_Context())  # type: ignore[arg-type]


_scan = _c_scanner()


def loads(data: str | bytes) -> object:
    """Decode one strict JSON document (module docstring); :class:`JSONError` if it is not."""
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise JSONError(f"not UTF-8 (byte {err.start})") from None
    else:
        text = data
    if text.startswith(_BOM):
        raise JSONError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
    try:
        if _scan is None:
            return _loads_json(text)
        return _loads_c(_scan, text)
    except RecursionError:
        raise JSONError("nested too deeply") from None


def _loads_c(scan: Scanner, text: str) -> object:
    start = len(text) - len(text.lstrip(WHITESPACE))
    try:
        try:
            value, end = scan(text, start)
        except SystemError:
            # CPython 3.11 builds its syntax errors from json.decoder.JSONDecodeError, which
            # it looks up in sys.modules without importing (Modules/_json.c, raise_errmsg):
            # when json is not loaded, the error surfaces as "returned NULL without setting an
            # exception".  Only on this failure path: load it and scan again for the message.
            import json.decoder  # noqa: F401

            value, end = scan(text, start)
    except StopIteration as err:  # nothing that starts a value at err.value
        raise JSONError("Expecting value", text, err.value) from None
    except JSONError:
        raise
    except ValueError as err:
        raise _from_json(err, text) from None
    rest = len(text) - len(text[end:].lstrip(WHITESPACE))
    if rest != len(text):
        raise JSONError("Extra data", text, rest)
    return value


def _from_json(err: ValueError, text: str) -> JSONError:
    decoder = sys.modules.get("json.decoder")
    if decoder is not None and isinstance(err, decoder.JSONDecodeError):
        return JSONError(err.msg, text, err.pos)
    return JSONError(str(err))  # e.g. an integer beyond sys.get_int_max_str_digits()


def _loads_json(text: str) -> object:
    # No _json: the json package's pure-Python decoder, with the same hooks.  Its own
    # handling of whitespace and trailing data is what _loads_c copies.
    import json

    try:
        return json.loads(text, object_pairs_hook=_object, parse_constant=_constant,
                          parse_float=_float)
    except JSONError:
        raise
    except ValueError as err:
        raise _from_json(err, text) from None

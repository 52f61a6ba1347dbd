"""Pure: write a TOML document (the subset ``tomllib`` gives back for capctl's config).

Reading uses the standard library's ``tomllib``; Python ships no writer.  capctl's config is
small and its schema fixed, so this module writes the value types that config can hold -- str,
bool, int, float, arrays and tables -- and refuses anything else (dates) with ``TypeError``
rather than silently dropping it.  Other tools' tables in the same file survive a rewrite;
comments do not (``tomllib`` does not keep them).  Round-trip (``tomllib.loads(dumps(d)) == d``)
is tested.  Strings follow TOML 1.0 "Basic strings": quote, backslash and control characters
other than tab (U+0000-U+001F, U+007F) must be escaped.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {
    '"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r",
}


def string(s: str) -> str:
    """A TOML basic string."""
    out = []
    for ch in s:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def key(k: str) -> str:
    return k if _BARE_KEY.fullmatch(k) else string(k)


def value(v: Any) -> str:
    """An inline TOML value."""
    if isinstance(v, bool):  # before int: bool is an int subclass
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return string(v)
    if isinstance(v, list):
        return "[" + ", ".join(value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        if not v:
            return "{}"
        return "{ " + ", ".join(f"{key(k)} = {value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write a {type(v).__name__} as TOML")


def _table(path: list[str], table: Mapping[str, Any], out: list[str]) -> None:
    scalars = [(k, v) for k, v in table.items() if not isinstance(v, Mapping)]
    subtables = [(k, v) for k, v in table.items() if isinstance(v, Mapping)]
    if path and (scalars or not subtables):
        if out:
            out.append("")
        out.append("[" + ".".join(key(p) for p in path) + "]")
    for k, v in scalars:
        out.append(f"{key(k)} = {value(v)}")
    for k, v in subtables:
        _table([*path, k], v, out)


def dumps(doc: Mapping[str, Any], header: str = "") -> str:
    """The document as TOML text, with ``header`` (comment lines) first."""
    out: list[str] = []
    _table([], doc, out)
    body = "\n".join(out) + "\n" if out else ""
    return header + body

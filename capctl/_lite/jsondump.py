"""JSON encoding for the runtime wrapper's path, without importing the :mod:`json` package.

``import json`` imports :mod:`re` (about 5 ms at start, docs/hook-startup.md), and so does
``json.encoder`` on its own.  :func:`dumps` runs CPython's C encoder, ``_json.make_encoder``,
with the arguments :func:`json.dumps` gives it by default (``ensure_ascii``, separators
``", "`` and ``": "``, no indent, keys in their order, circular references checked), so its
output is ``json.dumps(obj)``'s, byte for byte.  Differences, on purpose:

- ``NaN`` and the infinities are errors (:class:`ValueError`): they are not JSON (RFC 8259
  section 6), and :mod:`capctl._lite.jsonload` never produces them;
- a value of any other type than ``dict``, ``list``, ``tuple``, ``str``, ``int``, ``float``,
  ``bool`` and ``None`` is a :class:`TypeError` (``json.dumps``'s default does the same).

Where ``_json`` does not exist (another Python implementation), ``json.dumps`` does the work
with the same options.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    Encoder = Callable[[object, int], list[str]]


def _default(obj: object) -> object:
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _c_encoder() -> Encoder | None:
    """A new C encoder (its circular-reference markers are per call); None without ``_json``."""
    try:
        from _json import encode_basestring_ascii, make_encoder
    except ImportError:
        return None
    # The arguments of json.encoder.JSONEncoder.iterencode's C path (CPython 3.11
    # Lib/json/encoder.py): markers, default, string encoder, indent, key separator, item
    # separator, sort_keys, skipkeys, allow_nan.
    encoder: Encoder = make_encoder(
        {}, _default, encode_basestring_ascii, None, ": ", ", ", False, False, False
    )
    return encoder


def dumps(obj: object) -> str:
    """``json.dumps(obj)`` (module docstring), without importing :mod:`json`."""
    encoder = _c_encoder()
    if encoder is None:
        import json

        return json.dumps(obj, allow_nan=False, default=_default)
    return "".join(encoder(obj, 0))

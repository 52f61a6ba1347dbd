"""``@record``: small immutable value classes, cheap to define.

The OCI hook runs on every container start, and ``dataclasses`` costs it about 8 ms before
any work is done: importing it pulls in ``inspect`` (``ast``, ``dis``, ``tokenize``), and each
decorated class compiles generated methods.  A record is what capctl used dataclasses for, a
frozen, slotted bag of typed fields with equality, hashing and a repr, built in microseconds
from methods shared by every record.  Type checkers see it as a frozen dataclass
(``dataclass_transform``, PEP 681).

    @record
    class Majors:
        caps: int | None
        frontend: int | None = None

A class that defines its own ``__init__`` keeps it (the hot records of ``sync`` do, for
speed) and must set every field with :data:`set_field` or :func:`init_fields`.
Mutable state holders stay ordinary classes.
"""

from __future__ import annotations

try:  # the C module: ``operator`` is a Python module on top of it, imported for nothing
    from _operator import attrgetter
except ImportError:  # not CPython
    from operator import attrgetter

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar, dataclass_transform

    _T = TypeVar("_T")

_MISSING = object()
#: How a record's own fast ``__init__`` sets a (frozen) field: ``set_field(self, "x", x)``.
set_field = _set = object.__setattr__


def _fields(cls: type) -> tuple[str, ...]:
    fields: tuple[str, ...] = cls.__dict__["__record_fields__"]
    return fields


def _init(self: Any, *args: Any, **kwargs: Any) -> None:
    cls = type(self)
    names = _fields(cls)
    if len(args) > len(names):
        raise TypeError(f"{cls.__name__}() takes {len(names)} arguments, {len(args)} given")
    for name, value in zip(names, args, strict=False):
        _set(self, name, value)
    if len(args) < len(names):
        defaults = cls.__record_defaults__
        for name in names[len(args) :]:
            value = kwargs.pop(name, _MISSING)
            if value is _MISSING:
                value = defaults.get(name, _MISSING)
                if value is _MISSING:
                    raise TypeError(f"{cls.__name__}() missing argument {name!r}")
            _set(self, name, value)
    if kwargs:
        raise TypeError(f"{cls.__name__}() got unexpected argument(s) {', '.join(kwargs)}")


def _values(self: Any) -> tuple[Any, ...]:
    values: tuple[Any, ...] = type(self).__record_values__(self)
    return values


def _eq(self: object, other: object) -> bool:
    # Records of different classes are unequal (not NotImplemented: no fallback is wanted).
    return type(other) is type(self) and _values(self) == _values(other)


def _hash(self: Any) -> int:
    return hash(_values(self))


def _repr(self: Any) -> str:
    parts = ", ".join(f"{n}={getattr(self, n)!r}" for n in _fields(type(self)))
    return f"{type(self).__name__}({parts})"


def _frozen(self: Any, name: str, value: Any = None) -> None:
    raise AttributeError(f"{type(self).__name__} is immutable; use record.replace()")


def _make(cls: type) -> type:
    # Not inspect.get_annotations: importing inspect is what records avoid.
    annotations: dict[str, str] = cls.__dict__.get("__annotations__", {})  # noqa: RUF063
    names = tuple(n for n, a in annotations.items() if not str(a).startswith("ClassVar"))
    body = {k: v for k, v in cls.__dict__.items() if k not in names and k != "__dict__"}
    body.pop("__weakref__", None)
    defaults = {n: cls.__dict__[n] for n in names if n in cls.__dict__}
    # One C-level call collects every field (an attrgetter of one name returns it bare).
    getter: Callable[[object], tuple[object, ...]]
    if len(names) > 1:
        getter = attrgetter(*names)
    else:
        getter = lambda obj: tuple([getattr(obj, n) for n in names])  # noqa: E731
    body.update(
        __slots__=names,
        __record_fields__=names,
        __record_defaults__=defaults,
        __record_values__=staticmethod(getter),
        __eq__=_eq,
        __hash__=_hash,
        __repr__=_repr,
        __setattr__=_frozen,
        __delattr__=_frozen,
    )
    body.setdefault("__init__", _init)
    return type(cls.__name__, cls.__bases__, body)


def init_fields(self: object, *values: object) -> None:
    """Set every field of a record, in order (for a record's own fast ``__init__``)."""
    for name, value in zip(_fields(type(self)), values, strict=True):
        _set(self, name, value)


def replace(obj: _T, **changes: Any) -> _T:
    """A copy of the record ``obj`` with some fields changed."""
    cls = type(obj)
    values = {n: getattr(obj, n) for n in _fields(cls)}
    unknown = set(changes) - set(values)
    if unknown:
        raise TypeError(f"{cls.__name__} has no field(s) {', '.join(sorted(unknown))}")
    values.update(changes)
    new = object.__new__(cls)
    for name, value in values.items():
        _set(new, name, value)
    return new


if TYPE_CHECKING:

    @dataclass_transform(frozen_default=True)
    def record(cls: type[_T]) -> type[_T]: ...

else:
    record = _make

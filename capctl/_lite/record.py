"""``Record``: small immutable value classes, cheap to define.

The OCI hook runs on every container start, and ``dataclasses`` costs it about 8 ms before
any work is done: importing it pulls in ``inspect`` (``ast``, ``dis``, ``tokenize``), and each
decorated class compiles generated methods.  A record is what capctl used dataclasses for, a
frozen, slotted bag of typed fields with equality, hashing and a repr, built in microseconds
from methods shared by every record, each class made once by its metaclass.  Type checkers
see it as a frozen dataclass (``dataclass_transform``, PEP 681).

    class Majors(Record):
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


class _RecordMeta(type):
    """Builds each :class:`Record` subclass once: its fields from its annotations, its slots
    and the shared methods, put into the class body before the class is made (a decorator
    gets a class already made, and must make it again for the slots)."""

    def __new__(mcls, name: str, bases: tuple[type, ...], body: dict[str, Any]) -> _RecordMeta:
        if not bases:  # Record itself
            return super().__new__(mcls, name, bases, body)
        # Not inspect.get_annotations: importing inspect is what records avoid.
        annotations: dict[str, str] = body.get("__annotations__", {})
        names = tuple(n for n, a in annotations.items() if not str(a).startswith("ClassVar"))
        defaults = {n: body.pop(n) for n in names if n in body}
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
        return super().__new__(mcls, name, bases, body)


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
    class Record:
        """What type checkers see: a frozen dataclass (PEP 681)."""

else:

    class Record(metaclass=_RecordMeta):
        """The base of every record (it adds no field and no slot)."""

        __slots__ = ()

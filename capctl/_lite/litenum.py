"""Enumerations without :mod:`enum`: the subset capctl uses, for modules on the hook's path.

``import enum`` costs about 3 ms at every start (it pulls in functools and collections),
a tenth of the hook's whole budget (docs/hook-startup.md).  Here a class body's public plain attributes
become its members, each an instance of the class with ``name`` and ``value``:

- ``Cls.NAME`` is the member, ``Cls(value)`` looks one up (``ValueError`` if none),
  ``iter(Cls)`` and ``len(Cls)`` give the members in definition order;
- :class:`Enum` members compare by identity; :class:`StrEnum` and :class:`IntEnum` members
  are ``str`` / ``int`` instances that compare, hash and print as their value;
- copying or pickling gives the member itself back;
- methods, properties and ``_private`` names are left alone.

To mypy these *are* :class:`enum.Enum`, :class:`enum.StrEnum` and :class:`enum.IntEnum`
(exhaustiveness checks, ``Literal`` members), which the tests hold the runtime to.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from enum import Enum as Enum
    from enum import IntEnum as IntEnum
    from enum import StrEnum as StrEnum
else:

    class _Meta(type):
        def __new__(mcs, name, bases, namespace):
            cls = super().__new__(mcs, name, bases, namespace)
            if not any(isinstance(b, _Meta) for b in bases):
                return cls  # Enum, StrEnum, IntEnum themselves
            members = {}
            by_value = {}
            for key, value in namespace.items():
                if key.startswith("_") or callable(value) or hasattr(value, "__get__"):
                    continue
                if value in by_value:
                    raise TypeError(f"{name}: {key} repeats the value {value!r}")
                member = cls._make_(value)
                member._name_ = key
                member._value_ = value
                members[key] = by_value[value] = member
                type.__setattr__(cls, key, member)
            cls._members_ = members
            cls._by_value_ = by_value
            return cls

        def __call__(cls, value):
            if isinstance(value, cls):
                return value
            try:
                return cls._by_value_[value]
            except (KeyError, TypeError):
                raise ValueError(f"{value!r} is not a valid {cls.__qualname__}") from None

        def __iter__(cls):
            return iter(cls._members_.values())

        def __len__(cls):
            return len(cls._members_)

        def __contains__(cls, member):
            return isinstance(member, cls) and member._name_ in cls._members_

        def __setattr__(cls, key, value):
            if key in cls.__dict__.get("_members_", ()):
                raise AttributeError(f"cannot reassign member {key!r}")
            super().__setattr__(key, value)

        @property
        def __members__(cls):
            return dict(cls._members_)

    class _Member:
        __slots__ = ()

        @property
        def name(self):
            return self._name_

        @property
        def value(self):
            return self._value_

        def __repr__(self):
            return f"<{type(self).__name__}.{self._name_}: {self._value_!r}>"

        def __reduce_ex__(self, protocol):
            return type(self), (self._value_,)

        def __copy__(self):
            return self

        def __deepcopy__(self, memo):
            return self

    class Enum(_Member, metaclass=_Meta):
        @classmethod
        def _make_(cls, value):
            return object.__new__(cls)

        def __str__(self):
            return f"{type(self).__name__}.{self._name_}"

        __format__ = object.__format__

        def __hash__(self):
            return hash(self._name_)

    class StrEnum(_Member, str, metaclass=_Meta):
        @classmethod
        def _make_(cls, value):
            if not isinstance(value, str):
                raise TypeError(f"{cls.__name__}: {value!r} is not a str")
            return str.__new__(cls, value)

        __str__ = str.__str__
        __format__ = str.__format__

    class IntEnum(_Member, int, metaclass=_Meta):
        @classmethod
        def _make_(cls, value):
            if type(value) is not int:
                raise TypeError(f"{cls.__name__}: {value!r} is not an int")
            return int.__new__(cls, value)

        __str__ = int.__repr__
        __format__ = int.__format__

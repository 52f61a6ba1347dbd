"""``capctl._lite.record``: the dataclass stand-in the hook path uses."""

from __future__ import annotations

import pytest

from capctl._lite.record import Record, init_fields, replace


class Point(Record):
    x: int
    y: int = 0

    @property
    def norm1(self) -> int:
        return abs(self.x) + abs(self.y)


class Fast(Record):
    name: str
    tags: tuple[str, ...] = ()

    def __init__(self, name: str, tags: tuple[str, ...] = ()) -> None:
        init_fields(self, name, tags)


class Other(Record):
    x: int
    y: int = 0


class One(Record):
    v: int


def test_fields_defaults_and_methods() -> None:
    assert (Point(1).x, Point(1).y, Point(1, 2).y, Point(y=3, x=1).y) == (1, 0, 2, 3)
    assert Point(-2, 3).norm1 == 5
    assert Point.__slots__ == ("x", "y")  # type: ignore[attr-defined]
    assert not hasattr(Point(1), "__dict__")


def test_equality_and_hash_are_by_value_and_class() -> None:
    assert Point(1, 2) == Point(1, 2) and hash(Point(1, 2)) == hash(Point(1, 2))
    assert Point(1, 2) != Point(2, 1)
    assert Point(1, 2) != Other(1, 2)  # type: ignore[comparison-overlap]  # another class
    assert One(1) == One(1) and One(1) != One(2)
    assert len({Point(1), Point(1), Point(2)}) == 2


def test_repr() -> None:
    assert repr(Point(1, 2)) == "Point(x=1, y=2)"
    assert repr(Fast("a")) == "Fast(name='a', tags=())"


def test_frozen() -> None:
    p = Point(1)
    with pytest.raises(AttributeError, match="immutable"):
        p.x = 2  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del p.x


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((), {}, "missing argument 'x'"),
        ((1, 2, 3), {}, "takes 2 arguments, 3 given"),
        ((1,), {"z": 2}, "unexpected argument"),
    ],
)
def test_bad_arguments(args: tuple[int, ...], kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(TypeError, match=message):
        Point(*args, **kwargs)


def test_own_init_is_kept() -> None:
    assert Fast("a", ("t",)).tags == ("t",)
    with pytest.raises(TypeError):
        Fast()  # type: ignore[call-arg]


def test_replace() -> None:
    p = Point(1, 2)
    assert replace(p, y=5) == Point(1, 5) and p == Point(1, 2)
    assert replace(Fast("a"), tags=("b",)) == Fast("a", ("b",))
    with pytest.raises(TypeError, match="no field"):
        replace(p, z=1)

"""capctl._lite.litenum behaves as :mod:`enum` on the subset capctl uses (to mypy it *is* enum)."""

from __future__ import annotations

import copy
import enum
import pickle
import subprocess
import sys

import pytest

from capctl._lite import litenum


class Colour(litenum.Enum):
    """Doc strings and methods are not members."""

    RED = "red"
    GREEN = "green"
    _hidden = "x"

    @property
    def loud(self) -> str:
        return self.value.upper()

    def shout(self) -> str:
        return self.name + "!"


class RealColour(enum.Enum):
    RED = "red"
    GREEN = "green"


class Letter(litenum.StrEnum):
    A = "a"
    C = "c"


class RealLetter(enum.StrEnum):
    A = "a"
    C = "c"


class Level(litenum.IntEnum):
    ONE = 1
    TWO = 2


class RealLevel(enum.IntEnum):
    ONE = 1
    TWO = 2


PAIRS = [(Colour, RealColour), (Letter, RealLetter), (Level, RealLevel)]


@pytest.mark.parametrize(("lite", "real"), PAIRS, ids=lambda c: c.__name__)
def test_same_surface_as_enum(lite: type[enum.Enum], real: type[enum.Enum]) -> None:
    assert [m.name for m in lite] == [m.name for m in real]
    assert [m.value for m in lite] == [m.value for m in real]
    assert len(lite) == len(real)
    assert list(lite.__members__) == list(real.__members__)
    for lm, rm in zip(lite, real, strict=True):
        assert isinstance(lm, lite)
        assert lite(rm.value) is lm
        assert lite(lm) is lm
        assert getattr(lite, lm.name) is lm
        assert lm in lite
        assert str(lm).replace(lite.__name__, real.__name__) == str(rm)
        assert f"{lm}".replace(lite.__name__, real.__name__) == f"{rm}"
        assert repr(lm).replace(lite.__name__, real.__name__) == repr(rm)
        assert (lm == rm.value) == (rm == rm.value)
        assert copy.copy(lm) is lm and copy.deepcopy([lm])[0] is lm
        assert pickle.loads(pickle.dumps(lm)) is lm
        assert {lm: 1}[lite(lm.value)] == 1
    with pytest.raises(ValueError, match="is not a valid"):
        lite("nope")
    with pytest.raises(ValueError, match="is not a valid"):
        lite([])  # unhashable: still ValueError, as enum does


def test_members_only_from_plain_public_attributes() -> None:
    assert "_hidden" not in Colour.__members__
    assert Colour.RED.loud == "RED" and Colour.GREEN.shout() == "GREEN!"
    red: object = "red"
    c: object = "c"
    two: object = 2
    assert red != Colour.RED  # a plain Enum is not its value
    assert c == Letter.C and two == Level.TWO and Level.TWO > Level.ONE


def test_members_cannot_be_reassigned_or_repeat_values() -> None:
    with pytest.raises(AttributeError):
        Colour.RED = Colour.GREEN  # type: ignore[misc,assignment]
    with pytest.raises(TypeError, match="repeats"):
        type("Twice", (litenum.Enum,), {"A": 1, "B": 1})
    with pytest.raises(TypeError, match="not a str"):
        type("Bad", (litenum.StrEnum,), {"A": 1})
    with pytest.raises(TypeError, match="not an int"):
        type("Bad", (litenum.IntEnum,), {"A": "1"})


def test_import_loads_nothing_but_itself() -> None:
    code = "import sys; before = set(sys.modules); import capctl._lite.litenum; " \
        "print(*sorted(set(sys.modules) - before))"
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert set(out) <= {"capctl", "capctl._lite", "capctl._lite.litenum", "__future__"}

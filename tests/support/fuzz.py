"""Random string mutations for testing a parser against its oracle, and ``outcome``.

One generator for every test that fuzzes a parser: a sample with one to three random edits,
drawn from a fixed seed so that a failure is reproducible.  The edit operations a test
allows, and how many copies a repeat adds, are parameters.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Literal

Op = Literal["delete", "insert", "replace", "upper", "repeat_char", "repeat_slice", "swap"]

#: delete a character, insert or replace one with a draw from the alphabet, upper-case the
#: tail from the position, repeat the character before the position or a slice from it,
#: swap two neighbours.
OPS: tuple[Op, ...] = (
    "delete", "insert", "replace", "upper", "repeat_char", "repeat_slice", "swap",
)  # fmt: skip


def outcome(fn: Callable[..., object], *args: object) -> tuple[str, object]:
    """What fn(*args) gives: ("ok", value) or the exception's type and message."""
    try:
        return ("ok", fn(*args))
    except Exception as err:  # the oracle compares failures too
        return (type(err).__name__, str(err))


def mutate(
    rng: random.Random,
    text: str,
    alphabet: Sequence[str],
    ops: Sequence[Op],
    *,
    max_repeat: int = 1,
) -> str:
    """``text`` with one to three random edits chosen from ``ops``.

    Insert and replace draw from ``alphabet`` (characters or longer pieces); a repeat adds
    one to ``max_repeat`` extra copies of what it repeats.
    """
    for _ in range(rng.randint(1, 3)):
        i = rng.randint(0, len(text))
        op = rng.choice(ops)
        if op == "delete":
            text = text[:i] + text[i + 1 :]
        elif op == "insert":
            text = text[:i] + rng.choice(alphabet) + text[i:]
        elif op == "replace":
            text = text[:i] + rng.choice(alphabet) + text[i + 1 :]
        elif op == "upper":
            text = text[:i] + text[i:].upper()
        elif op == "repeat_char":
            text = text[:i] + text[i - 1 : i] * rng.randint(1, max_repeat) + text[i:]
        elif op == "repeat_slice":
            j = rng.randint(i, len(text))
            text = text[:j] + text[i:j] * rng.randint(1, max_repeat) + text[j:]
        elif op == "swap":
            if i + 1 < len(text):
                text = text[:i] + text[i + 1] + text[i] + text[i + 2 :]
        else:  # pragma: no cover - Op is a closed set
            raise ValueError(f"unknown edit {op!r}")
    return text


def mutants(
    samples: Sequence[str],
    alphabet: Sequence[str],
    count: int,
    seed: int,
    *,
    ops: Sequence[Op],
    max_repeat: int = 1,
) -> list[str]:
    """``count`` strings, each a random sample with one to three random edits (see
    ``mutate``), reproducible from ``seed``."""
    rng = random.Random(seed)
    return [
        mutate(rng, rng.choice(samples), alphabet, ops, max_repeat=max_repeat) for _ in range(count)
    ]

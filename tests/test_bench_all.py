"""``python -m bench.all``: one table of every bench's rows, each row once."""

from __future__ import annotations

from bench.all import add_rows, rows_of
from bench.report import HEADER


def test_a_row_printed_twice_by_one_bench_is_kept_once() -> None:
    """bench_runtimes prints each row as it goes and again in its table."""
    out = f"| a | 1 |\nprogress\n{HEADER}\n| a | 1 |\n| b | 2 |\n"
    rows = ["| x | 0 |"]
    add_rows(rows, rows_of(out))
    assert rows == ["| x | 0 |", "| a | 1 |", "| b | 2 |"]
    add_rows(rows, ["| b | 2 |", "| c | 3 |"])
    assert rows == ["| x | 0 |", "| a | 1 |", "| b | 2 |", "| c | 3 |"]

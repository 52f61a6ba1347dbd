"""What every bench shares: side-by-side timing of whole processes and one Markdown row per
figure, so that the README's table is pasted from one run (``docs/testing.md``).

    rows = Rows("bench_hook")
    base, own = interleaved([floor_argv], [hook_argv], runs=30)
    rows.add("hook, cgroup v1", base, own, goal="<= 1.6x", ratio=True)
    rows.print()   # the table's header once, then each row

A row reads ``| what | without | with capctl | added | goal |``; ``added`` is the difference of
the medians, or their ratio with ``ratio=True``, and the goal column says **missed** when the
figure does not meet it.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TextIO

HEADER = "| what | without | with capctl | added | goal |\n|---|---|---|---|---|"


def trusted_tmpdir(prefix: str) -> str:
    """A fresh directory only root can change (under /run; a user's own cache when not
    root): ``capctl install`` refuses a launcher directory anyone else could write, so a
    bench that installs works here, not under the world-writable /tmp.  The caller removes it."""
    base = "/run" if os.geteuid() == 0 else os.path.join(os.path.expanduser("~"), ".cache")
    os.makedirs(base, exist_ok=True)
    path = tempfile.mkdtemp(prefix=prefix, dir=base)
    os.chmod(path, 0o755)
    return path


def cpu_ns(pid: int) -> int:
    """CPU time of every thread of ``pid`` so far, in ns (first field of schedstat)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
            total += int(f.read().split()[0])
    return total


def median_ms(values: Sequence[float]) -> float:
    return statistics.median(values) * 1000


def run_timed(argv: Sequence[str], stdin: bytes | None = None) -> float:
    """Wall seconds of one whole process; it must succeed."""
    t0 = time.perf_counter()
    subprocess.run(argv, input=stdin, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def interleaved(
    base: Callable[[], float], own: Callable[[], float], runs: int, warmup: int = 2
) -> tuple[list[float], list[float]]:
    """A/B/A/B...: each callable returns the seconds it measured; the first *warmup* pairs
    are dropped (page cache, first exec)."""
    a: list[float] = []
    b: list[float] = []
    for i in range(runs + warmup):
        x, y = base(), own()
        if i >= warmup:
            a.append(x)
            b.append(y)
    return a, b


@dataclass
class Rows:
    """Markdown rows of one bench run."""

    bench: str
    rows: list[str] = field(default_factory=list)

    def add(
        self,
        what: str,
        base: Sequence[float],
        own: Sequence[float],
        *,
        goal: str = "",
        ratio: bool = False,
        limit: float | None = None,
    ) -> str:
        """A row from seconds; *limit* is the goal as a number (ms added, or the ratio)."""
        b, o = median_ms(base), median_ms(own)
        value = o / b if ratio else o - b
        added = f"{value:.2f}x" if ratio else f"{value:+.1f} ms"
        if limit is not None and value > limit:
            goal = f"{goal}: **missed**"
        row = f"| {what} | {b:.1f} ms | {o:.1f} ms | {added} | {goal} |"
        self.rows.append(row)
        return row

    def note(self, row: str) -> None:
        """A row written by the bench itself (a size, a CPU share)."""
        self.rows.append(row)

    def print(self, file: TextIO | None = None) -> None:
        out = file if file is not None else sys.stdout
        print(f"\n{self.bench} ({len(self.rows)} rows, medians):", file=out)
        print(HEADER, file=out)
        for row in self.rows:
            print(row, file=out)

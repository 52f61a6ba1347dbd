"""Every bench in one run, and one Markdown table of their rows: what the README pastes.

    sudo .venv/bin/python -m bench.all --python /tmp/v/bin/python > /tmp/figures.md
    .venv/bin/python -m bench.all --only bench_sync bench_hook   # some of them

Each bench runs as its own process (``python -m bench.<name>``) with its default options and
prints its rows through :mod:`bench.report`; this collects the rows (lines that start with
``| `` after a table header), and prints them under one header with the date, the machine
and the interpreter, so that a figure in the README names the run that made it.  A bench that
fails is reported with its exit status and the end of its output, and the others still run.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

from bench.report import HEADER

BENCHES = ("bench_sync", "bench_hook", "bench_runtimes", "bench_cdi", "bench_watch",
           "bench_fleet")
#: The benches that measure an installation's entry points (``--python``).
WITH_PYTHON = ("bench_sync", "bench_hook", "bench_runtimes")
REPO = Path(__file__).resolve().parent.parent


def rows_of(output: str) -> list[str]:
    """The Markdown rows in a bench's output: every ``| ...`` line but the header's two."""
    header = set(HEADER.splitlines())
    return [line for line in output.splitlines() if line.startswith("| ") and line not in header]


def add_rows(rows: list[str], found: list[str]) -> None:
    """Append each row of ``found`` that ``rows`` does not hold yet: a bench may print a row
    as it goes and again in its table (``bench_runtimes``)."""
    for row in found:
        if row not in rows:
            rows.append(row)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                       cpu)
    except OSError:
        pass
    return (f"{os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}, "
            f"Python {platform.python_version()}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", choices=BENCHES, help="run only these benches")
    ap.add_argument("--python", default=None,
                    help="the capctl installation the start-up benches measure (its "
                         "interpreter; default this one): a regular install, as users have it")
    args = ap.parse_args()
    failed = 0
    rows: list[str] = []
    for name in args.only or BENCHES:
        print(f"bench.all: {name}...", file=sys.stderr, flush=True)
        extra = ["--python", args.python] if args.python and name in WITH_PYTHON else []
        res = subprocess.run([sys.executable, "-m", f"bench.{name}", *extra], cwd=REPO,
                             capture_output=True, text=True)
        if res.returncode != 0:
            failed += 1
            tail = "\n".join((res.stdout + res.stderr).splitlines()[-15:])
            print(f"bench.all: {name} failed ({res.returncode}):\n{tail}", file=sys.stderr)
            continue
        found = rows_of(res.stdout)
        if not found:
            failed += 1
            print(f"bench.all: {name} printed no rows", file=sys.stderr)
        add_rows(rows, found)
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"Measured {now} on {machine()}; `python -m bench.all`, medians, each row's two "
          "figures side by side in one run.\n")
    print(HEADER)
    for row in rows:
        print(row)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run runs exactly this):
#  1. unit tests on simulated roots, real-kernel tests (cgroup v1 and v2, runc containers) and
#     real-client tests when run as root, at the tested versions (constraints.txt); a skip
#     not on tests/conftest.py's allow-list fails the run;
#  2. mypy --strict and ruff;
#  3. scripts/matrix.sh: the unit tests at the newest releases, at the declared lower bounds,
#     on Python 3.12 and 3.13 when present, and against the built wheel (about 15 minutes).
# ./test.sh --quick [PYTEST-ARGS...] leaves out step 3 and passes the arguments to pytest.
set -euo pipefail
cd "$(dirname "$0")"
matrix=1
if [ "${1:-}" = --quick ]; then
  matrix=0
  shift
fi
. scripts/setup.sh
CAPCTL_STRICT_SKIPS=1 python -m pytest -q "$@"
python -m mypy
python -m mypy --strict scripts/*.py
python -m ruff check capctl tests bench scripts
if [ "$matrix" = 1 ]; then
  scripts/matrix.sh
fi

#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run runs exactly this):
#  1. unit tests on simulated roots, real-kernel tests (cgroup v1 and v2, runc containers) and
#     real-client tests when run as root, at the tested versions (constraints.txt); a skip
#     not on tests/conftest.py's allow-list fails the run;
#  2. mypy --strict and ruff;
#  3. the suite again as a cgroup-v2-only host (scripts/v2only.sh: a private mount namespace
#     with cgroup2 at /sys/fs/cgroup and no v1 hierarchy), where only what needs v1 may skip;
#  4. scripts/matrix.sh: the unit tests at the newest releases, at the declared lower bounds,
#     on Python 3.12 and 3.13 when present, and against the built wheel (about 15 minutes).
# ./test.sh --quick [PYTEST-ARGS...] leaves out steps 3 and 4 and passes the arguments to pytest.
set -euo pipefail
cd "$(dirname "$0")"
matrix=1
if [ "${1:-}" = --quick ]; then
  matrix=0
  shift
fi
. scripts/setup.sh
CAPCTL_STRICT_SKIPS=1 python -m pytest -q -rs "$@"
python -m mypy
python -m mypy --strict scripts/*.py
python -m ruff check capctl tests bench scripts
if [ "$matrix" = 1 ]; then
  if [ "$(stat -f -c %T /sys/fs/cgroup)" = cgroup2fs ]; then
    echo "test.sh: this host is cgroup-v2-only; step 1 was the v2-only run" >&2
  elif [ "$(id -u)" = 0 ] && grep -q " - cgroup2 " /proc/self/mountinfo; then
    echo "test.sh: the suite as a cgroup-v2-only host (scripts/v2only.sh)" >&2
    CAPCTL_STRICT_SKIPS=1 scripts/v2only.sh python -m pytest -q -rs -p no:cacheprovider
  else
    echo "test.sh: no cgroup2 hierarchy or not root: the v2-only run is left out" >&2
  fi
  scripts/matrix.sh
fi

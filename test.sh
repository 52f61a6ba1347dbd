#!/usr/bin/env bash
# The whole test suite: unit tests on simulated roots, real-kernel tests (cgroup v1 and v2,
# runc containers) when run as root, then mypy --strict and ruff.  Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
. scripts/setup.sh
CAPCTL_STRICT_SKIPS=1 python -m pytest -q "$@"
python -m mypy
python -m mypy --strict scripts/*.py
python -m ruff check capctl tests bench scripts

#!/usr/bin/env bash
# Check, read-only, that capctl agrees with this machine's NVIDIA driver: doctor, list against
# /proc/driver/nvidia-caps and /dev/nvidia-caps, topology and resolve against nvidia-smi -L,
# and sync --dry-run widening nothing (scripts/hardware_check.py says how).  It installs
# capctl into a temporary virtual environment, removed afterwards; it never changes MIG mode,
# creates or destroys instances, or writes under /dev.
#
#   scripts/hardware-check.sh [--wheelhouse DIR] [-- CHECK-OPTIONS]
#       on the GPU machine, as root (or a user who may read /dev/nvidia-caps); without
#       --wheelhouse, capctl and its dependencies (constraints.txt) come from PyPI.
#       CHECK-OPTIONS go to hardware_check.py (--root DIR for a containerized driver).
#   scripts/hardware-check.sh --prepare DIR
#       where PyPI is reachable: capctl's wheel and its dependencies' into DIR, for a GPU
#       machine without network (pass DIR there as --wheelhouse).
#
# One verdict line a check; exits 1 when any fails.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}

. "$REPO/scripts/pip.sh"

wheelhouse=
case ${1:-} in
  --prepare)
    [ $# = 2 ] || { echo "usage: $0 --prepare DIR" >&2; exit 2; }
    mkdir -p "$2"
    pipq "$PYTHON" wheel -c "$REPO/constraints.txt" -w "$2" "$REPO"
    echo "hardware-check: wheels for capctl and its dependencies in $2" >&2
    exit 0 ;;
  --wheelhouse)
    [ $# -ge 2 ] || { echo "usage: $0 --wheelhouse DIR [-- CHECK-OPTIONS]" >&2; exit 2; }
    wheelhouse=$(cd "$2" && pwd)
    shift 2 ;;
  -h|--help)
    sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
    exit 0 ;;
esac
[ "${1:-}" != -- ] || shift

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "hardware-check: capctl needs Python 3.11 or newer ($PYTHON is older)" >&2; exit 1; }
tmp=$(mktemp -d /tmp/capctl-hwcheck.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
"$PYTHON" -m venv "$tmp/venv"
if [ -n "$wheelhouse" ]; then
  pipq "$tmp/venv/bin/python" install --no-index --find-links "$wheelhouse" capctl
else
  pipq "$tmp/venv/bin/python" install -c "$REPO/constraints.txt" "$REPO"
fi
echo "hardware-check: capctl $("$tmp/venv/bin/capctl" --version | awk '{print $NF}')," \
  "driver $(cat /sys/module/nvidia/version 2>/dev/null || echo unknown)," \
  "$(uname -r)" >&2
"$tmp/venv/bin/python" "$REPO/scripts/hardware_check.py" --capctl "$tmp/venv/bin/capctl" "$@"

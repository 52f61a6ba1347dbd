#!/bin/sh
# Usage: deploy/image/wheelhouse.sh DIR [PYTHON]
# capctl's wheel and its dependencies at the tested versions (constraints.txt) into DIR, for
# an image build without network.  PYTHON (default python3) needs pip; run where PyPI (or
# your mirror) is reachable.
set -eu
[ $# -ge 1 ] || { echo "usage: $0 DIR [PYTHON]" >&2; exit 2; }
repo=$(cd "$(dirname "$0")/../.." && pwd)
"${2:-python3}" -m pip wheel --quiet -c "$repo/constraints.txt" -w "$1" "$repo"
echo "wheelhouse: capctl and its dependencies in $1" >&2

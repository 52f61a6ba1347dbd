#!/usr/bin/env bash
# The tests beyond the tested set (constraints.txt), each in a fresh virtual environment under
# .matrix/, so that CI sees a dependency's or CPython's next break before users do:
#
#   newest   the newest release of every dependency (no constraints): unit tests and mypy
#   lowest   every dependency at the lower bound pyproject.toml declares: unit tests
#   py3.12   Python 3.12 with the tested set: unit tests (one line and on, when absent)
#   py3.13   Python 3.13 with the tested set: unit tests (one line and on, when absent)
#   dist     the wheel and sdist as users get them: built, the wheel installed into a clean
#            venv, its entry points run, and the unit tests run against it
#
# "Unit tests" are `pytest -m "not kernel"`: everything but the real-client and
# cgroup-kernel tests (the hook's runc tests stay: they prove its start-up path on each
# CPython).  Usage: scripts/matrix.sh [JOB...] (default: all).  Exits non-zero when any job
# fails; each prints one verdict line.
set -uo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
PYTHON=${PYTHON:-python3}
WORK="$REPO/.matrix"
UNIT=(-m "not kernel" -q -p no:cacheprovider)
mkdir -p "$WORK"

say() { printf 'matrix: %s\n' "$*"; }

. "$REPO/scripts/pip.sh"

# venv NAME PYTHON: a fresh venv at $WORK/NAME; prints its python.
venv() {
  rm -rf "${WORK:?}/$1"
  "$2" -m venv "$WORK/$1" >&2 && echo "$WORK/$1/bin/python"
}

# versions PYTHON: "click 8.5.1, jeepney 0.9.0, ..." as installed there.
versions() {
  "$1" - <<'EOF'
from importlib.metadata import version
names = ("click", "jeepney", "nvidia-ml-py", "pyroute2", "tomlkit", "pytest")
print(", ".join(f"{n} {version(n)}" for n in names))
EOF
}

# find_python X.Y: an interpreter of that version, from PATH or pyenv; nothing when absent.
find_python() {
  local want=$1 c
  for c in "$(command -v "python$want" 2>/dev/null)" \
           "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$want".*/bin/"python$want" \
           /usr/bin/"python$want" /usr/local/bin/"python$want"; do
    [ -n "$c" ] && [ -x "$c" ] || continue
    if "$c" -c "import sys; assert sys.version_info[:2] == tuple(map(int, '$want'.split('.')))" \
         >/dev/null 2>&1; then
      echo "$c"
      return
    fi
  done
}

# tests NAME PYTHON [DIR]: the unit tests with that interpreter (in DIR, default the checkout).
tests() {
  local log="$WORK/$1.log" dir=${3:-$REPO}
  if (cd "$dir" && "$2" -m pytest "${UNIT[@]}") >"$log" 2>&1; then
    say "$1: $(tail -n 1 "$log" | tr -d '=')"
    return 0
  fi
  tail -n 40 "$log" | sed "s/^/  $1: /" >&2
  return 1
}

job_newest() {
  local py
  py=$(venv newest "$PYTHON") || return 1
  # No constraints: what pip gives a new user today.  mypy and ruff are pinned in
  # pyproject.toml itself (each release changes what they report).
  pipq "$py" install -e ".[test]" || return 1
  say "newest: $(versions "$py")"
  tests newest "$py" || return 1
  (cd "$REPO" && "$py" -m mypy) >"$WORK/newest-mypy.log" 2>&1 \
    || { tail -n 20 "$WORK/newest-mypy.log" | sed 's/^/  newest mypy: /' >&2; return 1; }
}

job_lowest() {
  local py
  py=$(venv lowest "$PYTHON") || return 1
  "$py" "$REPO/scripts/lowest_constraints.py" "$REPO/pyproject.toml" >"$WORK/lowest-constraints.txt" \
    || return 1
  pipq "$py" install -c "$WORK/lowest-constraints.txt" -e ".[test]" || return 1
  say "lowest: $(versions "$py")"
  tests lowest "$py"
}

job_python() {
  local want=$1 found py
  found=$(find_python "$want")
  if [ -z "$found" ]; then
    say "py$want: no Python $want on this machine (PATH, pyenv): skipped"
    return 0
  fi
  py=$(venv "py$want" "$found") || return 1
  pipq "$py" install -c constraints.txt -e ".[test]" || return 1
  say "py$want: $("$py" -c 'import platform; print(platform.python_version())') ($found)"
  tests "py$want" "$py"
}

# entry_points BIN: each console script the wheel installs, run once on a simulated host.
entry_points() {
  local bin=$1 sim rc=0 out
  sim=$(mktemp -d "$WORK/dist-root.XXXXXX")
  run() { "$@" >"$sim/out" 2>&1 || { say "dist: failed: $*"; sed 's/^/  /' "$sim/out" >&2; rc=1; }; }
  run "$bin/python" -m capctl.simulated "$sim/root"
  run "$bin/capctl" --version
  run "$bin/capctl" --root "$sim/root" list --json
  run "$bin/capctl" --root "$sim/root" --topology "$sim/root/topology.json" resolve --json 0:0
  run "$bin/capctl" --root "$sim/root" sync --dry-run
  if [ -x /usr/sbin/runc ]; then  # execs the real runtime (the default, runc) at once
    run "$bin/capctl-runtime" --capctl-config "$sim/none.toml" --version
  fi
  # Without "prestart" it prints its usage and exits 2: enough to show it starts.
  out=$("$bin/capctl-docker-hook" 2>&1)
  [ $? = 2 ] && [[ $out == *"usage: nvidia-container-runtime-hook prestart"* ]] \
    || { say "dist: capctl-docker-hook: $out"; rc=1; }
  rm -rf "$sim"
  return $rc
}

# hardware_check PYTHON DIST: scripts/hardware-check.sh as on a GPU machine with no network
# (capctl from a wheelhouse), here on the simulated host, where it must find no disagreement.
hardware_check() {
  local house="$WORK/dist-wheelhouse" sim
  rm -rf "$house"
  pipq "$1" wheel -c constraints.txt -w "$house" "$2"/capctl-*.whl || return 1
  sim=$(mktemp -d "$WORK/dist-root.XXXXXX")
  "$1" -m capctl.simulated "$sim/root" >/dev/null
  if ! PYTHON="$1" scripts/hardware-check.sh --wheelhouse "$house" -- --root "$sim/root" \
       --topology "$sim/root/topology.json" >"$WORK/dist-hardware-check.log" 2>&1; then
    sed 's/^/  hardware-check: /' "$WORK/dist-hardware-check.log" >&2
    rm -rf "$sim"
    return 1
  fi
  say "dist: $(tail -n 1 "$WORK/dist-hardware-check.log")"
  rm -rf "$sim"
}

job_dist() {
  local out="$WORK/dist-out" builder py tree
  rm -rf "$out" && mkdir -p "$out"
  builder=$(venv dist-build "$PYTHON") || return 1
  pipq "$builder" install -c constraints.txt build setuptools || return 1
  # --no-isolation: the build backend is the tested setuptools, not whatever is newest.
  # Any warning from the backend (a deprecated pyproject field) fails the job.
  if ! "$builder" -m build --no-isolation --outdir "$out" "$REPO" >"$WORK/dist-build.log" 2>&1 \
     || grep -E "Deprecat|[A-Za-z]Warning\b" "$WORK/dist-build.log" >&2; then
    tail -n 30 "$WORK/dist-build.log" | sed 's/^/  dist build: /' >&2
    return 1
  fi
  "$builder" "$REPO/scripts/check_dist.py" "$out" || return 1
  py=$(venv dist-venv "$PYTHON") || return 1
  # The wheel with its test extra: the test tools at the tested versions (the manifests'
  # schema validation and YAML among them), capctl itself from the wheel.
  pipq "$py" install -c constraints.txt "$(ls "$out"/capctl-*.whl)[test]" || return 1
  say "dist: $(ls "$out" | tr '\n' ' ')"
  entry_points "$(dirname "$py")" || return 1
  hardware_check "$py" "$out" || return 1
  # The unit tests against the installed wheel: the checkout's files without its capctl/,
  # so every import of capctl (the hook's import contract included) finds the wheel's.
  tree="$WORK/dist-tree"
  rm -rf "$tree" && mkdir -p "$tree"
  git -C "$REPO" ls-files -z --cached --others --exclude-standard | grep -z -v '^capctl/' | (cd "$REPO" && xargs -0 cp --parents -t "$tree")
  [ ! -e "$tree/capctl" ] && (cd "$tree" && "$py" -c 'import capctl, sys
sys.exit("site-packages" not in capctl.__file__)') \
    || { say "dist: the tests would not import capctl from the wheel"; return 1; }
  tests dist "$py" "$tree"
}

jobs=("$@")
[ ${#jobs[@]} -gt 0 ] || jobs=(newest lowest py3.12 py3.13 dist)
failed=()
for job in "${jobs[@]}"; do
  start=$SECONDS
  case $job in
    newest) job_newest ;;
    lowest) job_lowest ;;
    py3.*) job_python "${job#py}" ;;
    dist) job_dist ;;
    *) say "unknown job '$job' (newest, lowest, py3.12, py3.13, dist)"; false ;;
  esac
  rc=$?
  if [ $rc = 0 ]; then
    say "$job: passed ($((SECONDS - start)) s)"
  else
    say "$job: FAILED ($((SECONDS - start)) s; logs in .matrix/)"
    failed+=("$job")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  say "failed: ${failed[*]}"
  exit 1
fi

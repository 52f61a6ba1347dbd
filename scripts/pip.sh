# Sourced by setup.sh, matrix.sh and hardware-check.sh: pip without this kind of machine's
# pip-config noise (its find-links and index lines), its exit status kept.
# pipq PYTHON COMMAND ARGS...   e.g. pipq .venv/bin/python install -c constraints.txt x
pipq() {
  local py=$1 command=$2 rc=0 log
  shift 2
  log=$(mktemp)
  "$py" -m pip "$command" -q --disable-pip-version-check "$@" >"$log" 2>&1 || rc=$?
  grep -v -e '^WARNING: Location' -e 'Running pip as the' "$log" >&2 || true
  rm -f "$log"
  return "$rc"
}

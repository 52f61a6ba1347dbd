#!/usr/bin/env bash
# capctl's main job on a simulated 8-GPU A100 host: build the driver's files in a temporary
# root, create the capability nodes (capctl sync), and show what capctl sees.  Run as root.
set -euo pipefail
cd "$(dirname "$0")"
. scripts/setup.sh
if [ "$(id -u)" != 0 ]; then echo "demo: run as root (it creates device nodes): sudo $0" >&2; exit 1; fi
root=$(mktemp -d /tmp/capctl-demo.XXXXXX)
trap 'rm -rf "$root"' EXIT
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

step python -m capctl.simulated "$root"
python -m capctl.simulated "$root"
step capctl --root "$root" sync
capctl --root "$root" sync | tail -n 4
step capctl --root "$root" sync   "# again: nothing to do"
capctl --root "$root" sync | tail -n 1
step capctl --root "$root" list "| (existing capabilities only)"
capctl --root "$root" list | awk 'NR == 1 || $4 == "yes"'
step ls -l "$root/dev/nvidia-caps" "| head"
ls -l "$root/dev/nvidia-caps" | head -n 6
step capctl --root "$root" doctor
capctl --root "$root" doctor || true

if command -v runc >/dev/null 2>&1 && [ -x /bin/busybox ]; then
  step "runc run: a busybox container asking for one MIG device, with 'capctl hook' as createRuntime hook"
  python scripts/demo_container.py "$root"
else
  echo "(runc or busybox-static missing: skipping the container part)"
fi

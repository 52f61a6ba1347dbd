#!/bin/sh
# Usage: scripts/render-manifests.sh
# Rewrite tests/golden/kubernetes/*.yaml with `kubectl kustomize` (run it after changing
# deploy/kubernetes): the tests check their own renderer (tests/support/kustomize.py)
# against these files, then validate and run what it renders.
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
out=$repo/tests/golden/kubernetes
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
render() {  # NAME COMPONENT...
  name=$1; shift
  mkdir -p "$tmp/$name"
  rel=$(realpath --relative-to="$tmp/$name" "$repo/deploy/kubernetes")
  { echo "resources: [$rel]"; echo "components:"
    for c in "$@"; do echo "  - $rel/components/$c"; done; } > "$tmp/$name/kustomization.yaml"
  kubectl kustomize "$tmp/$name" > "$out/$name.yaml"
}
render base
render crio-hooks crio-hooks
render containerd containerd
render driver-container driver-container
render all crio-hooks containerd driver-container
echo "render-manifests: $out" >&2

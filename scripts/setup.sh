# Sourced by demo.sh, test.sh and .ci/run: installs what capctl needs, once, quietly.
#  - Debian packages for the real-kernel tests and the demo (runc, busybox-static, acl, udev;
#    podman, docker.io and containerd for the real-client tests; gcc for the hook's security
#    tests, which build a preload library) when running as root on
#    Debian/Ubuntu and they are missing;
#  - a virtual environment in .venv with capctl (editable) and its test tools, at the tested
#    versions of constraints.txt (pyproject.toml has the ranges users may get).
# Idempotent: a second run costs a few hundred milliseconds.
set -euo pipefail
CAPCTL_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}

need_pkgs=()
command -v runc >/dev/null 2>&1 || need_pkgs+=(runc)
[ -x /bin/busybox ] || need_pkgs+=(busybox-static)
command -v setfacl >/dev/null 2>&1 || need_pkgs+=(acl)
command -v udevadm >/dev/null 2>&1 || need_pkgs+=(udev)
command -v systemd-nspawn >/dev/null 2>&1 || need_pkgs+=(systemd-container)
command -v debootstrap >/dev/null 2>&1 || need_pkgs+=(debootstrap)
command -v podman >/dev/null 2>&1 || need_pkgs+=(podman)
command -v dockerd >/dev/null 2>&1 || need_pkgs+=(docker.io)
command -v containerd >/dev/null 2>&1 || need_pkgs+=(containerd)
command -v cc >/dev/null 2>&1 || need_pkgs+=(gcc libc6-dev)  # the hook's injection tests
"$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1 || need_pkgs+=(python3-venv)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian packages: ${need_pkgs[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  else
    echo "setup: missing ${need_pkgs[*]} (install them as root); tests that need them are skipped" >&2
  fi
fi

VENV="$CAPCTL_REPO/.venv"
stamp="$VENV/.capctl-installed"
if [ ! -x "$VENV/bin/python" ] || [ ! -f "$stamp" ] || [ "$CAPCTL_REPO/pyproject.toml" -nt "$stamp" ] \
   || [ "$CAPCTL_REPO/constraints.txt" -nt "$stamp" ]; then
  echo "setup: creating $VENV (capctl + test tools)" >&2
  "$PYTHON" -m venv "$VENV"
  . "$CAPCTL_REPO/scripts/pip.sh"
  pipq "$VENV/bin/python" install -c "$CAPCTL_REPO/constraints.txt" -e "$CAPCTL_REPO[test]" \
    && "$VENV/bin/python" -c 'import capctl.cli, click, pyroute2, pynvml, tomlkit' \
    || { echo "setup: installing capctl into $VENV failed" >&2; exit 1; }
  touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"

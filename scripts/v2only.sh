#!/bin/sh
# Run a command as on a cgroup-v2-only host (current Debian, Ubuntu, Fedora, RHEL): in a
# private mount namespace, every cgroup v1 hierarchy and the tmpfs under /sys/fs/cgroup are
# unmounted and cgroup2 is mounted at /sys/fs/cgroup.  The host's own mounts are untouched;
# the cgroup2 hierarchy is the host's (/sys/fs/cgroup/unified there), so every cgroup a test
# creates is still a child it made, removed by the test.
#   scripts/v2only.sh python -m pytest -q
set -eu
[ "$(id -u)" = 0 ] || { echo "v2only: needs root (a private mount namespace)" >&2; exit 2; }
[ "$#" -ge 1 ] || { echo "usage: scripts/v2only.sh COMMAND [ARGS...]" >&2; exit 2; }
exec unshare -m --propagation private -- sh -eu -c '
  if [ "$(stat -f -c %T /sys/fs/cgroup)" != cgroup2fs ]; then
    umount -R /sys/fs/cgroup
    mount -t cgroup2 none /sys/fs/cgroup
  fi
  [ "$(stat -f -c %T /sys/fs/cgroup)" = cgroup2fs ] || { echo "v2only: no cgroup2 at /sys/fs/cgroup" >&2; exit 2; }
  ! grep -q " - cgroup " /proc/self/mountinfo || { echo "v2only: a cgroup v1 hierarchy is still mounted" >&2; exit 2; }
  exec "$@"' v2only "$@"

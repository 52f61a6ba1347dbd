"""A podman harness for real-kernel end-to-end tests (podman 4.3, cgroup v1 and cgroup v2).

    with PodmanHarness(tmp_path, cgroup2=True, hooks_dir=hooks) as podman:
        ctr = podman.run(extra=["-v", f"{nodes}:/nodes", "--env", "A=1"])  # busybox sleep
        podman.probe(ctr, "/nodes/n1")                  # -> "ENXIO" / "EPERM" / "OK"
        podman.exec(ctr, ["/bin/busybox", "ls", "/"])   # CompletedProcess
        podman.probe_once("/dev/x", extra=["--device", f"{node}:/dev/x"])  # one-shot --rm
        podman.run_once(["/bin/busybox", "true"], extra=["--cap-add", "SYS_ADMIN"])

* Every container runs from a busybox-static root filesystem directory (``--rootfs``, made
  once per harness under *workdir*), with ``--network none`` and the ulimits runc needs here
  (``nofile``/``nproc`` 1024), and *extra* podman-run arguments (``--device``, ``-v``,
  ``--env``, ``--annotation``, ``--cap-add``...).
* Isolation: a private store (``--root``, ``--runroot`` at most 50 characters,
  ``--tmpdir``, the runtime's ``--root``, vfs storage driver, no events) in a short
  directory under /tmp;
  ``--cgroup-manager cgroupfs`` with a cgroup parent of its own (``/capctl-test-<hex>``,
  so a container's cgroup is ``<parent>/libpod-<id>``) unless *cgroup_parent* is given;
  ``--hooks-dir`` is *hooks_dir* or an empty directory (podman reads no system hooks).
* ``cgroup2=True``: podman uses cgroup2; on a hybrid host podman, conmon and the containers
  run in one private mount namespace where cgroup2 is mounted on ``/sys/fs/cgroup`` (see
  :class:`MountNamespace`; a v2-only host needs none), with
  ``--pids-limit 0``; from the host the container's cgroup is
  ``/sys/fs/cgroup/unified/<parent>/libpod-<id>``.  *ns_setup* runs more shell commands in
  that namespace first (``tests/support/kubeplay.py`` mounts a simulated node's paths); with
  ``cgroup2=False`` and *ns_setup*, the namespace keeps the host's cgroup v1 hierarchies.
* *storage_driver* (``vfs``; ``overlay`` for images built in the test) and
  *containers_conf* (a ``containers.conf`` for what ``podman kube play`` takes only from
  there: ulimits, the pids limit, the infra image).
* :meth:`add_cdi_spec` writes a CDI spec to ``/etc/cdi`` (where podman 4.3 reads them)
  under a unique name, removed again on exit.
* Cleanup on exit, even after failures: ``podman rm -a -f``, the namespace holder, the
  cgroup parent (our own one: with anything left in it; a given one: only when empty),
  ``libpod_parent`` when it appeared during the harness's life and is empty, the CDI files,
  left-over mounts and the state directory.  Root cgroups are never written.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.support.clients import (
    SLEEP,
    Container,
    Leftovers,
    MountNamespace,
    cgroup_dirs,
    classify,
    make_rootfs,
    probe_argv,
    remove_cgroup_tree,
    remove_empty_cgroup,
    remove_tree,
    run_cmd,
    short_tmpdir,
    stop_processes_naming,
    unique_name,
)
from tests.support.hostcg import LAYOUT, NO_V1

CDI_DIR = Path("/etc/cdi")
ULIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")
RUNROOT_MAX = 50


class PodmanHarness:
    """Runs podman containers for one test; see the module docstring."""

    def __init__(
        self,
        workdir: Path,
        *,
        cgroup2: bool | None = None,
        hooks_dir: Path | None = None,
        runtime: str = "runc",
        cgroup_parent: str | None = None,
        podman: str = "podman",
        storage_driver: str = "vfs",
        ns_setup: str = "",
        containers_conf: Path | None = None,
    ):
        self.workdir = workdir
        self.cgroup2 = LAYOUT.default_is_v2() if cgroup2 is None else cgroup2
        self.hooks_dir = hooks_dir
        self.runtime = runtime
        self.own_parent = cgroup_parent is None
        self.cgroup_parent = cgroup_parent or f"/{unique_name()}"
        self.podman = shutil.which(podman) or podman
        self.storage_driver = storage_driver
        self.ns_setup = ns_setup
        self.containers_conf = containers_conf
        self.rootfs = workdir / f"podman-rootfs-{self.cgroup_parent.strip('/').replace('/', '-')}"
        self.state = Path()
        self.containers: list[Container] = []
        self.cdi_specs: list[Path] = []
        self._ns: MountNamespace | None = None
        self._leftovers: Leftovers | None = None

    # --- lifecycle -----------------------------------------------------------------------

    def __enter__(self) -> PodmanHarness:
        try:
            self._leftovers = Leftovers(cgroups=["libpod_parent"], dirs=[CDI_DIR])
            self.state = short_tmpdir("capctl-pm.")
            runroot = self.state / "run"
            assert len(str(runroot)) <= RUNROOT_MAX, runroot
            if self.hooks_dir is None:
                self.hooks_dir = self.state / "hooks"
                self.hooks_dir.mkdir()
            make_rootfs(self.rootfs)
            if not self.cgroup2 and LAYOUT.v1_devices is None:
                raise RuntimeError(NO_V1)
            if self.cgroup2 or self.ns_setup:
                self._ns = MountNamespace(self.ns_setup, cgroup2=self.cgroup2).__enter__()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.state != Path() and self.state.exists():
            with contextlib.suppress(Exception):
                self.cmd("rm", "-a", "-f", "-t", "0", check=False, timeout=60)
        self.containers.clear()
        if self._ns is not None:
            self._ns.close()
            self._ns = None
        for path in cgroup_dirs(self.cgroup_parent):
            with contextlib.suppress(OSError, AssertionError):
                if self.own_parent:
                    remove_cgroup_tree(path)
                else:
                    remove_empty_cgroup(path)
        for spec in self.cdi_specs:
            with contextlib.suppress(OSError):
                spec.unlink()
        self.cdi_specs.clear()
        if self._leftovers is not None:
            self._leftovers.clean()
        if self.state != Path():
            # conmon runs "podman container cleanup" when a container exits, after rm has
            # returned; it writes the state directory again if that is removed first.
            stop_processes_naming(self.state)
            remove_tree(self.state)

    # --- commands ------------------------------------------------------------------------

    def ns_command(self, argv: Sequence[str]) -> list[str]:
        """*argv* to run where podman runs (inside the private namespace in cgroup2 mode)."""
        return self._ns.command(argv) if self._ns is not None else list(argv)

    def base_argv(self) -> list[str]:
        """``podman`` with the harness's global options."""
        conf = [] if self.containers_conf is None else [
            "env", f"CONTAINERS_CONF={self.containers_conf}"]
        return [
            *conf, self.podman,
            "--root", str(self.state / "root"),
            "--runroot", str(self.state / "run"),
            "--tmpdir", str(self.state / "tmp"),
            "--network-config-dir", str(self.state / "net"),
            "--storage-driver", self.storage_driver,
            "--events-backend", "none",
            "--runtime", self.runtime,
            "--runtime-flag", f"root={self.state / 'runtime'}",  # not runc's /run/runc
            "--cgroup-manager", "cgroupfs",
            "--hooks-dir", str(self.hooks_dir),
        ]  # fmt: skip

    def cmd(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Any podman subcommand with the harness's options (``podman.cmd("ps", "-a")``)."""
        return run_cmd(self.ns_command([*self.base_argv(), *args]), check=check, timeout=timeout)

    def run_argv(self, args: Sequence[str], extra: Sequence[str], *, detach: bool) -> list[str]:
        """The ``podman run`` arguments (after ``podman``) for *args* with *extra* options."""
        argv = ["run", "-d" if detach else "--rm", "--network", "none", *ULIMITS]
        argv += ["--cgroup-parent", self.cgroup_parent]
        if self.cgroup2:
            argv += ["--pids-limit", "0"]
        return [*argv, *extra, "--rootfs", str(self.rootfs), *args]

    # --- containers ----------------------------------------------------------------------

    def run(
        self,
        args: Sequence[str] = SLEEP,
        *,
        extra: Sequence[str] = (),
        name: str | None = None,
        timeout: float = 60,
    ) -> Container:
        """``podman run -d``: returns once the container process runs (pid filled in)."""
        name = name or unique_name("capctl-")
        res = self.cmd(*self.run_argv(args, ["--name", name, *extra], detach=True), timeout=timeout)
        cid = res.stdout.strip().splitlines()[-1]
        ctr = Container(cid, name, f"{self.cgroup_parent.rstrip('/')}/libpod-{cid}")
        self.containers.append(ctr)
        ctr.pid = int(self.inspect(ctr)["State"]["Pid"])
        return ctr

    def run_once(
        self, args: Sequence[str], *, extra: Sequence[str] = (), timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """``podman run --rm``, waiting for the process; its output and exit status."""
        return self.cmd(*self.run_argv(args, extra, detach=False), check=False, timeout=timeout)

    def inspect(self, ctr: Container) -> dict[str, Any]:
        data: list[dict[str, Any]] = json.loads(self.cmd("inspect", ctr.id).stdout)
        return data[0]

    def exec(
        self, ctr: Container, argv: Sequence[str], *, extra: Sequence[str] = (), check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        return self.cmd("exec", *extra, ctr.id, *argv, check=check)

    def probe(self, ctr: Container, path: str, mode: str = "r") -> str:
        """Open *path* inside *ctr*: ``"OK"``, ``"ENXIO"``, ``"EPERM"``, ``"ENOENT"``..."""
        return classify(self.exec(ctr, probe_argv(path, mode)), path)

    def probe_once(self, path: str, *, extra: Sequence[str] = (), mode: str = "r") -> str:
        """:meth:`probe` in a one-shot container started with *extra* options."""
        return classify(self.run_once(probe_argv(path, mode), extra=extra), path)

    def remove(self, ctr: Container) -> None:
        self.cmd("rm", "-f", "-t", "0", ctr.id, check=False)
        if ctr in self.containers:
            self.containers.remove(ctr)

    def cgroup_dirs(self, ctr: Container) -> list[Path]:
        """The container's cgroup directories as seen from the host."""
        if self.cgroup2:
            return [LAYOUT.device_dir(ctr.cgroup, True)]
        return cgroup_dirs(ctr.cgroup)

    def device_cgroup(self, ctr: Container) -> Path:
        """The host path of the container's device cgroup (v1 devices or cgroup2)."""
        return LAYOUT.device_dir(ctr.cgroup, self.cgroup2)

    # --- CDI -----------------------------------------------------------------------------

    def add_cdi_spec(self, spec: Mapping[str, Any]) -> Path:
        """Write *spec* to ``/etc/cdi/capctl-test-<hex>.json``; removed on exit."""
        CDI_DIR.mkdir(parents=True, exist_ok=True)
        path = CDI_DIR / f"{unique_name()}.json"
        self.cdi_specs.append(path)
        path.write_text(json.dumps(spec, indent=2))
        return path

"""A Docker harness for real-kernel end-to-end tests (Docker 20.10, its own dockerd).

    runtimes = {"wrapped": {"path": str(wrapper), "runtimeArgs": ["--debug"]}}
    with DockerHarness(tmp_path, runtimes=runtimes, path_prepend=[bin_dir]) as docker:
        ctr = docker.run(extra=["--runtime", "wrapped", "-v", f"{nodes}:/nodes", "-e", "A=1"])
        docker.probe(ctr, "/nodes/n1")                 # -> "ENXIO" / "EPERM" / "OK"
        docker.exec(ctr, ["/bin/busybox", "ls", "/"])  # CompletedProcess
        docker.probe_once("/dev/x", extra=["--device", f"{node}:/dev/x"])  # one-shot --rm
        docker.cmd("info")                             # any docker subcommand

* The daemon: ``dockerd`` with the flags of the lab notes (no iptables, no bridge, overlay2,
  ``native.cgroupdriver=cgroupfs``), its data root, exec root, socket, pid file and trust
  key in a short directory under /tmp, and a config file with *runtimes* (the daemon's
  ``runtimes`` object: ``{"NAME": {"path": ..., "runtimeArgs": [...]}}``), the harness's own
  ``cgroup-parent`` (``/capctl-test-<hex>``: a container's cgroup is ``<parent>/<id>``) and
  *config* merged in.  *path_prepend* goes before dockerd's PATH (dockerd registers its
  ``--gpus`` driver only if ``nvidia-container-runtime-hook`` is on its PATH when it
  starts); *env* adds to its environment (an OCI hook it adds gets all of it).
* The image: the busybox-static root filesystem imported as ``capctl-busybox`` (no
  registry).  Containers run with ``--network none`` and *extra* ``docker run`` options.
* The client is ``/usr/bin/docker`` (another docker may come first on PATH).
* Cleanup on exit, even after failures: ``docker rm -f`` of every container, dockerd
  stopped by its PID (SIGKILL after a grace period, then its containerd and shims, found
  by this harness's own socket path), left-over mounts unmounted, the cgroup parent
  removed, ``docker`` cgroups and ``/run/docker``/``/run/containerd`` directories removed
  when they appeared during the harness's life and are empty.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.support.clients import (
    SLEEP,
    Container,
    Leftovers,
    cgroup_dirs,
    classify,
    kill_pid,
    make_rootfs,
    pids_with_arg,
    probe_argv,
    remove_cgroup_tree,
    remove_tree,
    run_cmd,
    short_tmpdir,
    stop_process,
    unique_name,
    wait_for,
)
from tests.support.hostcg import LAYOUT

DOCKER = "/usr/bin/docker"
IMAGE = "capctl-busybox"
DAEMON_FLAGS = (
    "--iptables=false", "--ip6tables=false", "--bridge=none", "--ip-masq=false",
    "--storage-driver=overlay2", "--exec-opt", "native.cgroupdriver=cgroupfs",
)  # fmt: skip
SHARED_DIRS = (
    Path("/run/docker/plugins"),
    Path("/run/docker"),
    Path("/run/containerd/s"),
    Path("/run/containerd"),
)


class DockerHarness:
    """Runs its own dockerd and Docker containers for one test; see the module docstring."""

    def __init__(
        self,
        workdir: Path,
        *,
        runtimes: Mapping[str, Mapping[str, Any]] | None = None,
        path_prepend: Sequence[Path | str] | None = None,
        env: Mapping[str, str] | None = None,
        config: Mapping[str, Any] | None = None,
        dockerd: str = "dockerd",
        docker: str = DOCKER,
        start_timeout: float = 30,
    ):
        self.workdir = workdir
        self.runtimes = dict(runtimes or {})
        self.path_prepend = [str(p) for p in path_prepend or ()]
        self.env = dict(env or {})
        self.config = dict(config or {})
        self.dockerd = dockerd
        self.docker = docker
        self.start_timeout = start_timeout
        self.cgroup_parent = f"/{unique_name()}"
        self.rootfs = workdir / f"docker-rootfs-{self.cgroup_parent.strip('/')}"
        self.image = IMAGE
        self.state = Path()
        self.containers: list[Container] = []
        self.daemon: subprocess.Popen[bytes] | None = None
        self._leftovers: Leftovers | None = None

    # --- paths ---------------------------------------------------------------------------

    @property
    def socket(self) -> Path:
        return self.state / "docker.sock"

    @property
    def log(self) -> Path:
        """dockerd's (and its containerd's) output."""
        return self.state / "dockerd.log"

    # --- lifecycle -----------------------------------------------------------------------

    def __enter__(self) -> DockerHarness:
        try:
            self._leftovers = Leftovers(cgroups=["docker"], dirs=SHARED_DIRS)
            self.state = short_tmpdir("capctl-dk.")
            make_rootfs(self.rootfs)
            self._start_daemon()
            self.import_image(self.rootfs, self.image)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def daemon_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "deprecated-key-path": str(self.state / "key.json"),  # else /etc/docker/key.json
            "cgroup-parent": self.cgroup_parent,
            "shutdown-timeout": 1,
        }
        if self.runtimes:
            config["runtimes"] = {k: dict(v) for k, v in self.runtimes.items()}
        config.update(self.config)
        return config

    def _start_daemon(self) -> None:
        conf = self.state / "daemon.json"
        conf.write_text(json.dumps(self.daemon_config(), indent=2))
        env = dict(os.environ)
        env.update(self.env)
        env["PATH"] = os.pathsep.join([*self.path_prepend, env.get("PATH", os.defpath)])
        argv = [
            self.dockerd,
            "--config-file", str(conf),
            "--data-root", str(self.state / "data"),
            "--exec-root", str(self.state / "exec"),
            "-H", f"unix://{self.socket}",
            "--pidfile", str(self.state / "dockerd.pid"),
            *DAEMON_FLAGS,
        ]  # fmt: skip
        with self.log.open("wb") as out:
            self.daemon = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env, cwd=self.state
            )

        def ready() -> bool:
            assert self.daemon is not None
            if self.daemon.poll() is not None:
                raise RuntimeError(f"dockerd exited ({self.daemon.returncode}): {self._log_tail()}")
            if not self.socket.exists():
                return False
            return self.cmd("version", check=False, timeout=10).returncode == 0

        try:
            wait_for(ready, self.start_timeout, "dockerd")
        except RuntimeError as err:
            raise RuntimeError(f"{err}: {self._log_tail()}") from None

    def _log_tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def close(self) -> None:
        if self.daemon is not None and self.daemon.poll() is None:
            with contextlib.suppress(Exception):
                ids = self.cmd("ps", "-aq", check=False, timeout=20).stdout.split()
                if ids:
                    self.cmd("rm", "-f", *ids, check=False, timeout=60)
        self.containers.clear()
        if self.daemon is not None:
            stop_process(self.daemon, timeout=20)
            self.daemon = None
        if self.state != Path():
            # dockerd's containerd and the shims, if dockerd could not stop them.
            for pid in pids_with_arg(str(self.state / "exec")):
                kill_pid(pid, timeout=5)
        for path in cgroup_dirs(self.cgroup_parent):
            with contextlib.suppress(OSError, AssertionError):
                remove_cgroup_tree(path)
        if self._leftovers is not None:
            self._leftovers.clean()
        if self.state != Path():
            remove_tree(self.state)

    # --- commands ------------------------------------------------------------------------

    def cmd(
        self, *args: str, check: bool = True, timeout: float = 60, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Any docker subcommand against this harness's daemon (``docker.cmd("info")``)."""
        argv = [self.docker, "-H", f"unix://{self.socket}", *args]
        return run_cmd(argv, check=check, timeout=timeout, input=input)

    def import_image(self, rootfs: Path, name: str) -> None:
        """``tar -C ROOTFS -c . | docker import - NAME``."""
        argv = [self.docker, "-H", f"unix://{self.socket}", "import", "-", name]
        with subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE) as tar:
            res = subprocess.run(argv, stdin=tar.stdout, capture_output=True, text=True, timeout=60)
            assert tar.stdout is not None
            tar.stdout.close()
        if tar.returncode != 0 or res.returncode != 0:
            raise RuntimeError(f"docker import failed: {res.stderr.strip()}")

    def run_argv(
        self, args: Sequence[str], extra: Sequence[str], *, detach: bool, image: str | None = None
    ) -> list[str]:
        """The ``docker run`` arguments (after ``docker``) for *args* with *extra* options."""
        return [
            "run", "-d" if detach else "--rm", "--network", "none",
            *extra, image or self.image, *args,
        ]  # fmt: skip

    # --- containers ----------------------------------------------------------------------

    def run(
        self,
        args: Sequence[str] = SLEEP,
        *,
        extra: Sequence[str] = (),
        name: str | None = None,
        image: str | None = None,
        timeout: float = 60,
    ) -> Container:
        """``docker run -d``: returns once the container process runs (pid filled in).

        ``ctr.cgroup`` assumes the daemon's cgroup parent (no ``--cgroup-parent`` in *extra*).
        """
        name = name or unique_name("capctl-")
        argv = self.run_argv(args, ["--name", name, *extra], detach=True, image=image)
        cid = self.cmd(*argv, timeout=timeout).stdout.strip().splitlines()[-1]
        ctr = Container(cid, name, f"{self.cgroup_parent}/{cid}")
        self.containers.append(ctr)
        ctr.pid = int(self.inspect(ctr)["State"]["Pid"])
        return ctr

    def run_once(
        self,
        args: Sequence[str],
        *,
        extra: Sequence[str] = (),
        image: str | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """``docker run --rm``, waiting for the process; its output and exit status."""
        argv = self.run_argv(args, extra, detach=False, image=image)
        return self.cmd(*argv, check=False, timeout=timeout)

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
        self.cmd("rm", "-f", ctr.id, check=False)
        if ctr in self.containers:
            self.containers.remove(ctr)

    def cgroup_dirs(self, ctr: Container) -> list[Path]:
        """The container's cgroup directories as seen from the host."""
        return cgroup_dirs(ctr.cgroup)

    def device_cgroup(self, ctr: Container) -> Path:
        """The host path of the container's device cgroup (cgroup2 on a v2-only host, where the
        daemon uses it by itself; else v1 devices)."""
        return LAYOUT.device_dir(ctr.cgroup, LAYOUT.default_is_v2())

"""A containerd harness for real-kernel end-to-end tests (containerd 1.6 and ``ctr``).

    with ContainerdHarness(tmp_path) as cd:
        ctr = cd.run(extra=["--mount", f"type=bind,src={nodes},dst=/nodes,options=rbind:rw"])
        cd.probe(ctr, "/nodes/n1")                        # -> "ENXIO" / "EPERM" / "OK"
        cd.exec(ctr, ["/bin/busybox", "ls", "/"])         # CompletedProcess
        cd.probe_once("/nodes/n1", runc_binary=wrapper)   # one-shot --rm, another runtime
        spec = cd.default_spec()                          # ``ctr oci spec`` as a dict
        spec["hooks"] = {"prestart": [{"path": hook}]}
        cd.run(spec=spec)                                 # ``ctr run --config``

* The daemon: ``containerd`` with its own config (``root``, ``state``, gRPC and ttrpc
  sockets and the ``opt`` directory in a short directory under /tmp, the CRI plugin
  disabled), waited on until ``ctr version`` answers.
* Containers: ``ctr run --rootfs`` on a busybox-static root filesystem (made once per
  harness under *workdir*), each in its own cgroup ``/capctl-test-<hex>/<id>`` (``ctr
  run --cgroup``; ctr's default spec would put every container in ``/default``), with
  runc's state (``--runc-root``) and the IO FIFOs (``--fifo-dir``) under the state
  directory, *runc_binary* (per harness or per container) as ``--runc-binary``, and
  *extra* ``ctr run`` options (``--mount``, ``--env``, ``--device``, ``--annotation``,
  ``--cap-add``...).  ``spec=`` runs a full OCI spec instead (``ctr run --config``; the
  harness fills in ``root.path``, ``process.args`` and ``linux.cgroupsPath``).  ctr cannot
  add hooks on its command line: put them in such a spec.
* Cleanup on exit, even after failures: every task killed and deleted with its container,
  containerd stopped by its PID, left-over shims (found by this harness's own socket path)
  killed, left-over mounts unmounted, the cgroup parent removed, a ``default`` cgroup and
  ``/run/containerd`` directories removed when they appeared during the harness's life and
  are empty.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import uuid
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

SHARED_DIRS = (
    Path("/run/containerd/s"),
    Path("/run/containerd/fifo"),
    Path("/run/containerd"),
)

CONFIG = """\
version = 2
root = "{state}/root"
state = "{state}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{state}/containerd.sock"

[ttrpc]
  address = "{state}/containerd.sock.ttrpc"

[debug]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{state}/opt"
"""


class ContainerdHarness:
    """Runs its own containerd and ``ctr`` containers for one test; see the module docstring."""

    def __init__(
        self,
        workdir: Path,
        *,
        runc_binary: str | None = None,
        namespace: str = "capctl",
        containerd: str = "containerd",
        ctr: str = "ctr",
        start_timeout: float = 30,
    ):
        self.workdir = workdir
        self.runc_binary = runc_binary
        self.namespace = namespace
        self.containerd = shutil.which(containerd) or containerd
        self.ctr = shutil.which(ctr) or ctr
        self.start_timeout = start_timeout
        self.cgroup_parent = f"/{unique_name()}"
        self.rootfs = workdir / f"containerd-rootfs-{self.cgroup_parent.strip('/')}"
        self.state = Path()
        self.containers: list[Container] = []
        self.daemon: subprocess.Popen[bytes] | None = None
        self._leftovers: Leftovers | None = None

    # --- paths ---------------------------------------------------------------------------

    @property
    def socket(self) -> Path:
        return self.state / "containerd.sock"

    @property
    def log(self) -> Path:
        return self.state / "containerd.log"

    @property
    def runc_root(self) -> Path:
        return self.state / "runc"

    # --- lifecycle -----------------------------------------------------------------------

    def __enter__(self) -> ContainerdHarness:
        try:
            self._leftovers = Leftovers(cgroups=["default"], dirs=SHARED_DIRS)
            self.state = short_tmpdir("capctl-cd.")
            (self.state / "fifo").mkdir()
            make_rootfs(self.rootfs)
            self._start_daemon()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start_daemon(self) -> None:
        conf = self.state / "config.toml"
        conf.write_text(CONFIG.format(state=self.state))
        with self.log.open("wb") as out:
            self.daemon = subprocess.Popen(
                [self.containerd, "--config", str(conf)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, cwd=self.state,
            )  # fmt: skip

        def ready() -> bool:
            assert self.daemon is not None
            if self.daemon.poll() is not None:
                raise RuntimeError(
                    f"containerd exited ({self.daemon.returncode}): {self._log_tail()}"
                )
            if not self.socket.exists():
                return False
            return self.cmd("version", check=False, timeout=10).returncode == 0

        try:
            wait_for(ready, self.start_timeout, "containerd")
        except RuntimeError as err:
            raise RuntimeError(f"{err}: {self._log_tail()}") from None

    def _log_tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def close(self) -> None:
        if self.daemon is not None and self.daemon.poll() is None:
            for ctr in reversed(self.containers):
                with contextlib.suppress(Exception):
                    self.remove(ctr)
        self.containers.clear()
        if self.daemon is not None:
            stop_process(self.daemon, timeout=20)
            self.daemon = None
        if self.state != Path():
            for pid in pids_with_arg(str(self.socket)):  # shims: -address <socket>
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
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Any ctr subcommand against this harness's containerd (``cd.cmd("task", "ls")``)."""
        argv = [self.ctr, "--address", str(self.socket), "--namespace", self.namespace, *args]
        return run_cmd(argv, check=check, timeout=timeout)

    def default_spec(self) -> dict[str, Any]:
        """``ctr oci spec``: the spec ``ctr run`` starts from, for :meth:`run` ``spec=``."""
        spec: dict[str, Any] = json.loads(self.cmd("oci", "spec").stdout)
        return spec

    def _new(self, name: str | None) -> Container:
        cid = name or f"capctl-{uuid.uuid4().hex[:12]}"
        return Container(cid, cid, f"{self.cgroup_parent}/{cid}")

    def run_argv(
        self,
        ctr: Container,
        args: Sequence[str],
        extra: Sequence[str],
        *,
        detach: bool,
        runc_binary: str | None = None,
        config: Path | None = None,
    ) -> list[str]:
        """The ``ctr run`` arguments (after ``ctr``) for container *ctr*."""
        argv = ["run", "--fifo-dir", str(self.state / "fifo"), "--runc-root", str(self.runc_root)]
        argv += ["--detach", "--null-io"] if detach else ["--rm"]
        runc = runc_binary or self.runc_binary
        if runc:
            argv += ["--runc-binary", runc]
        if config is not None:
            return [*argv, *extra, "--config", str(config), ctr.id]
        argv += ["--cgroup", ctr.cgroup]
        if LAYOUT.default_is_v2() and not LAYOUT.v2_has("cpu"):
            # ctr's default 1024 shares become cpu.weight, which cgroup2 lacks when the cpu
            # controller is bound to a v1 hierarchy (scripts/v2only.sh on a hybrid host).
            argv += ["--cpu-shares", "0"]
        return [*argv, *extra, "--rootfs", str(self.rootfs), ctr.id, *args]

    def _write_spec(self, ctr: Container, spec: Mapping[str, Any], args: Sequence[str]) -> Path:
        config = json.loads(json.dumps(spec))
        config.setdefault("root", {})["path"] = str(self.rootfs)
        config["root"]["readonly"] = False
        config.setdefault("process", {})["args"] = list(args)
        config["process"]["terminal"] = False
        config.setdefault("linux", {})["cgroupsPath"] = ctr.cgroup
        path = self.state / f"{ctr.id}.json"
        path.write_text(json.dumps(config, indent=2))
        return path

    # --- containers ----------------------------------------------------------------------

    def run(
        self,
        args: Sequence[str] = SLEEP,
        *,
        extra: Sequence[str] = (),
        name: str | None = None,
        runc_binary: str | None = None,
        spec: Mapping[str, Any] | None = None,
        timeout: float = 60,
    ) -> Container:
        """``ctr run --detach``: returns once the task runs (pid filled in).

        *spec*: a full OCI spec (see :meth:`default_spec`) run with ``ctr run --config``.
        """
        ctr = self._new(name)
        config = self._write_spec(ctr, spec, args) if spec is not None else None
        self.containers.append(ctr)
        argv = self.run_argv(ctr, args, extra, detach=True, runc_binary=runc_binary, config=config)
        self.cmd(*argv, timeout=timeout)
        ctr.pid = self.task_pid(ctr)
        return ctr

    def run_once(
        self,
        args: Sequence[str],
        *,
        extra: Sequence[str] = (),
        runc_binary: str | None = None,
        spec: Mapping[str, Any] | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """``ctr run --rm``, waiting for the process; its output and exit status."""
        ctr = self._new(None)
        config = self._write_spec(ctr, spec, args) if spec is not None else None
        self.containers.append(ctr)
        argv = self.run_argv(ctr, args, extra, detach=False, runc_binary=runc_binary, config=config)
        res = self.cmd(*argv, check=False, timeout=timeout)
        self.containers.remove(ctr)
        return res

    def task_pid(self, ctr: Container) -> int:
        for line in self.cmd("task", "ls").stdout.splitlines()[1:]:
            fields = line.split()
            if fields and fields[0] == ctr.id:
                return int(fields[1])
        raise RuntimeError(f"no task {ctr.id}")

    def exec(
        self, ctr: Container, argv: Sequence[str], *, extra: Sequence[str] = (), check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        exec_id = f"e{uuid.uuid4().hex[:12]}"
        return self.cmd(
            "task", "exec", "--fifo-dir", str(self.state / "fifo"), "--exec-id", exec_id,
            *extra, ctr.id, *argv, check=check,
        )  # fmt: skip

    def probe(self, ctr: Container, path: str, mode: str = "r") -> str:
        """Open *path* inside *ctr*: ``"OK"``, ``"ENXIO"``, ``"EPERM"``, ``"ENOENT"``..."""
        return classify(self.exec(ctr, probe_argv(path, mode)), path)

    def probe_once(
        self,
        path: str,
        *,
        extra: Sequence[str] = (),
        mode: str = "r",
        runc_binary: str | None = None,
    ) -> str:
        """:meth:`probe` in a one-shot container started with *extra* options."""
        res = self.run_once(probe_argv(path, mode), extra=extra, runc_binary=runc_binary)
        return classify(res, path)

    def remove(self, ctr: Container) -> None:
        """Kill and delete the task, then delete the container."""
        self.cmd("task", "delete", "--force", ctr.id, check=False)
        self.cmd("container", "delete", ctr.id, check=False)
        if ctr in self.containers:
            self.containers.remove(ctr)

    def cgroup_dirs(self, ctr: Container) -> list[Path]:
        """The container's cgroup directories as seen from the host."""
        return cgroup_dirs(ctr.cgroup)

    def device_cgroup(self, ctr: Container) -> Path:
        """The host path of the container's device cgroup (cgroup2 on a v2-only host, where the
        daemon uses it by itself; else v1 devices)."""
        return LAYOUT.device_dir(ctr.cgroup, LAYOUT.default_is_v2())

"""A reusable runc harness for real-kernel end-to-end tests (cgroup v1 and cgroup v2).

    with RuncHarness(tmp_path, cgroup2=True) as runc:
        bundle = runc.bundle(mounts=[BindMount(nodes_dir, "/nodes")], env={"A": "1"})
        ctr = runc.run_detached(bundle)              # busybox sleep, detached
        runc.probe(ctr, "/nodes/n1")                  # -> "ENXIO" / "EPERM" / "OK"
        runc.exec(ctr, ["/bin/busybox", "ls", "/"])   # CompletedProcess

* Bundles: a busybox-static rootfs (``/bin/busybox`` plus applet links), ``config.json`` from
  ``runc spec`` with: ``linux.cgroupsPath`` = ``/capctl-test-<uuid>`` (so tests know the
  cgroup and cleanup can find it), extra bind mounts, env, capabilities, hooks, extra
  ``linux.devices`` / ``linux.resources.devices``, and a free-form ``edit`` callback.
* ``cgroup2=True``: runc uses the unified hierarchy.  On a hybrid host every runc command
  runs inside one private mount namespace (``unshare -m`` with private propagation) where
  cgroup2 is mounted on ``/sys/fs/cgroup``; seen from the host that cgroup is
  ``/sys/fs/cgroup/unified/<path>``.  On a v2-only host runc runs as it is.
  :meth:`RuncHarness.ns_command` prefixes any command to run where runc runs (the OCI
  hook and capctl then see what runc sees).  ``cgroup2=False``: the v1 devices hierarchy,
  which a v2-only host does not have (gate with ``tests/support/hostcg.py``); by default,
  what the host's clients use by themselves.
* Isolation: a private runc state root per harness.  Cleanup on exit, even after failures:
  ``runc delete -f`` for every container, removal of left-over cgroups, the namespace holder.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.cgroups import remove_cgroup
from tests.support.clients import MountNamespace, cgroup_dirs
from tests.support.hostcg import LAYOUT, NO_V1

BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "sleep", "cat", "ls", "echo", "true", "test", "stat")
SLEEP = ["/bin/busybox", "sleep", "3600"]


@dataclass(frozen=True)
class BindMount:
    source: Path
    destination: str
    readonly: bool = False

    def spec(self) -> dict[str, Any]:
        opts = ["rbind", "ro" if self.readonly else "rw"]
        return {
            "destination": self.destination,
            "type": "bind",
            "source": str(self.source),
            "options": opts,
        }


@dataclass
class Bundle:
    path: Path
    config: dict[str, Any]
    cgroup: str  # linux.cgroupsPath, e.g. "/capctl-test-..."

    def write(self) -> None:
        (self.path / "config.json").write_text(json.dumps(self.config, indent=2))


@dataclass
class Container:
    id: str
    bundle: Bundle
    pid: int = 0
    state: dict[str, Any] = field(default_factory=dict)


class RuncHarness:
    """Runs runc containers for one test; see the module docstring."""

    def __init__(self, workdir: Path, *, cgroup2: bool | None = None, runc: str = "runc"):
        self.workdir = workdir
        self.cgroup2 = LAYOUT.default_is_v2() if cgroup2 is None else cgroup2
        self.runc = shutil.which(runc) or runc
        self.state_root = workdir / "runc-state"
        self.containers: list[Container] = []
        self.bundles: list[Bundle] = []
        self._ns: MountNamespace | None = None

    # --- lifecycle -----------------------------------------------------------------------

    def __enter__(self) -> RuncHarness:
        if not self.cgroup2 and LAYOUT.v1_devices is None:
            raise RuntimeError(NO_V1)
        self.state_root.mkdir(parents=True, exist_ok=True)
        if self.cgroup2:
            self._ns = MountNamespace().__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for ctr in reversed(self.containers):
            with contextlib.suppress(Exception):
                self.delete(ctr)
        for bundle in self.bundles:
            for path in self.cgroup_dirs(bundle):
                with contextlib.suppress(Exception):
                    remove_cgroup(path)
        if self._ns is not None:
            self._ns.close()
            self._ns = None

    # --- commands ------------------------------------------------------------------------

    def ns_command(self, argv: Sequence[str]) -> list[str]:
        """*argv* to run where runc runs (inside the private namespace in cgroup2 mode)."""
        return self._ns.command(argv) if self._ns is not None else list(argv)

    def runc_cmd(
        self, *args: str, check: bool = True, timeout: float = 30, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        argv = self.ns_command([self.runc, "--root", str(self.state_root), *args])
        kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("capture_output", True)
        res = subprocess.run(argv, text=True, timeout=timeout, **kw)
        if check and res.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({res.returncode}): {res.stderr.strip()}")
        return res

    # --- bundles -------------------------------------------------------------------------

    def bundle(
        self,
        *,
        args: Sequence[str] = SLEEP,
        mounts: Sequence[BindMount] = (),
        env: Mapping[str, str] | None = None,
        capabilities: Sequence[str] | None = None,
        hooks: Mapping[str, list[dict[str, Any]]] | None = None,
        devices: Sequence[Mapping[str, Any]] = (),
        device_rules: Sequence[Mapping[str, Any]] = (),
        edit: Callable[[dict[str, Any]], None] | None = None,
    ) -> Bundle:
        """A new bundle directory; options map onto config.json (see the module doc).

        *capabilities*: names like ``CAP_SYS_ADMIN`` for every set (None keeps runc's default).
        *hooks*: the OCI ``hooks`` object (``{"prestart": [{"path": ..., "args": [...]}]}``).
        *devices*: ``linux.devices`` entries; *device_rules*: appended to
        ``linux.resources.devices`` (after runc spec's deny-all).
        """
        name = f"capctl-test-{uuid.uuid4().hex[:12]}"
        path = self.workdir / name
        rootfs = path / "rootfs"
        for sub in ("bin", "proc", "dev", "sys", "tmp"):
            (rootfs / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
        for applet in APPLETS:
            (rootfs / "bin" / applet).symlink_to("busybox")
        subprocess.run([self.runc, "spec", "--bundle", str(path)], check=True, capture_output=True)
        config: dict[str, Any] = json.loads((path / "config.json").read_text())
        config["process"]["terminal"] = False
        config["process"]["args"] = list(args)
        config["root"]["readonly"] = False
        if env:
            config["process"]["env"] += [f"{k}={v}" for k, v in env.items()]
        if capabilities is not None:
            config["process"]["capabilities"] = {
                s: list(capabilities) for s in ("bounding", "effective", "permitted")
            }
        if hooks:
            config["hooks"] = {k: list(v) for k, v in hooks.items()}
        config["mounts"] += [m.spec() for m in mounts]
        linux = config["linux"]
        linux["cgroupsPath"] = f"/{name}"
        if devices:
            linux.setdefault("devices", []).extend(dict(d) for d in devices)
        linux.setdefault("resources", {}).setdefault("devices", []).extend(
            dict(r) for r in device_rules
        )
        if edit:
            edit(config)
        bundle = Bundle(path, config, f"/{name}")
        bundle.write()
        self.bundles.append(bundle)
        return bundle

    def cgroup_dirs(self, bundle: Bundle) -> list[Path]:
        """The bundle's cgroup directories as seen from the host."""
        if self.cgroup2:
            return [LAYOUT.device_dir(bundle.cgroup, True)]
        return cgroup_dirs(bundle.cgroup)

    def device_cgroup(self, bundle: Bundle) -> Path:
        """The host path of the container's device cgroup (v1 devices or cgroup2)."""
        return LAYOUT.device_dir(bundle.cgroup, self.cgroup2)

    # --- containers ----------------------------------------------------------------------

    def _container(self, bundle: Bundle) -> Container:
        ctr = Container(f"capctl-{uuid.uuid4().hex[:12]}", bundle)
        self.containers.append(ctr)
        return ctr

    def refresh(self, ctr: Container) -> Container:
        ctr.state = json.loads(self.runc_cmd("state", ctr.id).stdout)
        ctr.pid = int(ctr.state.get("pid", 0))
        return ctr

    def _detached(self, verb: list[str], bundle: Bundle) -> Container:
        # The container inherits runc's stdio: give it a file, not a pipe we would wait on.
        ctr = self._container(bundle)
        log = bundle.path / f"{ctr.id}.log"
        with log.open("w") as out:
            res = self.runc_cmd(
                *verb, "--bundle", str(bundle.path), ctr.id,
                check=False, capture_output=False, stdout=out, stderr=out,
            )  # fmt: skip
        if res.returncode != 0:
            raise RuntimeError(f"runc {verb[0]} failed: {log.read_text().strip()}")
        return self.refresh(ctr)

    def run_detached(self, bundle: Bundle) -> Container:
        """``runc run --detach``: create and start; returns once the process runs."""
        return self._detached(["run", "--detach"], bundle)

    def create(self, bundle: Bundle) -> Container:
        """``runc create`` (prestart/createRuntime hooks run here); start with :meth:`start`."""
        return self._detached(["create"], bundle)

    def start(self, ctr: Container) -> Container:
        self.runc_cmd("start", ctr.id)
        return self.refresh(ctr)

    def exec(
        self, ctr: Container, argv: Sequence[str], *, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        return self.runc_cmd("exec", ctr.id, *argv, check=check)

    def probe(self, ctr: Container, path: str, mode: str = "r") -> str:
        """Open *path* inside the container: ``"OK"``, ``"ENXIO"``, ``"EPERM"``, ``"ENOENT"``..."""
        redirect = {"r": f"< {path}", "w": f"> {path}", "rw": f"<> {path}"}[mode]
        res = self.exec(ctr, ["/bin/busybox", "sh", "-c", f"exec 3{redirect}"])
        if res.returncode == 0:
            return "OK"
        err = res.stderr
        for name, text in (
            ("ENXIO", "No such device or address"),
            ("EPERM", "Operation not permitted"),
            ("ENOENT", "No such file or directory"),
            ("EACCES", "Permission denied"),
        ):
            if text in err:
                return name
        return f"?{res.returncode}:{err.strip()}"

    def delete(self, ctr: Container) -> None:
        self.runc_cmd("delete", "-f", ctr.id, check=False)
        if ctr in self.containers:
            self.containers.remove(ctr)

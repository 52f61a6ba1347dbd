"""capctl's DaemonSet pod under ``podman kube play``, on a simulated GPU node.

    node = SimNode(tmp_path)                             # driver, CDI, /opt, hooks.d dirs
    with KubePlay(tmp_path, node) as kube:               # image built offline, pod started
        kube.exec("watch", ["capctl", "health", ...])    # in the pod's main container
        kube.podman.run(extra=["--device", "capctl.io/mig=..."])   # a "host" container
        kube.stop()                                      # SIGTERM, as a deleted DaemonSet

No kubelet runs here, so the pod template of the DaemonSet (``deploy/kubernetes``, rendered
with its components by :mod:`tests.support.kustomize`) is run as a Pod by podman, which
takes its init container, hostPath, emptyDir and ConfigMap volumes, ConfigMap environment,
privileges and command as they are.  What is simulated:

* **The node** is a private mount namespace (:class:`tests.support.clients.MountNamespace`)
  in which podman, the pod and the "host" containers of the test all run, on the host's
  cgroup v1 hierarchies (podman 4.3 gives a pod's cgroup on a private cgroup2 mount a device
  program that refuses even ``/dev/null`` to the pod's containers).
  There the node's paths are the simulated node's directories: a tmpfs on ``/run`` with the
  simulated driver root (:mod:`capctl.simulated`) at ``/run/nvidia/driver`` (a containerized
  driver's root, the driver-container component) and ``/run/cdi`` (``/var/run/cdi``),
  ``/opt``, ``/usr/share/containers`` (a copy with ``oci/hooks.d``) and ``/etc/containerd``
  (with ``conf.d``) bound from the test's directory.  Paths the pod writes (the CDI spec, the hook definition, ``/opt/capctl``) and
  the paths in what it writes are the node's, and the test reads them in its directory.
* **The image** is built by ``podman build`` with no network from a wheelhouse
  (:func:`wheelhouse`) on a base imported from the Debian root the systemd tests already
  cache (:func:`tests.support.nspawn.ensure_rootfs`, which has ``python3``).
* **The pod's infra container** runs a busybox ``sleep`` image made here: podman's own pause
  image needs ``catatonit``, which Debian's podman 4.3 does not install.

Cleanup (also after failures): the pods, then :class:`~tests.support.podman.PodmanHarness`'s
own (containers, the namespace, cgroups, state); the pod's cgroup under ``libpod_parent``.

This module does not import capctl: it is the harness, not the code under test.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.support import kustomize, nspawn
from tests.support.clients import (
    cgroup_dirs,
    make_rootfs,
    remove_cgroup_tree,
    remove_empty_cgroup,
    run_cmd,
    unique_name,
)
from tests.support.podman import PodmanHarness

REPO = Path(__file__).resolve().parents[2]
IMAGE_DIR = REPO / "deploy" / "image"
IMAGE = "localhost/capctl:latest"  # what the kustomization's images: entry names
BASE_IMAGE = "localhost/capctl-base:bookworm"
PAUSE_IMAGE = "localhost/capctl-test-pause:latest"
#: Left out of the base image: documentation and caches nobody runs (a smaller import).
BASE_EXCLUDES = ("./usr/share/doc", "./usr/share/man", "./usr/share/locale", "./usr/share/info",
                 "./var/cache/apt", "./var/lib/apt/lists", "./usr/lib/python3.11/test")
DRIVER_ROOT = "/run/nvidia/driver"
CDI_DIR = "/var/run/cdi"
HOOKS_D = "/usr/share/containers/oci/hooks.d"
NVML = "usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1"
#: Where podman puts the conmon of every pod (cgroupfs manager).
CONMON_CGROUP = "/libpod_parent/conmon"


# --- the wheelhouse ---------------------------------------------------------------------------


def _dependencies() -> list[str]:
    """capctl's dependencies and its build backend (pip builds the wheel in isolation)."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    names = []
    for req in pyproject["project"]["dependencies"] + pyproject["build-system"]["requires"]:
        name = req
        for sep in "<>=!~ [;":
            name = name.split(sep)[0]
        names.append(name)
    return names


def _dependency_wheels() -> Path:
    """Wheels of capctl's dependencies and build backend at the tested versions
    (constraints.txt), built once
    into the test cache (keyed by constraints.txt) from the package index pip is set up with;
    later runs need no network."""
    constraints = (REPO / "constraints.txt").read_bytes()
    key = hashlib.sha256(constraints + " ".join(_dependencies()).encode()).hexdigest()[:16]
    cache = nspawn.cache_dir()
    done = cache / f"wheelhouse-{key}"
    if done.is_dir():
        return done
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / "wheelhouse.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.is_dir():
            return done
        build = Path(tempfile.mkdtemp(prefix="wheelhouse.tmp-", dir=cache))
        try:
            run_cmd([sys.executable, "-m", "pip", "wheel", "--quiet", "-c",
                     str(REPO / "constraints.txt"), "-w", str(build), *_dependencies()],
                    timeout=300)
            build.rename(done)
        except BaseException:
            shutil.rmtree(build, ignore_errors=True)
            raise
    return done


def wheelhouse(dest: Path) -> Path:
    """``dest`` with capctl's wheel, built from this checkout, and its dependencies'."""
    dest.mkdir(parents=True, exist_ok=True)
    deps = _dependency_wheels()
    for whl in deps.glob("*.whl"):
        if not whl.name.startswith("setuptools-"):
            shutil.copy2(whl, dest)
    src = dest.parent / "capctl-src"  # a copy of the tracked files: no build/ in the checkout
    files = run_cmd(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others",
                    "--exclude-standard"]).stdout.split("\0")
    for rel in filter(None, files):
        if (REPO / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, src / rel)
    run_cmd([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-index",
             "--find-links", str(deps), "-w", str(dest), str(src)], timeout=120)
    return dest


# --- the simulated node -----------------------------------------------------------------------


class SimNode:
    """A node's directories under ``tmp/node``, and the mounts that put them in place."""

    def __init__(self, tmp: Path):
        self.dir = tmp / "node"
        self.driver = self.dir / "driver"  # the simulated driver root (capctl.simulated)
        self.cdi = self.dir / "cdi"
        self.opt = self.dir / "opt"
        self.share = self.dir / "share-containers"
        self.containerd = self.dir / "etc-containerd"
        for d in (self.cdi, self.opt):
            d.mkdir(parents=True)
        # podman reads its defaults (containers.conf, seccomp.json) from here: keep them.
        # (/etc/containerd, bound over below, is there: scripts/setup.sh installs containerd.)
        shutil.copytree("/usr/share/containers", self.share, symlinks=True)
        self.hooks_d.mkdir(parents=True, exist_ok=True)
        self.containerd.mkdir()
        self.conf_d.mkdir()

    @property
    def conf_d(self) -> Path:
        return self.containerd / "conf.d"

    @property
    def hooks_d(self) -> Path:
        return self.share / "oci" / "hooks.d"

    @property
    def spec(self) -> Path:
        return self.cdi / "capctl.io-mig.json"

    def mounts(self) -> str:
        """Shell commands for the node's namespace."""
        return "; ".join([
            "mount -t tmpfs -o mode=0755 tmpfs /run",
            f"mkdir -p {DRIVER_ROOT} /run/cdi",
            f"mount --bind {self.driver} {DRIVER_ROOT}",
            f"mount --bind {self.cdi} /run/cdi",
            f"mount --bind {self.opt} /opt",
            f"mount --bind {self.share} /usr/share/containers",
            f"mount --bind {self.containerd} /etc/containerd",
        ])

    def leftovers(self) -> list[str]:
        """What is in the node's runtime places besides what was there before capctl."""
        found = [str(p.relative_to(self.dir))
                 for d in (self.cdi, self.opt, self.hooks_d, self.conf_d) for p in d.iterdir()]
        return sorted(found)


# --- the pod ----------------------------------------------------------------------------------


def pod_from(daemonset: dict[str, Any], name: str) -> dict[str, Any]:
    """The DaemonSet's pod template as a Pod (what the DaemonSet controller makes).

    With ``restartPolicy: Never``: podman 4.3 applies a pod's restart policy to its init
    containers too, so under the DaemonSet's ``Always`` the init container would run again
    and again, where the kubelet runs it once to completion."""
    template = daemonset["spec"]["template"]
    spec = {**template["spec"], "restartPolicy": "Never"}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": template["metadata"]["labels"]},
            "spec": spec}


def containers_conf(path: Path) -> Path:
    """What ``kube play`` takes only from containers.conf: the ulimits runc needs here, and
    the infra image."""
    path.write_text(
        "[containers]\n"
        'default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n'
        "[engine]\n"
        f'infra_image = "{PAUSE_IMAGE}"\n'
    )
    return path


class KubePlay:
    """See the module docstring.  ``config_extra``: TOML appended to the ConfigMap's
    capctl.toml (the simulated host has no NVML: a ``[host] topology`` snapshot)."""

    def __init__(self, tmp: Path, node: SimNode, components: Sequence[str], config_extra: str):
        self.tmp = tmp
        self.node = node
        self.components = components
        self.config_extra = config_extra
        self.name = unique_name("capctl-kube-")
        self.podman = PodmanHarness(
            tmp, cgroup2=False, hooks_dir=Path(HOOKS_D), storage_driver="overlay",
            ns_setup=node.mounts(), containers_conf=containers_conf(tmp / "containers.conf"))
        self.docs = kustomize.render(components)
        self.pod_cgroup: str | None = None

    def __enter__(self) -> KubePlay:
        self.podman.__enter__()
        try:
            self._build()
            self._play()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- build and play --------------------------------------------------------------------

    def _build(self) -> None:
        rootfs = nspawn.ensure_rootfs()
        excludes = [f"--exclude={e}" for e in BASE_EXCLUDES]
        tar = subprocess.Popen(["tar", "-C", str(rootfs), *excludes, "-c", "."],
                               stdout=subprocess.PIPE)
        try:
            subprocess.run(self.podman.ns_command([*self.podman.base_argv(), "import", "-",
                                                   BASE_IMAGE]),
                           stdin=tar.stdout, check=True, capture_output=True, timeout=300)
        finally:
            assert tar.stdout is not None
            tar.stdout.close()
            tar.wait()
        pause = make_rootfs(self.tmp / "pause-rootfs")
        tar_pause = run_cmd(["tar", "-C", str(pause), "-c", "-f", str(self.tmp / "pause.tar"),
                             "."])
        assert tar_pause.returncode == 0
        self.podman.cmd("import", "--change",
                        'ENTRYPOINT ["/bin/busybox", "sleep", "2147483647"]',
                        str(self.tmp / "pause.tar"), PAUSE_IMAGE)
        context = self.tmp / "image"
        shutil.copytree(IMAGE_DIR, context, ignore=shutil.ignore_patterns("wheelhouse"))
        wheelhouse(context / "wheelhouse")
        self.podman.cmd("build", "--layers=false", "--network=none", "--pull=never",
                        "--build-arg", f"BASE={BASE_IMAGE}", "--file",
                        str(context / "Containerfile"), "--tag", IMAGE, str(context),
                        timeout=600)

    def _play(self) -> None:
        configmap = kustomize.find(self.docs, "ConfigMap")
        configmap["data"]["capctl.toml"] += self.config_extra
        pod = pod_from(kustomize.find(self.docs, "DaemonSet"), self.name)
        (self.tmp / "configmap.yaml").write_text(yaml.safe_dump(configmap))
        (self.tmp / "pod.yaml").write_text(yaml.safe_dump(pod))
        self.podman.cmd("kube", "play", "--network", "none", "--configmap",
                        str(self.tmp / "configmap.yaml"), str(self.tmp / "pod.yaml"),
                        timeout=300)
        info = json.loads(self.podman.cmd("pod", "inspect", self.name).stdout)
        self.pod_cgroup = info.get("CgroupPath") or None  # /libpod_parent/<pod id>

    # --- using the pod ---------------------------------------------------------------------

    def container(self, name: str) -> str:
        return f"{self.name}-{name}"

    def exec(self, name: str, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        return self.podman.cmd("exec", self.container(name), *argv, check=False)

    def logs(self) -> str:
        out = []
        for name in ("install", "watch"):
            res = self.podman.cmd("logs", self.container(name), check=False)
            out.append(f"--- {name}:\n{res.stdout}{res.stderr}")
        return "\n".join(out)

    def running(self, name: str) -> bool:
        res = self.podman.cmd("inspect", "--format", "{{.State.Running}}", self.container(name),
                              check=False)
        return res.stdout.strip() == "true"

    def stop(self, timeout: int = 30) -> None:
        """``pod stop``: SIGTERM to each container's first process, as the kubelet does when
        the DaemonSet (or its pod) is deleted; SIGKILL after ``timeout``."""
        self.podman.cmd("pod", "stop", "-t", str(timeout), self.name, timeout=timeout + 30)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.podman.cmd("pod", "rm", "-f", "-t", "0", self.name, check=False, timeout=60)
        if self.pod_cgroup:
            for path in cgroup_dirs(self.pod_cgroup):
                with contextlib.suppress(OSError, AssertionError):
                    remove_cgroup_tree(path)
        for path in cgroup_dirs(CONMON_CGROUP):  # shared by every pod: only when empty
            with contextlib.suppress(OSError, AssertionError):
                remove_empty_cgroup(path)
        self.podman.close()  # and libpod_parent, when it appeared and is empty



"""The trust policy end to end: real runc containers on cgroup v1 and v2, the hook installed.

Each case is one container as a CRI runtime (or not) would create it; the kernel's answer to an
open() inside says what it got (ENXIO: the cgroup allows the node; EPERM: it denies it).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from capctl.simulated import mig_minor
from tests.support.hostcg import skip_unless
from tests.support.runc import BindMount, Container, RuncHarness

from .conftest import needs_runc
from .test_hook_e2e import GPU0, TOPO, World, mig
from .test_hook_security import no_dev_tmpfs

pytestmark = needs_runc

LIST = "/var/run/nvidia-container-devices"
CONTAINERD = {"io.kubernetes.cri.container-type": "container",
              "io.kubernetes.cri.sandbox-id": "0123abcd"}
CRIO = {"io.kubernetes.cri-o.ContainerType": "container", "io.kubernetes.cri-o.SandboxID": "x"}
PRIV = ["CAP_SYS_ADMIN", "CAP_KILL"]
PLAIN = ["CAP_KILL", "CAP_CHOWN"]
M = mig(GPU0, 2)
M_CAPS = (mig_minor(GPU0, M["gi"]), mig_minor(GPU0, M["gi"], M["ci"]))


@pytest.fixture(params=["v1", "v2"])
def world(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[World]:
    skip_unless(v1=request.param == "v1", v2=request.param == "v2")
    with RuncHarness(tmp_path, cgroup2=request.param == "v2") as runc:
        yield World(tmp_path, runc, "createRuntime")


def policy(world: World, text: str) -> None:
    world.config.write_text(world.config.read_text() + f"\n[requests]\n{text}\n")


def start(world: World, env: dict[str, str], *, annotations: dict[str, str] | None = None,
          caps: list[str] = PLAIN, mounts: list[dict[str, Any]] = ()) -> Container:  # type: ignore[assignment]
    def edit(config: dict[str, Any]) -> None:
        if annotations:
            config["annotations"] = dict(annotations)
        config["mounts"] += list(mounts)

    return world.runc.run_detached(world.bundle(env, capabilities=caps, edit=edit,
                                                others=list(M_CAPS)))


#: M's capability nodes, bind-mounted from the host into every container these tests start:
#: the kernel's verdict on them is the device cgroup's, whatever the hook made in /dev.
PROBES = [f"/other/cap{m}" for m in M_CAPS]


def has_mig(world: World, ctr: Container) -> bool:
    """Whether the container got M: its nodes exist and the cgroup allows them.  When it did
    not, the kernel refuses M's capabilities too (EPERM on the host's own nodes, bound in):
    no node and no grant, never a grant without the node."""
    r = world.runc
    paths = [*(f"/dev/nvidia-caps/nvidia-cap{m}" for m in M_CAPS), "/dev/nvidia0"]
    exists = [r.exec(ctr, ["/bin/busybox", "test", "-c", p]).returncode == 0 for p in paths]
    if not any(exists):
        assert [r.probe(ctr, p) for p in PROBES] == ["EPERM"] * len(PROBES)
        return False
    assert all(exists), exists
    assert [r.probe(ctr, p) for p in paths] == ["ENXIO"] * 3
    assert [r.probe(ctr, p) for p in PROBES] == ["ENXIO"] * len(PROBES)
    return True


def dev_mount(dev_id: str, source: str = "/dev/null") -> dict[str, Any]:
    return {"destination": f"{LIST}/{dev_id}", "type": "bind", "source": source,
            "options": ["rbind", "ro"]}


CASES = [
    # (id, [requests] lines, annotations, capabilities, gets the device?)
    ("auto, containerd, unprivileged", "", CONTAINERD, PLAIN, False),
    ("auto, containerd, privileged", "", CONTAINERD, PRIV, True),
    ("auto, cri-o, unprivileged", "", CRIO, PLAIN, False),
    ("auto, cri-o, privileged", "", CRIO, PRIV, True),
    ("auto, no cri runtime", "", None, PLAIN, True),
    ("any, containerd, unprivileged", 'envvar = "any"', CONTAINERD, PLAIN, True),
    ("privileged, no cri, unprivileged", 'envvar = "privileged"', None, PLAIN, False),
    ("privileged, no cri, privileged", 'envvar = "privileged"', None, PRIV, True),
]


@pytest.mark.parametrize(("lines", "annotations", "caps", "allowed"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_envvar_policy(world: World, lines: str, annotations: dict[str, str] | None,
                       caps: list[str], allowed: bool) -> None:
    if lines:
        policy(world, lines)
    ctr = start(world, {"NVIDIA_VISIBLE_DEVICES": M["uuid"]}, annotations=annotations, caps=caps)
    assert has_mig(world, ctr) is allowed
    if not allowed:  # ignored, with one line naming the policy; other nodes denied too
        assert "ignoring NVIDIA_VISIBLE_DEVICES" in world.log.read_text()
        assert world.runc.exec(ctr, ["/bin/busybox", "test", "-e", "/dev/nvidia-caps"]).returncode


def test_cuda_image_all_in_a_pod_gets_nothing(world: World) -> None:
    ctr = start(world, {"NVIDIA_VISIBLE_DEVICES": "all"}, annotations=CONTAINERD)
    assert has_mig(world, ctr) is False
    assert world.runc.exec(ctr, ["/bin/busybox", "test", "-e", "/dev/nvidiactl"]).returncode


def test_volume_mounts_list(world: World) -> None:
    ctr = start(world, {"NVIDIA_VISIBLE_DEVICES": LIST}, annotations=CONTAINERD,
                mounts=[dev_mount(M["uuid"])])
    assert has_mig(world, ctr) is True
    other = mig(GPU0, 3)
    assert world.runc.exec(ctr, ["/bin/busybox", "ls", "/dev/nvidia-caps"]).stdout.split() == [
        f"nvidia-cap{m}" for m in sorted(M_CAPS)]
    assert other["uuid"] not in world.log.read_text()


def test_volume_mounts_list_forged_source_ignored(world: World, tmp_path: Path) -> None:
    forged = tmp_path / "forged"
    forged.write_text("")
    ctr = start(world, {"NVIDIA_VISIBLE_DEVICES": LIST}, annotations=CONTAINERD,
                mounts=[dev_mount(M["uuid"], str(forged))])
    assert has_mig(world, ctr) is False
    assert f"ignoring mount(s) {LIST}/{M['uuid']}" in world.log.read_text()


def test_volume_mounts_off(world: World) -> None:
    policy(world, "volume_mounts = false")
    ctr = start(world, {"NVIDIA_VISIBLE_DEVICES": LIST}, annotations=CONTAINERD,
                mounts=[dev_mount(M["uuid"])])
    assert has_mig(world, ctr) is False
    assert "volume_mounts = false" in world.log.read_text()


@pytest.mark.parametrize("which", ["CONFIG", "MONITOR"])
def test_mig_admin_whole_gpu_and_mig_devices(world: World, which: str) -> None:
    env = {"NVIDIA_VISIBLE_DEVICES": str(GPU0["index"]), f"NVIDIA_MIG_{which}_DEVICES": "all"}
    ctr = start(world, env, annotations=CONTAINERD, caps=PRIV)
    fixed = 1 if which == "CONFIG" else 2
    assert world.runc.probe(ctr, f"/dev/nvidia-caps/nvidia-cap{fixed}") == "ENXIO"
    assert world.runc.probe(ctr, f"/dev/nvidia-caps/nvidia-cap{mig_minor(GPU0, 0)}") == "ENXIO"
    env["NVIDIA_VISIBLE_DEVICES"] = f"{GPU0['index']},{M['uuid']}"
    with pytest.raises(RuntimeError, match="mig-config needs whole GPUs visible"):
        start(world, env, annotations=CONTAINERD, caps=PRIV)


def test_mig_admin_non_mig_gpu_gets_no_caps(world: World) -> None:
    plain = next(g for g in TOPO["gpus"] if not g["mig_enabled"])
    env = {"NVIDIA_VISIBLE_DEVICES": plain["pci_bus_id"][4:], "NVIDIA_MIG_CONFIG_DEVICES": "all"}
    ctr = start(world, env, caps=PRIV)
    assert world.runc.probe(ctr, f"/dev/nvidia{plain['minor']}", "rw") == "ENXIO"
    assert world.runc.exec(ctr, ["/bin/busybox", "test", "-e", "/dev/nvidia-caps"]).returncode


# --- user namespaces ----------------------------------------------------------------------------

USERNS_BASE = 200000


def in_userns(config: dict[str, Any]) -> None:
    linux = config["linux"]
    linux["namespaces"].append({"type": "user"})
    linux["uidMappings"] = [{"containerID": 0, "hostID": USERNS_BASE, "size": 65536}]
    linux["gidMappings"] = [{"containerID": 0, "hostID": USERNS_BASE, "size": 65536}]


@pytest.fixture(params=["v1", "v2"])
def userns_world(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[World]:
    skip_unless(v1=request.param == "v1", v2=request.param == "v2")
    # The container's root (host uid USERNS_BASE) must reach its rootfs: a work directory
    # that others may traverse (pytest's are 0700).
    work = Path(tempfile.mkdtemp(prefix="capctl-userns-", dir="/tmp"))
    try:
        work.chmod(0o711)
        with RuncHarness(work, cgroup2=request.param == "v2") as runc:
            yield World(tmp_path, runc, "createRuntime")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def userns_bundle(world: World, env: dict[str, str], caps: list[str]) -> Any:
    b = world.bundle(env, capabilities=caps, edit=in_userns, others=list(M_CAPS))
    for dirpath, dirnames, filenames in os.walk(b.path / "rootfs"):
        for name in [*dirnames, *filenames]:
            os.chown(os.path.join(dirpath, name), USERNS_BASE, USERNS_BASE,
                     follow_symlinks=False)
    os.chown(b.path / "rootfs", USERNS_BASE, USERNS_BASE)
    b.path.chmod(0o711)
    return b


def test_user_namespace_gets_nodes_by_bind_mount(userns_world: World) -> None:
    world = userns_world
    b = userns_bundle(world, {"NVIDIA_VISIBLE_DEVICES": M["uuid"]}, PLAIN)
    ctr = world.runc.run_detached(b)
    assert has_mig(world, ctr) is True
    mounts = world.runc.exec(ctr, ["/bin/busybox", "cat", "/proc/self/mountinfo"]).stdout
    for minor in M_CAPS:
        line = next(x for x in mounts.splitlines()
                    if x.split()[4] == f"/dev/nvidia-caps/nvidia-cap{minor}")  # mount point
        assert "nosuid" in line and "noexec" in line, line
    assert "bind-mounted" in world.log.read_text()


def test_user_namespace_sys_admin_is_not_privileged(userns_world: World) -> None:
    world = userns_world
    policy(world, 'envvar = "privileged"')
    b = userns_bundle(world, {"NVIDIA_VISIBLE_DEVICES": M["uuid"]}, PRIV)
    ctr = world.runc.run_detached(b)
    assert has_mig(world, ctr) is False
    env = {"NVIDIA_VISIBLE_DEVICES": "0", "NVIDIA_MIG_CONFIG_DEVICES": "all"}
    with pytest.raises(RuntimeError, match="needs a privileged container"):
        world.runc.run_detached(userns_bundle(world, env, PRIV))


# --- never change what the hook did not make ----------------------------------------------------


def facts(directory: Path) -> dict[str, tuple[object, ...]]:
    """Inode, mode, owner, rdev and ACL of every entry of ``directory``."""
    out: dict[str, tuple[object, ...]] = {}
    for name in sorted(os.listdir(directory)):
        st = (directory / name).lstat()
        try:
            acl: bytes | None = os.getxattr(directory / name, "system.posix_acl_access",
                                            follow_symlinks=False)
        except OSError:
            acl = None
        out[name] = (st.st_ino, st.st_mode, st.st_uid, st.st_gid, st.st_rdev, acl)
    return out


def test_host_nvidia_caps_bind_mounted_rw_is_refused(world: World) -> None:
    host_caps = world.root / "dev/nvidia-caps"
    minor = M_CAPS[0]
    granted = subprocess.run(
        [sys.executable, "-m", "capctl", "--root", str(world.root), "--config",
         str(world.config), "grant", f"gpu{GPU0['minor']}/gi{M['gi']}/access", "--user",
         "nobody"], capture_output=True, text=True)
    assert granted.returncode == 0, granted.stderr
    before = facts(host_caps)
    assert before[f"nvidia-cap{minor}"][5] is not None  # the grant's ACL
    b = world.runc.bundle(env={"NVIDIA_VISIBLE_DEVICES": M["uuid"]}, hooks=world.hook(),
                          mounts=[BindMount(host_caps, "/dev/nvidia-caps")])
    with pytest.raises(RuntimeError, match="is a host directory") as exc:
        world.runc.run_detached(b)
    assert "/dev/nvidia-caps" in str(exc.value)
    assert facts(host_caps) == before


def test_existing_correct_node_left_alone_wrong_one_refused(world: World) -> None:
    b = world.bundle({"NVIDIA_VISIBLE_DEVICES": M["uuid"]}, edit=no_dev_tmpfs)
    dev = b.path / "rootfs/dev"
    host = os.lstat(world.root / "dev/nvidia0") if (world.root / "dev/nvidia0").exists() else None
    mode = stat.S_IMODE(host.st_mode) if host else 0o666
    os.mknod(dev / "nvidia0", stat.S_IFCHR | mode, os.makedev(195, 0))
    os.chmod(dev / "nvidia0", mode)
    ino = (dev / "nvidia0").lstat().st_ino
    ctr = world.runc.run_detached(b)
    assert (dev / "nvidia0").lstat().st_ino == ino  # not replaced
    assert world.runc.probe(ctr, "/dev/nvidia0", "rw") == "ENXIO"
    world.runc.delete(ctr)
    # The same node with another mode: refused, named, and left as it was.
    b = world.bundle({"NVIDIA_VISIBLE_DEVICES": M["uuid"]}, edit=no_dev_tmpfs)
    dev = b.path / "rootfs/dev"
    os.mknod(dev / "nvidia0", stat.S_IFCHR | 0o600, os.makedev(195, 0))
    os.chmod(dev / "nvidia0", 0o600)
    ino = (dev / "nvidia0").lstat().st_ino
    with pytest.raises(RuntimeError, match=r"/dev/nvidia0: mode 0600, want") as exc:
        world.runc.run_detached(b)
    assert "does not replace it" in str(exc.value)
    st = (dev / "nvidia0").lstat()
    assert (st.st_ino, stat.S_IMODE(st.st_mode)) == (ino, 0o600)
    assert not (dev / "nvidia-caps").exists()  # nothing else made, or it was rolled back


def test_user_namespace_failure_undoes_the_bind_mounts(userns_world: World) -> None:
    world = userns_world
    b = world.bundle({"NVIDIA_VISIBLE_DEVICES": M["uuid"]}, capabilities=PLAIN,
                     edit=lambda c: (in_userns(c), no_dev_tmpfs(c)))
    dev = b.path / "rootfs/dev"
    (dev / "nvidia-caps").mkdir()
    (dev / "nvidia-caps" / f"nvidia-cap{M_CAPS[1]}").write_text("planted\n")  # fails last
    for dirpath, dirnames, filenames in os.walk(b.path / "rootfs"):
        for name in [*dirnames, *filenames]:
            os.chown(os.path.join(dirpath, name), USERNS_BASE, USERNS_BASE,
                     follow_symlinks=False)
    os.chown(b.path / "rootfs", USERNS_BASE, USERNS_BASE)
    b.path.chmod(0o711)
    with pytest.raises(RuntimeError, match=rf"nvidia-cap{M_CAPS[1]}: is a regular file"):
        world.runc.run_detached(b)
    # The GPU nodes and the first capability were bind-mounted, then unmounted and removed.
    assert sorted(n for n in os.listdir(dev) if n.startswith("nvidia")) == ["nvidia-caps"]
    assert os.listdir(dev / "nvidia-caps") == [f"nvidia-cap{M_CAPS[1]}"]
    log = world.log.read_text()
    assert "rolled back" in log and "rollback errors" not in log, log

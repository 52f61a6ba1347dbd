"""The OCI hook against hostile images, hostile requests, hostile input and hostile environments.

Real runc containers on the host's cgroup v1 hierarchy (the cases are not cgroup-version
specific).  Containers without a ``/dev`` tmpfs use the image's own ``dev`` directory, so what
the hook does there is visible from the host and symlinks planted by the image are live.  Every
case checks the precise outcome: the error names the path/field/variable, and nothing outside
the container is created, chmod-ed or chown-ed (``lstat`` snapshots before/after).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from capctl.simulated import mig_minor
from tests.support.runc import Bundle, Container, RuncHarness
from tests.test_hook_e2e import GPU0, World, mig

from .conftest import needs_runc

pytestmark = needs_runc

DEV = mig(GPU0, 2)  # gi 9, ci 0
GI, CI = mig_minor(GPU0, DEV["gi"]), mig_minor(GPU0, DEV["gi"], DEV["ci"])
REQUEST = {"NVIDIA_VISIBLE_DEVICES": DEV["uuid"]}
NOBODY = 65534
GPU_NODES = ("nvidia0", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("hooksec")
    with RuncHarness(tmp) as runc:
        yield World(tmp, runc, "createRuntime")


@pytest.fixture
def host_dir(tmp_path: Path) -> Iterator[Path]:
    """A host directory outside every container (the target of planted links); removed after."""
    path = tmp_path / "host-target"
    path.mkdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def no_dev_tmpfs(config: dict[str, Any]) -> None:
    """runc then uses the rootfs's own ``dev`` directory (its default nodes go there)."""
    config["mounts"] = [m for m in config["mounts"] if m["destination"] != "/dev"]


def snapshot(path: Path) -> dict[str, tuple[Any, ...]]:
    """``lstat`` facts (type, mode, owner, rdev, size, content or link target) of a tree."""
    out: dict[str, tuple[Any, ...]] = {}

    def visit(p: Path, rel: str) -> None:
        st = p.lstat()
        extra: Any = None
        if stat.S_ISLNK(st.st_mode):
            extra = os.readlink(p)
        elif stat.S_ISREG(st.st_mode):
            extra = p.read_bytes()
        out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                    st.st_rdev, extra)  # fmt: skip
        if stat.S_ISDIR(st.st_mode):
            for child in sorted(os.listdir(p)):
                visit(p / child, f"{rel}/{child}")

    visit(path, ".")
    return out


def failed_start(world: World, bundle: Bundle) -> tuple[str, Container]:
    """Start *bundle*, which must fail; the error text and the (gone) container."""
    with pytest.raises(RuntimeError) as exc:
        world.runc.run_detached(bundle)
    message = str(exc.value)
    assert "capctl: error:" in message, message
    return message, world.runc.containers[-1]


def log_of(world: World, ctr: Container) -> list[str]:
    return [line for line in world.log.read_text().splitlines() if f"container {ctr.id}:" in line]


def nvidia_entries(rootfs: Path) -> list[str]:
    return sorted(n for n in os.listdir(rootfs / "dev") if n.startswith("nvidia"))


# --- symlinks planted in the image's /dev -------------------------------------------------


def test_runc_starts_a_container_without_dev_tmpfs(world: World) -> None:
    b = world.bundle(REQUEST, edit=no_dev_tmpfs)
    ctr = world.runc.run_detached(b)
    assert world.runc.probe(ctr, f"/dev/nvidia-caps/nvidia-cap{CI}") == "ENXIO"
    # No tmpfs: the nodes are in the image's own dev directory, seen from the host too.
    assert stat.S_ISCHR((b.path / f"rootfs/dev/nvidia-caps/nvidia-cap{CI}").lstat().st_mode)
    world.runc.delete(ctr)


@pytest.mark.parametrize("at", ["/dev/nvidia-caps", "/dev"])
def test_host_directory_mounted_at_dev_is_refused(world: World, tmp_path: Path, at: str) -> None:
    # Any host directory (a volume, an emptyDir), not only the host's own /dev: nodes made in
    # it would outlive the container, open to every host user who can reach it.
    volume = tmp_path / f"volume{at.replace('/', '-')}"
    volume.mkdir()
    volume.chmod(0o777)

    def edit(config: dict[str, Any]) -> None:
        config["mounts"].append({"destination": at, "type": "bind", "source": str(volume),
                                 "options": ["rbind", "rw"]})

    b = world.bundle(REQUEST, edit=edit)
    message, _ctr = failed_start(world, b)
    assert f"{at}: is a bind mount of the host directory" in message, message
    assert not any(p.name.startswith("nvidia") for p in volume.rglob("*"))


def test_dev_is_a_symlink_to_a_host_dir(world: World, host_dir: Path) -> None:
    # runc itself (not capctl) writes its /dev symlinks through a symlinked rootfs dev when
    # there is no /dev mount; it ignores EEXIST, so pre-made links keep the target unchanged
    # by runc and any change in it would be capctl's.
    for name, target in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ):
        (host_dir / name).symlink_to(target)
    os.chown(host_dir, NOBODY, NOBODY)
    host_dir.chmod(0o700)
    b = world.bundle(REQUEST, edit=no_dev_tmpfs)
    rootfs = b.path / "rootfs"
    (rootfs / "dev").rmdir()
    (rootfs / "dev").symlink_to(host_dir)
    before = snapshot(host_dir)
    message, ctr = failed_start(world, b)
    assert f"{rootfs}/dev: is a symlink" in message, message
    assert snapshot(host_dir) == before
    assert (rootfs / "dev").is_symlink()
    lines = log_of(world, ctr)
    assert any("rolled back" in line for line in lines), lines


def test_nvidia_caps_is_a_symlink_to_a_host_dir(world: World, host_dir: Path) -> None:
    os.chown(host_dir, NOBODY, NOBODY)
    host_dir.chmod(0o700)
    b = world.bundle(REQUEST, edit=no_dev_tmpfs)
    rootfs = b.path / "rootfs"
    (rootfs / "dev/nvidia-caps").symlink_to(host_dir)
    before = snapshot(host_dir)
    message, ctr = failed_start(world, b)
    assert f"{rootfs}/dev/nvidia-caps: is a symlink" in message, message
    assert snapshot(host_dir) == before == {".": (stat.S_IFDIR, 0o700, NOBODY, NOBODY, 0, None)}
    # The GPU nodes made before the refusal were rolled back with the grant.
    assert nvidia_entries(rootfs) == ["nvidia-caps"]
    assert (rootfs / "dev/nvidia-caps").is_symlink()
    assert any("rolled back" in line for line in log_of(world, ctr))


@pytest.mark.parametrize("absolute", [True, False], ids=["absolute-link", "relative-link"])
def test_nvidia0_is_a_symlink_to_a_host_file(world: World, host_dir: Path, absolute: bool) -> None:
    secret = host_dir / "secret"
    secret.write_bytes(b"host secret\n")
    os.chown(secret, NOBODY, NOBODY)
    secret.chmod(0o600)
    b = world.bundle(REQUEST, edit=no_dev_tmpfs)
    rootfs = b.path / "rootfs"
    link = rootfs / "dev/nvidia0"
    link.symlink_to(secret if absolute else os.path.relpath(secret, link.parent))
    assert link.resolve() == secret  # the link does reach the host file from the host
    before = snapshot(host_dir)
    message, _ctr = failed_start(world, b)
    # The hook never replaces what it did not make: the start fails naming the path, the
    # link is still a link and the host file is untouched.
    assert f"{rootfs}/dev/nvidia0: is a symlink" in message, message
    assert snapshot(host_dir) == before
    assert link.is_symlink()


# --- hostile tokens in NVIDIA_VISIBLE_DEVICES ---------------------------------------------

TOKENS: list[tuple[str, str, list[str]]] = [
    ("dotdot-path", "../../etc/passwd", ["'../../etc/passwd'", "path"]),
    ("mig-dotdot", "MIG-../x", ["'MIG-../x'", "path"]),
    ("overlong", "GPU-" + "f" * 4996, ["'GPU-ffff", "longer than"]),
    # The whole value is bounded before it is split: the error quotes the value's start.
    (
        "overlong-in-list",
        f"{DEV['uuid']},MIG-" + "a" * 4996,
        [f"'{DEV['uuid'][:30]}", "longer than 4096"],
    ),
    ("control-char", "MIG-bad\x1btok", ["MIG-bad", "x1btok"]),
    ("newline", "0:0\nMIG-x", ["0:0", "nMIG-x"]),
]


@pytest.mark.parametrize(("token", "needles"), [t[1:] for t in TOKENS], ids=[t[0] for t in TOKENS])
def test_hostile_token_aborts_start(world: World, token: str, needles: list[str]) -> None:
    b = world.bundle({"NVIDIA_VISIBLE_DEVICES": token}, edit=no_dev_tmpfs)
    rootfs = b.path / "rootfs"
    message, ctr = failed_start(world, b)
    for needle in needles:
        assert needle in message, message
    assert "\x1b" not in message and len(message) < 2000, message
    assert nvidia_entries(rootfs) == []
    lines = log_of(world, ctr)
    assert lines and "error:" in lines[-1]
    assert not any("allowed" in line or "nodes:" in line for line in lines)


# --- the hook invoked directly with crafted stdin -----------------------------------------


def direct(world: World, stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    argv = world.hook()[world.stage][0]["args"]
    return subprocess.run(
        argv,
        input=stdin,
        capture_output=True,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        timeout=30,
    )


def state_for(bundle: Path | str, *, pid: int | None = None, status: str = "creating") -> bytes:
    obj = {"ociVersion": "1.0.2", "id": "ctr-direct", "status": status}
    obj |= {"pid": os.getpid() if pid is None else pid, "bundle": str(bundle)}
    return json.dumps(obj).encode()


def dead_pid() -> int:
    proc = subprocess.Popen(["/bin/true"])
    proc.wait()
    assert not os.path.exists(f"/proc/{proc.pid}")
    return proc.pid


def _missing_config(b: Bundle) -> tuple[bytes, str]:
    (b.path / "config.json").unlink()
    return state_for(b.path), f"{b.path}/config.json: cannot open"


def _dead_pid(b: Bundle) -> tuple[bytes, str]:
    pid = dead_pid()
    return state_for(b.path, pid=pid), f"process {pid} is gone"


#: (name, stdin maker returning (stdin, a needle that depends on it), fixed needles)
DIRECT: list[tuple[str, Callable[[Bundle], tuple[bytes, str]], list[str]]] = [
    ("malformed-json", lambda b: (b'{"id": "x", ', ""), ["container state", "not valid JSON"]),
    ("not-an-object", lambda b: (b"[1, 2]", ""), ["container state", "JSON object"]),
    (
        "huge-state",
        lambda b: (b"x" * (10 << 20), ""),
        ["container state", "larger than 65536 bytes"],
    ),
    ("dead-pid", _dead_pid, []),
    ("missing-config", _missing_config, []),
    ("stage-running", lambda b: (state_for(b.path, status="running"), ""), ["status 'running'"]),
    ("relative-bundle", lambda b: (state_for("rel/bundle"), ""), ["bundle 'rel/bundle'"]),
]


@pytest.mark.parametrize(
    ("make_stdin", "needles"), [d[1:] for d in DIRECT], ids=[d[0] for d in DIRECT]
)
def test_direct_invocation_fails_closed(
    world: World, make_stdin: Callable[[Bundle], bytes], needles: list[str]
) -> None:
    b = world.bundle(REQUEST, edit=no_dev_tmpfs)
    rootfs = b.path / "rootfs"
    stdin, needle = make_stdin(b)
    needles = [*needles, needle] if needle else needles
    before = snapshot(rootfs)
    res = direct(world, stdin)  # within direct()'s timeout: a hang fails, no timing assert
    err = res.stderr.decode()
    assert res.returncode == 1, err
    assert res.stdout == b""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("capctl: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert snapshot(rootfs) == before


# --- LD_PRELOAD / PYTHONPATH --------------------------------------------------------------


@pytest.fixture
def injectors(tmp_path: Path) -> Iterator[tuple[Path, Path, Path]]:
    """(PYTHONPATH dir with a marker-writing sitecustomize, LD_PRELOAD library, marker)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("needs a C compiler for the LD_PRELOAD library")
    marker = tmp_path / "injected-marker"
    pydir = tmp_path / "pyinject"
    pydir.mkdir()
    (pydir / "sitecustomize.py").write_text(f"open({str(marker)!r}, 'a').write('python\\n')\n")
    src = tmp_path / "inject.c"
    src.write_text(
        "#include <stdio.h>\n"
        "__attribute__((constructor)) static void inject(void) {\n"
        f'  FILE *f = fopen("{marker}", "a"); if (f) {{ fputs("preload\\n", f); fclose(f); }}\n'
        "}\n"
    )
    lib = tmp_path / "inject.so"
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    # Both injectors work: the tests below can fail.
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(pydir), "LD_PRELOAD": str(lib)}
    subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)
    assert marker.read_text().splitlines() == ["preload", "python"]
    marker.unlink()
    yield pydir, lib, marker
    shutil.rmtree(pydir, ignore_errors=True)
    for p in (src, lib, marker):
        p.unlink(missing_ok=True)


def test_container_env_injectors_have_no_effect(
    world: World, injectors: tuple[Path, Path, Path]
) -> None:
    pydir, lib, marker = injectors
    env = {**REQUEST, "LD_PRELOAD": str(lib), "PYTHONPATH": str(pydir), "PYTHONHOME": "/x"}
    ctr = world.runc.run_detached(world.bundle(env))
    assert world.runc.probe(ctr, f"/dev/nvidia-caps/nvidia-cap{GI}") == "ENXIO"
    assert world.runc.probe(ctr, "/dev/nvidia0", "rw") == "ENXIO"
    assert not marker.exists()
    assert any("nodes: created" in line for line in log_of(world, ctr))
    world.runc.delete(ctr)


@pytest.mark.parametrize(
    ("names", "refused"),
    [(["LD_PRELOAD"], ["LD_PRELOAD"]),
     (["LD_LIBRARY_PATH", "PYTHONPATH"], ["LD_LIBRARY_PATH"])],
    ids=["ld-preload", "ld-library-path+pythonpath"],
)
def test_hook_env_injectors_are_refused(
    world: World, injectors: tuple[Path, Path, Path], names: list[str], refused: list[str]
) -> None:
    pydir, _lib, marker = injectors
    values = {
        "PYTHONPATH": str(pydir),
        # The dynamic loader acts before any hook code could: a real library here would be
        # loaded, so only the definition's explicit env protects; the hook detects and refuses.
        "LD_PRELOAD": "/nonexistent/capctl-test-preload.so",
        "LD_LIBRARY_PATH": str(pydir),
    }
    hooks = world.hook(extra_env=[f"{n}={values[n]}" for n in names])
    b = world.bundle(REQUEST, hooks=hooks, edit=no_dev_tmpfs)
    message, _ctr = failed_start(world, b)
    assert f"refusing to run with {', '.join(refused)} in the hook's environment" in message
    assert not marker.exists()  # -I: PYTHONPATH's sitecustomize never ran
    assert nvidia_entries(b.path / "rootfs") == []


@pytest.mark.parametrize(
    "names", [["PYTHONPATH"], ["PYTHONSTARTUP"], ["PYTHONUNBUFFERED", "PYTHONHOME"]],
    ids=["pythonpath", "pythonstartup", "pythonunbuffered+pythonhome"],
)
def test_python_env_is_harmless_under_isolation(
    world: World, injectors: tuple[Path, Path, Path], names: list[str]
) -> None:
    # python -I ignores every PYTHON* variable: a runtime whose own environment has
    # PYTHONUNBUFFERED=1 must not stop every container start.
    pydir, _lib, marker = injectors
    values = {"PYTHONPATH": str(pydir), "PYTHONSTARTUP": str(pydir / "sitecustomize.py"),
              "PYTHONUNBUFFERED": "1", "PYTHONHOME": "/nonexistent"}
    hooks = world.hook(extra_env=[f"{n}={values[n]}" for n in names])
    ctr = world.runc.run_detached(world.bundle(REQUEST, hooks=hooks))
    assert world.runc.probe(ctr, f"/dev/nvidia-caps/nvidia-cap{GI}") == "ENXIO"
    assert not marker.exists()


def test_python_env_refused_when_not_isolated() -> None:
    from capctl.deliver.hook import dangerous_env

    env = {"PYTHONPATH": "/x", "LD_AUDIT": "/y", "PATH": "/bin", "GCONV_PATH": "/z"}
    assert dangerous_env(env, isolated=False) == ["GCONV_PATH", "LD_AUDIT", "PYTHONPATH"]
    assert dangerous_env(env, isolated=True) == ["GCONV_PATH", "LD_AUDIT"]


# --- rollback after the grant -------------------------------------------------------------


#: Prints a device cgroup's rules, one ``devices.list`` line each: v1's own list, or on
#: cgroup2 the rules capctl's program adds (decoded by capctl.cgroup.v2 from the kernel).
_RULES = """
import os, sys
path = sys.argv[1]
if os.path.exists(os.path.join(path, "devices.list")):
    sys.stdout.write(open(os.path.join(path, "devices.list")).read())
else:
    from capctl.cgroup.v2 import V2Devices
    for rule in V2Devices(path).allowed():
        print(rule.line())
"""


def _recording_hook(world: World, bundle: Bundle, out: Path) -> None:
    """Wrap the capctl hook in a shell that saves the container's device rules around it.

    runc removes a failed container's cgroup; the wrapper reads it while it still exists.
    """
    cgroup = f"/sys/fs/cgroup{bundle.cgroup}" if world.runc.cgroup2 else world.runc.device_cgroup(bundle)
    show = f'{shlex.quote(sys.executable)} -c {shlex.quote(_RULES)} "{cgroup}"'
    script = (
        f'{show} > "{out}/before" || exit 9\n'
        '"$@"; rc=$?\n'
        f'{show} > "{out}/after" || exit 9\n'
        "exit $rc\n"
    )
    capctl = world.hook()[world.stage][0]
    bundle.config["hooks"] = {
        world.stage: [
            {**capctl, "path": "/bin/sh", "args": ["sh", "-c", script, "sh", *capctl["args"]]}
        ]
    }
    bundle.write()


def _plant_dir(rootfs: Path, rel: str) -> Path:
    path = rootfs / "dev" / rel
    path.mkdir(parents=True)
    (path / "keep").write_text("image file\n")
    return path


@pytest.mark.parametrize(
    ("planted", "left"),
    [
        (f"nvidia-caps/nvidia-cap{CI}", ["nvidia-caps"]),  # fails last: all GPU nodes and GI made
        ("nvidia0", ["nvidia0"]),  # fails first: nothing made yet
        (None, [*sorted(GPU_NODES), "nvidia-caps"]),  # control: succeeds, grant kept
    ],
    ids=["ci-node-is-a-dir", "nvidia0-is-a-dir", "control-success"],
)
def test_failure_after_grant_rolls_back(
    world: World, tmp_path: Path, planted: str | None, left: list[str]
) -> None:
    b = world.bundle(REQUEST, edit=no_dev_tmpfs)
    rootfs = b.path / "rootfs"
    out = tmp_path / "devices"
    out.mkdir()
    _recording_hook(world, b, out)
    granted = {"c 195:0 rw", "c 195:255 rw", f"c 238:{GI} r", f"c 238:{CI} r"}
    if planted is None:
        ctr = world.runc.run_detached(b)
        after = set((out / "after").read_text().splitlines())
        before = set((out / "before").read_text().splitlines())
        assert granted <= after - before
        assert nvidia_entries(rootfs) == sorted(left)
        world.runc.delete(ctr)
        return
    _plant_dir(rootfs, planted)
    message, ctr = failed_start(world, b)
    assert f"{rootfs}/dev/{planted}: is a directory" in message, message
    # The grant was made (the log says so) and then undone: devices.list is as before.
    lines = log_of(world, ctr)
    assert any(f"c 238:{CI} r" in line and "allowed" in line for line in lines), lines
    assert (out / "after").read_text() == (out / "before").read_text()
    assert not granted & set((out / "after").read_text().splitlines())
    # Nodes made before the failure are gone; the image's directory is untouched.
    assert nvidia_entries(rootfs) == sorted(left)
    assert (rootfs / "dev" / planted / "keep").read_text() == "image file\n"
    if planted.startswith("nvidia-caps/"):
        assert os.listdir(rootfs / "dev/nvidia-caps") == [f"nvidia-cap{CI}"]

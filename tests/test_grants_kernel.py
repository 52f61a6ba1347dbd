"""Grants enforced by the real kernel, for real users and groups made for the test.

Each test creates a group and three users (useradd/groupadd, unique names; removed afterwards
even on failure): ``granted`` (granted by name), ``member`` (in the granted group) and
``outsider`` (neither).  A forked child drops to each user (setgroups/setgid/setuid) and opens
the node for reading.  The simulated ``nvidia-caps`` major 238 is unregistered, so ENXIO means
the permission check passed and EACCES that it failed.
"""

from __future__ import annotations

import errno
import os
import pwd
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from capctl import simulated
from capctl.cli import cli
from capctl.host import Host

from .conftest import needs_root

pytestmark = [
    needs_root,
    pytest.mark.kernel,
    pytest.mark.skipif(not (shutil.which("useradd") and shutil.which("groupadd")),
                       reason="needs useradd/groupadd"),
]

GI7 = "gpu0/gi7/access"


@dataclass(frozen=True)
class People:
    group: str
    granted: str
    member: str
    outsider: str


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


@pytest.fixture
def people() -> Iterator[People]:
    tag = secrets.token_hex(3)
    p = People(f"cct-g{tag}", f"cct-a{tag}", f"cct-m{tag}", f"cct-o{tag}")
    made_users: list[str] = []
    made_group = False
    try:
        _run("groupadd", p.group)
        made_group = True
        for name, extra in ((p.granted, []), (p.member, ["-G", p.group]), (p.outsider, [])):
            _run("useradd", "-M", "-N", "-s", "/usr/sbin/nologin", *extra, name)
            made_users.append(name)
        yield p
    finally:
        for name in made_users:
            subprocess.run(["userdel", name], capture_output=True)
        if made_group:
            subprocess.run(["groupdel", p.group], capture_output=True)


@pytest.fixture
def traversable(tmp_path: Path) -> Iterator[None]:
    """pytest's temp dirs are 0700; let the test users walk (not list) down to the root."""
    base = Path(f"/tmp/pytest-of-{pwd.getpwuid(os.geteuid()).pw_name}")
    chain = [d for d in (tmp_path, *tmp_path.parents) if d == base or base in d.parents]
    saved = {d: os.stat(d).st_mode & 0o7777 for d in chain}
    for d in chain:
        os.chmod(d, saved[d] | 0o711)
    try:
        yield
    finally:
        for d, mode in saved.items():
            os.chmod(d, mode)


def open_as(user: str, path: Path) -> int:
    """errno of opening ``path`` for reading as ``user`` (0 if it opened)."""
    pw = pwd.getpwnam(user)
    pid = os.fork()
    if pid == 0:  # child: drop privileges for good, try, report through the exit status
        code = 255
        try:
            os.setgroups(os.getgrouplist(user, pw.pw_gid))
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)
            try:
                os.close(os.open(path, os.O_RDONLY))
                code = 0
            except OSError as err:
                code = err.errno or 254
        finally:
            os._exit(code)
    _pid, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def cli_ok(host: Host, *args: str) -> str:
    r = CliRunner().invoke(cli, ["--root", str(host.root), "--config", str(host.config), *args])
    assert r.exit_code == 0, r.output
    return r.output


def node(root: Path, name: str) -> Path:
    return root / "dev/nvidia-caps" / f"nvidia-cap{simulated.minor_of(name)}"


@pytest.mark.usefixtures("traversable")
def test_grant_revoke_and_reload(sim_host: Host, sim_root: Path, people: People) -> None:
    cli_ok(sim_host, "sync")
    cfg, gi = node(sim_root, "config"), node(sim_root, GI7)
    # Driver defaults: config 0400 (nobody but root), gi 0444 (everyone).
    assert open_as(people.outsider, cfg) == errno.EACCES
    assert open_as(people.outsider, gi) == errno.ENXIO

    cli_ok(sim_host, "grant", "mig-config", "--user", people.granted)
    cli_ok(sim_host, "grant", "mig-config", "--group", people.group)
    cli_ok(sim_host, "grant", GI7, "--user", people.granted)
    assert open_as(people.granted, cfg) == errno.ENXIO
    assert open_as(people.member, cfg) == errno.ENXIO
    assert open_as(people.outsider, cfg) == errno.EACCES
    # A granted instance capability is no longer open to everyone.
    assert open_as(people.granted, gi) == errno.ENXIO
    assert open_as(people.member, gi) == errno.EACCES
    assert open_as(people.outsider, gi) == errno.EACCES

    # A driver reload wipes /dev/nvidia-caps; sync brings the grants back.
    shutil.rmtree(sim_root / "dev/nvidia-caps")
    cli_ok(sim_host, "sync")
    assert open_as(people.granted, cfg) == errno.ENXIO
    assert open_as(people.member, cfg) == errno.ENXIO
    assert open_as(people.outsider, cfg) == errno.EACCES
    assert open_as(people.member, gi) == errno.EACCES

    # Revoke takes it away, one grantee at a time, then all.
    cli_ok(sim_host, "revoke", "mig-config", "--user", people.granted)
    assert open_as(people.granted, cfg) == errno.EACCES
    assert open_as(people.member, cfg) == errno.ENXIO
    cli_ok(sim_host, "revoke", "mig-config", "--group", people.group)
    assert open_as(people.member, cfg) == errno.EACCES
    cli_ok(sim_host, "revoke", GI7)
    assert open_as(people.outsider, gi) == errno.ENXIO  # back to the driver's 0444


@pytest.mark.usefixtures("traversable")
def test_deleted_user_keeps_grant_by_id(sim_host: Host, sim_root: Path, people: People) -> None:
    """Ids are authoritative: a grant survives deleting the user's name; 'grants' flags it."""
    cli_ok(sim_host, "grant", "monitor", "--user", people.outsider)
    uid = pwd.getpwnam(people.outsider).pw_uid
    subprocess.run(["userdel", people.outsider], check=True, capture_output=True)
    out = cli_ok(sim_host, "grants")
    assert f"{people.outsider}({uid})[missing" in out
    cli_ok(sim_host, "revoke", "monitor", "--user", str(uid))


@pytest.mark.usefixtures("traversable")
def test_sync_removes_an_alias_that_bypasses_a_grant(
    sim_host: Host, sim_root: Path, people: People
) -> None:
    """A second node of a granted capability opens it for everyone until sync removes it;
    ``doctor`` fails meanwhile."""
    cli_ok(sim_host, "grant", GI7, "--user", people.granted)
    alias = sim_root / "dev/nvidia-caps/nvidia-cap21"
    old = os.umask(0)
    try:
        os.mknod(alias, 0o020444, os.makedev(238, simulated.minor_of(GI7)))
    finally:
        os.umask(old)
    assert open_as(people.outsider, node(sim_root, GI7)) == errno.EACCES
    assert open_as(people.outsider, alias) == errno.ENXIO  # the grant is bypassed
    r = CliRunner().invoke(cli, ["--root", str(sim_root), "--config", str(sim_host.config),
                                 "doctor"])
    assert r.exit_code == 1 and "stray node" in r.output
    cli_ok(sim_host, "sync")
    assert not os.path.lexists(alias)
    assert open_as(people.granted, node(sim_root, GI7)) == errno.ENXIO
    assert open_as(people.outsider, node(sim_root, GI7)) == errno.EACCES


@pytest.mark.usefixtures("traversable")
def test_sync_all_opens_no_privileged_capability_to_others(
    sim_host: Host, sim_root: Path, people: People
) -> None:
    cli_ok(sim_host, "sync", "--all")
    for name in ("config", "fabric-mgmt", "fabric-imex-mgmt"):
        assert open_as(people.outsider, node(sim_root, name)) == errno.EACCES, name
    assert open_as(people.outsider, node(sim_root, "gpu4/gi0/access")) == errno.ENXIO
    # Without the driver's proc file a fabric capability's mode is unknown: no node at all.
    shutil.rmtree(sim_root / "dev/nvidia-caps")
    (sim_root / "proc/driver/nvidia-nvlink/capabilities/fabric-mgmt").unlink()
    (sim_root / "proc/driver/nvidia/capabilities/fabric-imex-mgmt").unlink()
    cli_ok(sim_host, "sync", "--all")
    for name in ("fabric-mgmt", "fabric-imex-mgmt"):
        assert open_as(people.outsider, node(sim_root, name)) == errno.ENOENT, name

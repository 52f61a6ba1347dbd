"""Grants on simulated roots: policy file, node ACLs, proc files, sync, CLI.

Users and groups here are ones every Linux system has (``nobody``, ``daemon``, ``bin``);
opening nodes as real users is in ``test_grants_kernel.py``.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from capctl import simulated
from capctl.cli import cli
from capctl.driver import capfile, capnames
from capctl.errors import ConfigError, ParseError
from capctl.host import Host
from capctl.policy import acl, grants, store
from capctl.policy.grants import Kind

from .conftest import needs_root

REPO = Path(__file__).resolve().parents[1]
GI7 = "gpu0/gi7/access"
XATTR = "system.posix_acl_access"
NOBODY, DAEMON_GID, BIN_UID = 65534, 1, 2


def node(root: Path, name: str) -> Path:
    return root / "dev/nvidia-caps" / f"nvidia-cap{simulated.minor_of(name)}"


def proc(root: Path, name: str) -> Path:
    return root / capnames.proc_relpath(name, capnames.Source.MIG)


def xattr(p: Path) -> bytes | None:
    try:
        return os.getxattr(p, XATTR, follow_symlinks=False)
    except OSError:
        return None


def run(host: Host, *args: str) -> Any:
    return CliRunner().invoke(cli, ["--root", str(host.root), "--config", str(host.config), *args])


# --- pure: a new config file and the policy schema ---------------------------------------------


@pytest.mark.parametrize(
    "doc",
    [
        {},
        {"hook": {"log_file": "/var/log/x.log"}},
        {"a": 1, "b": True, "c": 1.5, "d": [1, 2], "t": {"x": "y", "sub": {"z": []}}},
        {"weird": {'q"uote\\back\nnl\ttab\x00\x7f\u00e9\U0001F600': "v\x1b"}},
        {"grants": {"gpu0/gi7/access": {"users": [{"name": "a", "uid": 1}]}}},
        {"empty": {}},
    ],
    ids=["empty", "other-tool", "types", "escapes", "grants", "empty-table"],
)
def test_new_config_roundtrip(doc: dict[str, Any]) -> None:
    text = store.format_document(grants.parse_document(doc, "c.toml"))
    assert text.startswith(store.HEADER)
    assert tomllib.loads(text) == doc


GOOD = {"grants": {"config": {"users": [{"name": "alice", "uid": 1001}],
                              "groups": [{"name": "mig", "gid": 2000}]}}}


def test_policy_roundtrip_keeps_other_tables() -> None:
    doc = grants.parse_document({**GOOD, "hook": {"log_file": "/l"}}, "c.toml")
    assert doc.other == {"hook": {"log_file": "/l"}}
    g = doc.policy.get("config")
    assert [(p.name, p.id) for p in g.users] == [("alice", 1001)]
    again = grants.parse_document(tomllib.loads(store.format_document(doc)), "c.toml")
    assert again == doc


@pytest.mark.parametrize(
    ("doc", "msg"),
    [
        ({"grants": []}, "must be a table"),
        ({"grants": {"gpu0/../x": {}}}, "not a capability name"),
        ({"grants": {"config": {"owners": []}}}, "only 'users' and 'groups'"),
        ({"grants": {"config": {"users": "alice"}}}, "must be an array"),
        ({"grants": {"config": {"users": [{"name": "alice"}]}}}, "uid = N"),
        ({"grants": {"config": {"users": [{"name": "alice", "uid": -1}]}}}, "bad uid"),
        ({"grants": {"config": {"users": [{"name": "alice", "uid": True}]}}}, "bad uid"),
        ({"grants": {"config": {"groups": [{"name": "a b", "gid": 3}]}}}, "bad group name"),
        ({"grants": {"config": {"users": [{"name": "a", "uid": 1}, {"name": "b", "uid": 1}]}}},
         "listed twice"),
        ({"grants": {"mig-config": {"users": [{"name": "a", "uid": 1}]}}},
         r"\[grants.mig-config\]: mig-config is the command-line alias of config; name the "
         r"table \[grants.config\]"),
    ],
    ids=["not-table", "bad-cap", "unknown-key", "not-array", "no-id", "negative", "bool",
         "bad-name", "dup-id", "alias"],
)
def test_policy_schema_rejects(doc: dict[str, Any], msg: str) -> None:
    with pytest.raises(ParseError, match=msg) as info:
        grants.parse_document(doc, "/etc/capctl/capctl.toml")
    assert "/etc/capctl/capctl.toml" in str(info.value)


def test_ownership_is_read_only_acl() -> None:
    doc = grants.parse_document(GOOD, "c")
    own = doc.policy.ownership()["config"]
    assert (own.mode, own.uid, own.gid) == (0o440, 0, 0)
    assert own.acl is not None
    assert acl.to_text(acl.decode(own.acl, "x")) == (
        "user::r--,user:1001:r--,group::---,group:2000:r--,mask::r--,other::---"
    )


@pytest.mark.parametrize(("text", "want"), [("mig-config", "config"), ("mig-monitor", "monitor"),
                                            ("config", "config"), (GI7, GI7)])
def test_aliases(text: str, want: str) -> None:
    assert grants.canonical_name(text) == want


# --- on a simulated root (root: mknod, chown, ACLs) --------------------------------------------


@needs_root
def test_grant_applies_acl_and_pins_proc_file(sim_host: Host, sim_root: Path) -> None:
    assert run(sim_host, "sync").exit_code == 0
    r = run(sim_host, "grant", "mig-config", "--user", "nobody")
    assert r.exit_code == 0, r.output
    assert "granted: config to user 'nobody'" in r.output
    r = run(sim_host, "grant", "config", "--group", "daemon")
    assert r.exit_code == 0, r.output
    st = os.lstat(node(sim_root, "config"))
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o440, 0, 0)
    assert xattr(node(sim_root, "config")) == acl.read_only([NOBODY], [DAEMON_GID]).encode()
    # The proc file keeps its other fields; only DeviceFileModify changes.
    assert proc(sim_root, "config").read_text() == (
        "DeviceFileMinor: 1\nDeviceFileMode: 256\nDeviceFileModify: 0\n"
    )
    # The config file: root-owned 0644, our schema.
    cst = os.stat(sim_host.config)
    assert (stat.S_IMODE(cst.st_mode), cst.st_uid) == (0o644, 0)
    assert tomllib.loads(Path(sim_host.config).read_text())["grants"]["config"] == {
        "users": [{"name": "nobody", "uid": NOBODY}], "groups": [{"name": "daemon", "gid": 1}],
    }
    # Granting again changes nothing.
    ino = st.st_ino
    r = run(sim_host, "grant", "config", "--user", str(NOBODY))
    assert "already granted" in r.output
    assert os.lstat(node(sim_root, "config")).st_ino == ino
    # sync agrees with what grant made: nothing to repair.
    r = run(sim_host, "sync")
    assert r.exit_code == 0 and "0 created, 0 repaired" in r.output, r.output


@needs_root
def test_grant_creates_missing_node(sim_host: Host, sim_root: Path) -> None:
    r = run(sim_host, "grant", GI7, "--user", "nobody")
    assert r.exit_code == 0, r.output
    assert xattr(node(sim_root, GI7)) == acl.read_only([NOBODY], []).encode()


@needs_root
def test_revoke_one_then_last_restores_defaults(sim_host: Host, sim_root: Path) -> None:
    run(sim_host, "sync")
    run(sim_host, "grant", GI7, "--user", "nobody")
    run(sim_host, "grant", GI7, "--user", "bin")
    run(sim_host, "grant", GI7, "--group", "daemon")
    r = run(sim_host, "revoke", GI7, "--user", "nobody")
    assert r.exit_code == 0, r.output
    assert xattr(node(sim_root, GI7)) == acl.read_only([BIN_UID], [DAEMON_GID]).encode()
    assert "DeviceFileModify: 0" in proc(sim_root, GI7).read_text()
    r = run(sim_host, "revoke", GI7)  # every remaining grantee
    assert r.exit_code == 0, r.output
    assert "defaults restored" in r.output
    st = os.lstat(node(sim_root, GI7))
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o444, 0, 0)
    assert xattr(node(sim_root, GI7)) is None
    assert proc(sim_root, GI7).read_text() == (
        f"DeviceFileMinor: {simulated.minor_of(GI7)}\nDeviceFileMode: 292\nDeviceFileModify: 1\n"
    )
    assert "grants" not in tomllib.loads(Path(sim_host.config).read_text())


@needs_root
def test_revoke_by_uid_and_unknown_principal(sim_host: Host) -> None:
    run(sim_host, "grant", "config", "--user", "nobody")
    before = Path(sim_host.config).read_bytes()
    r = run(sim_host, "revoke", "config", "--user", "bin")
    assert r.exit_code == 1 and "user 'bin' holds no grant for 'config'" in r.output
    r = run(sim_host, "revoke", "monitor")
    assert r.exit_code == 1 and "no grants for 'monitor'" in r.output
    assert Path(sim_host.config).read_bytes() == before
    r = run(sim_host, "revoke", "config", "--user", str(NOBODY))
    assert r.exit_code == 0, r.output


@needs_root
@pytest.mark.parametrize(
    ("args", "msg"),
    [
        (["grant", "gpu99/gi0/access", "--user", "nobody"], "unknown capability 'gpu99/gi0/"),
        (["grant", "mig-everything", "--user", "nobody"], "unknown capability 'mig-everything'"),
        (["grant", "config", "--user", "capctl-no-such-u"], "unknown user 'capctl-no-such-u'"),
        (["grant", "config", "--group", "capctl-no-such-g"], "unknown group 'capctl-no-such-g'"),
        (["grant", "config", "--user", "4000000000"], "unknown user '4000000000'"),
        (["grant", "config", "--user", "\u00b2"], "unknown user '\u00b2'"),
        (["grant", "config", "--user", "\u0663"], "unknown user '\u0663'"),
        (["grant", "config", "--group", "\u0660"], "unknown group '\u0660'"),
        (["revoke", "monitor", "--user", "\u00b2"], "'\u00b2'"),
    ],
    ids=["cap", "alias", "user", "group", "uid", "superscript-two", "arabic-indic-three",
         "arabic-indic-zero-group", "revoke-superscript"],
)
def test_unknown_names_write_nothing(
    sim_host: Host, sim_root: Path, args: list[str], msg: str
) -> None:
    run(sim_host, "grant", "monitor", "--user", "nobody")
    before = Path(sim_host.config).read_bytes()
    proc_before = proc(sim_root, "config").read_bytes()
    r = run(sim_host, *args)
    assert r.exit_code == 1
    assert r.output.startswith("capctl: error: ") and msg in r.output, r.output
    assert Path(sim_host.config).read_bytes() == before
    assert proc(sim_root, "config").read_bytes() == proc_before


@pytest.mark.parametrize(
    "args",
    [["grant", "config"], ["grant", "config", "--user", "a", "--group", "b"],
     ["revoke", "config", "--user", "a", "--group", "b"]],
    ids=["none", "both", "revoke-both"],
)
def test_usage_errors(sim_host: Host, args: list[str]) -> None:
    assert run(sim_host, *args).exit_code == 2


@needs_root
def test_corrupt_config_is_an_error_and_kept(sim_host: Host) -> None:
    Path(sim_host.config).write_text("[grants.config\nusers = 1\n")
    before = Path(sim_host.config).read_bytes()
    for args in (["grant", "config", "--user", "nobody"], ["sync"], ["grants"], ["list"]):
        r = run(sim_host, *args)
        assert r.exit_code == 1, (args, r.output)
        assert f"capctl: error: {sim_host.config}: not valid TOML" in r.output
    assert Path(sim_host.config).read_bytes() == before


@needs_root
@pytest.mark.parametrize(("mode", "uid"), [(0o664, 0), (0o646, 0), (0o644, NOBODY)],
                         ids=["group-writable", "world-writable", "not-root-owned"])
def test_unsafe_config_refused(sim_host: Host, mode: int, uid: int) -> None:
    Path(sim_host.config).write_text("")
    os.chmod(sim_host.config, mode)
    os.chown(sim_host.config, uid, 0)
    with pytest.raises(ConfigError, match="refusing"):
        store.load_document(Path(sim_host.config))
    r = run(sim_host, "grant", "config", "--user", "nobody")
    assert r.exit_code == 1 and "refusing" in r.output


@needs_root
def test_other_tables_survive_a_grant(sim_host: Host) -> None:
    Path(sim_host.config).write_text('[hook]\nlog_file = "/var/log/capctl-hook.log"\n')
    os.chmod(sim_host.config, 0o644)
    assert run(sim_host, "grant", "config", "--user", "nobody").exit_code == 0
    doc = tomllib.loads(Path(sim_host.config).read_text())
    assert doc["hook"] == {"log_file": "/var/log/capctl-hook.log"}


@needs_root
def test_grants_survive_driver_reload(sim_host: Host, sim_root: Path) -> None:
    """A reload wipes /dev/nvidia-caps and resets DeviceFileModify to 1; sync restores both."""
    run(sim_host, "grant", "config", "--user", "nobody")
    run(sim_host, "grant", GI7, "--group", "daemon")
    for p in (proc(sim_root, "config"), proc(sim_root, GI7)):
        p.write_text(p.read_text().replace("DeviceFileModify: 0", "DeviceFileModify: 1"))
    subprocess.run(["rm", "-rf", str(sim_root / "dev/nvidia-caps")], check=True)
    r = run(sim_host, "sync")
    assert r.exit_code == 0, r.output
    assert xattr(node(sim_root, "config")) == acl.read_only([NOBODY], []).encode()
    assert xattr(node(sim_root, GI7)) == acl.read_only([], [DAEMON_GID]).encode()
    assert stat.S_IMODE(os.lstat(node(sim_root, "monitor")).st_mode) == 0o444
    for name in ("config", GI7):
        assert "DeviceFileModify: 0" in proc(sim_root, name).read_text()
        assert f"DeviceFileMinor: {simulated.minor_of(name)}" in proc(sim_root, name).read_text()


@needs_root
def test_grant_for_future_capability(sim_host: Host, sim_root: Path) -> None:
    """gpu4 has MIG disabled: its capabilities exist only in mig-minors until an instance is
    created.  The grant is stored and applied by the sync after it appears."""
    future = "gpu4/gi1/access"
    r = run(sim_host, "grant", future, "--user", "nobody")
    assert r.exit_code == 0 and "applies when gpu4/gi1/access appears" in r.output
    assert not node(sim_root, future).exists()
    assert not proc(sim_root, future).exists()
    cf = capfile.CapabilityFile(simulated.minor_of(future), 0o444, True)
    proc(sim_root, future).parent.mkdir(parents=True, exist_ok=True)
    proc(sim_root, future).write_text(capfile.format_capability_file(cf))
    assert run(sim_host, "sync").exit_code == 0
    assert xattr(node(sim_root, future)) == acl.read_only([NOBODY], []).encode()
    assert "DeviceFileModify: 0" in proc(sim_root, future).read_text()


@needs_root
def test_grants_listing(sim_host: Host) -> None:
    run(sim_host, "grant", "config", "--user", "nobody")
    run(sim_host, "grant", "config", "--group", "daemon")
    # A grant whose stored name no longer matches its uid (renamed or deleted user).
    doc = store.load_document(Path(sim_host.config))
    stale = grants.Principal(Kind.USER, 3999999, "gone")
    doc = grants.Document(doc.policy.set("monitor", grants.CapGrants(users=(stale,))), doc.other)
    store.save_document(Path(sim_host.config), doc)
    r = run(sim_host, "grants", "--json")
    assert r.exit_code == 0, r.output
    import json

    data = json.loads(r.output)
    assert data == [
        {"capability": "config",
         "users": [{"name": "nobody", "uid": NOBODY, "status": "ok", "detail": None}],
         "groups": [{"name": "daemon", "gid": 1, "status": "ok", "detail": None}]},
        {"capability": "monitor",
         "users": [{"name": "gone", "uid": 3999999, "status": "missing",
                    "detail": "no user has uid 3999999 now"}],
         "groups": []},
    ]
    r = run(sim_host, "grants")
    assert "nobody(65534)" in r.output and "gone(3999999)[missing" in r.output
    # A deleted user's grant is revoked by id.
    assert run(sim_host, "revoke", "monitor", "--user", "3999999").exit_code == 0


@needs_root
def test_concurrent_grants_lose_nothing(sim_host: Host) -> None:
    """Ten processes granting at once: every grant is in the file and on the node."""
    run(sim_host, "sync")
    who = [("--user", "nobody"), ("--user", "bin"), ("--user", "daemon"), ("--user", "sys"),
           ("--user", "sync"), ("--group", "daemon"), ("--group", "bin"), ("--group", "sys"),
           ("--group", "adm"), ("--group", "tty")]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "capctl", "--root", str(sim_host.root), "--config",
             str(sim_host.config), "grant", "config", *w],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        for w in who
    ]
    for p in procs:
        _out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    g = store.load_policy(Path(sim_host.config)).get("config")
    assert len(g.users) == 5 and len(g.groups) == 5
    own = g.ownership()
    assert xattr(node(Path(sim_host.root), "config")) == own.acl
    assert not list(Path(sim_host.config).parent.glob(".*.tmp-*"))  # no temp files left behind


@pytest.mark.parametrize("command", [["grants"], ["sync", "--dry-run"], ["revoke", "mig-config",
                                                                         "--user", "root"]])
def test_a_hand_written_alias_table_is_refused_everywhere(sim_host: Host, command: list[str]
                                                           ) -> None:
    """[grants."mig-config"] was listed by grants but never applied by sync, and revoke said
    there were none: every command now refuses it, naming the table and the fix."""
    Path(sim_host.config).write_text('[grants."mig-config"]\nusers = [{ name = "root", uid = 0 }]\n')
    os.chmod(sim_host.config, 0o644)
    res = run(sim_host, *command)
    assert res.exit_code != 0
    assert 'mig-config is the command-line alias of config; name the table [grants.config]' \
        in res.output, res.output

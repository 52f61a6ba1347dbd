"""``capctl grant``/``revoke`` edit only the grants tables of the admin's config file.

Comments, blank lines, key order and formatting of everything else stay byte for byte; see
``capctl/policy/tomledit.py`` for what happens to grants entries the admin wrote by hand.
Principals are ones every Linux system has: user ``root`` (0), user ``nobody`` (65534), group
``daemon`` (1).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from capctl.cli import cli
from capctl.host import Host

from .conftest import needs_root

GI7 = "gpu0/gi7/access"

#: Comments and blank lines in every place TOML allows them, and other tools' tables.
ADMIN = """\
# capctl.toml: site policy, reviewed by the GPU team (ticket OPS-1234)

# a key before any table: the root table
title = "gpu hosts"   # after a value

[hook]   # after a header
# keep a local log for audits
log_file = "/var/log/capctl-hook.log"  # after a value


[requests]
# who may ask for what
allow = [   # after an opening bracket
  "mig-monitor",  # after an element

  # on a line of its own inside an array
  "gpu0/gi7/access"
  ,
]
limits = { max = 2, tags = ["a", "b"] }  # an inline table
"quoted key" = 'literal string'
multi = \"\"\"
# not a comment: inside a string
two lines\"\"\"

[othertool.sub]  # another tool's table, a sub-table before its parent
	# indented with a tab
  indented = 1\x20\x20\x20

[othertool]
x = 1.5e3
[[othertool.list]]
name = "a"
[[othertool.list]]  # an array of tables
name = "b"
# the last line: a comment"""


def run(host: Host, *args: str) -> Any:
    return CliRunner().invoke(cli, ["--root", str(host.root), "--config", str(host.config), *args])


def ok(host: Host, *args: str) -> None:
    r = run(host, *args)
    assert r.exit_code == 0, r.output


def refused(host: Host, *args: str, match: str) -> None:
    before = Path(host.config).read_bytes()
    r = run(host, *args)
    assert r.exit_code == 1 and match in r.output, r.output
    assert Path(host.config).read_bytes() == before
    assert sorted(p.name for p in Path(host.config).parent.iterdir() if ".tmp-" in p.name) == []


def write(host: Host, text: str | bytes) -> None:
    data = text.encode() if isinstance(text, str) else text
    Path(host.config).write_bytes(data)
    os.chmod(host.config, 0o644)


def read(host: Host) -> str:
    return Path(host.config).read_bytes().decode()


def grants_of(host: Host) -> Any:
    return tomllib.loads(read(host)).get("grants")


@needs_root
@pytest.mark.parametrize("nl", ["\n", "\r\n"], ids=["lf", "crlf"])
@pytest.mark.parametrize("end", ["", "\n"], ids=["no-final-newline", "final-newline"])
def test_grant_and_revoke_keep_everything_else(sim_host: Host, nl: str, end: str) -> None:
    original = (ADMIN + end).replace("\n", nl)
    write(sim_host, original)
    others = tomllib.loads(original)
    # What the file holds besides capctl's tables: a table can only start on a line of its
    # own, so a file without a final newline gains one with the first grant.
    kept = original if original.endswith(nl) else original + nl

    def check_rest() -> None:
        text = read(sim_host)
        assert text.startswith(kept)
        assert set(tomllib.loads(text[len(kept):])) <= {"grants"}  # only grants after it
        assert {k: v for k, v in tomllib.loads(text).items() if k != "grants"} == others
        assert "\r\n" not in text.replace(nl, "") if nl == "\n" else "\n" not in text.replace(nl, "")

    ok(sim_host, "grant", "mig-monitor", "--user", "root")
    check_rest()
    assert grants_of(sim_host) == {"monitor": {"users": [{"name": "root", "uid": 0}]}}
    ok(sim_host, "grant", "mig-monitor", "--user", "nobody")
    check_rest()
    ok(sim_host, "grant", GI7, "--group", "daemon")
    check_rest()
    assert grants_of(sim_host) == {
        "monitor": {"users": [{"name": "root", "uid": 0}, {"name": "nobody", "uid": 65534}]},
        GI7: {"groups": [{"name": "daemon", "gid": 1}]},
    }
    ok(sim_host, "revoke", "mig-monitor", "--user", "nobody")
    check_rest()
    ok(sim_host, "revoke", "mig-monitor")
    check_rest()
    assert grants_of(sim_host) == {GI7: {"groups": [{"name": "daemon", "gid": 1}]}}
    ok(sim_host, "revoke", GI7, "--group", "daemon")
    # The last revoke takes the tables out, and the grants super-table capctl made with them.
    assert read(sim_host) == kept


@needs_root
def test_capctl_tables_look_like_this(sim_host: Host) -> None:
    write(sim_host, '[hook]\nlog_file = "/l"\n')
    ok(sim_host, "grant", "config", "--user", "root")
    ok(sim_host, "grant", GI7, "--group", "daemon")
    ok(sim_host, "grant", "config", "--group", "daemon")
    assert read(sim_host) == (
        '[hook]\nlog_file = "/l"\n'
        '\n[grants.config]\nusers = [\n  { name = "root", uid = 0 },\n]\n'
        'groups = [\n  { name = "daemon", gid = 1 },\n]\n'
        '\n[grants."gpu0/gi7/access"]\ngroups = [\n  { name = "daemon", gid = 1 },\n]\n'
    )


@needs_root
def test_new_config_file(sim_host: Host) -> None:
    ok(sim_host, "grant", "config", "--user", "root")
    text = read(sim_host)
    assert text.startswith("# capctl settings and delegation policy.\n")
    assert tomllib.loads(text) == {"grants": {"config": {"users": [{"name": "root", "uid": 0}]}}}
    ok(sim_host, "revoke", "config")
    assert tomllib.loads(read(sim_host)) == {}


HAND_TABLE = """\
[hook]
log_file = "/l"

# the GPU team may manage MIG (OPS-1234)
[grants.config]  # reviewed 2024-05
# the on-call user
users = [{ name = "root", uid = 0 }]  # kept as written
# more users later

# about the next table
[other]
x = 1
"""


@needs_root
def test_hand_written_table(sim_host: Host) -> None:
    """Only the array that changes is rewritten; comments above, in and after the table
    stay.  Emptied, the table goes from its header to its last key."""
    write(sim_host, HAND_TABLE)
    ok(sim_host, "grant", "config", "--group", "daemon")
    text = read(sim_host)
    assert text.startswith(HAND_TABLE.split("# more users later")[0])  # users: as written
    assert text.endswith("# more users later\n\n# about the next table\n[other]\nx = 1\n")
    assert grants_of(sim_host) == {"config": {"users": [{"name": "root", "uid": 0}],
                                              "groups": [{"name": "daemon", "gid": 1}]}}
    ok(sim_host, "revoke", "config", "--group", "daemon")
    assert read(sim_host) == HAND_TABLE
    ok(sim_host, "grant", "config", "--user", "nobody")  # changes the users array
    assert "# kept as written" in read(sim_host) and "# the on-call user" in read(sim_host)
    ok(sim_host, "revoke", "config")
    assert read(sim_host) == (
        '[hook]\nlog_file = "/l"\n\n# the GPU team may manage MIG (OPS-1234)\n'
        "# more users later\n\n# about the next table\n[other]\nx = 1\n"
    )


HAND_INLINE = """\
# top
[grants]   # written by hand
# the whole team
config = { users = [{ name = "root", uid = 0 }] }  # OPS-1
monitor = { groups = [{ name = "daemon", gid = 1 }] }
# end of grants

[hook]
log_file = "/l"
"""


@needs_root
def test_hand_written_inline_tables(sim_host: Host) -> None:
    """An inline entry stays inline, on its line; an explicit [grants] header stays."""
    write(sim_host, HAND_INLINE)
    ok(sim_host, "grant", "monitor", "--user", "nobody")
    monitor = "monitor = { users = [{ name = \"nobody\", uid = 65534 }], groups = " \
              "[{ name = \"daemon\", gid = 1 }] }\n"
    assert read(sim_host) == HAND_INLINE.replace(
        'monitor = { groups = [{ name = "daemon", gid = 1 }] }\n', monitor)
    ok(sim_host, "revoke", "monitor")
    assert read(sim_host) == HAND_INLINE.replace(
        'monitor = { groups = [{ name = "daemon", gid = 1 }] }\n', "")
    ok(sim_host, "revoke", "config")
    assert read(sim_host) == (
        "# top\n[grants]   # written by hand\n# the whole team\n# end of grants\n\n"
        '[hook]\nlog_file = "/l"\n'
    )
    assert grants_of(sim_host) == {}
    ok(sim_host, "grant", GI7, "--user", "root")  # a new capability: a table under [grants]
    assert grants_of(sim_host) == {GI7: {"users": [{"name": "root", "uid": 0}]}}


@needs_root
@pytest.mark.parametrize(
    ("text", "how"),
    [
        ('grants.config.users = [{ name = "root", uid = 0 }]\n', "dotted keys"),
        ('[grants]\nconfig.users = [{ name = "root", uid = 0 }]\n', "dotted keys"),
        ('[[grants.config.users]]\nname = "root"\nuid = 0\n', "arrays of tables"),
        ('[grants.config]\n[[grants.config.users]]\nname = "root"\nuid = 0\n',
         "arrays of tables"),
    ],
    ids=["dotted-root", "dotted-in-grants", "aot", "table-with-aot"],
)
def test_forms_capctl_does_not_edit(sim_host: Host, text: str, how: str) -> None:
    """Refused, and the file left as it is; the grants still read and apply."""
    write(sim_host, "# mine\n" + text)
    refused(sim_host, "grant", "config", "--user", "nobody", match=f"written with {how}")
    refused(sim_host, "revoke", "config", match=f"written with {how}")
    assert grants_of(sim_host) == {"config": {"users": [{"name": "root", "uid": 0}]}}
    ok(sim_host, "sync")


@needs_root
def test_other_capabilities_untouched_whatever_their_form(sim_host: Host) -> None:
    text = '[grants]\nconfig.users = [{ name = "root", uid = 0 }]  # dotted\n'
    write(sim_host, text)
    ok(sim_host, "grant", "monitor", "--user", "nobody")
    assert read(sim_host).startswith(text)
    ok(sim_host, "revoke", "monitor")
    assert read(sim_host) == text


@needs_root
def test_split_grants_tables_refused(sim_host: Host) -> None:
    write(sim_host, '[grants.config]\nusers = [{ name = "root", uid = 0 }]\n'
                    '[hook]\nlog_file = "/l"\n'
                    '[grants.monitor]\nusers = [{ name = "root", uid = 0 }]\n')
    refused(sim_host, "grant", GI7, "--user", "nobody", match="split by other tables")


@needs_root
@pytest.mark.parametrize(
    "data",
    [b"[grants.config\nusers = 1\n", b'[hook]\nlog_file = "/l\xff"\n',
     b"# fine\n[hook]\n[hook]\n"],
    ids=["syntax", "not-utf8", "table-twice"],
)
def test_unparseable_config_refused_and_untouched(sim_host: Host, data: bytes) -> None:
    write(sim_host, data)
    refused(sim_host, "grant", "config", "--user", "root", match="not valid TOML")
    refused(sim_host, "revoke", "config", match="not valid TOML")


@needs_root
def test_non_root_owned_config_refused_and_untouched(sim_host: Host) -> None:
    write(sim_host, '# mine\n[grants.config]\nusers = [{ name = "root", uid = 0 }]\n')
    os.chown(sim_host.config, 65534, 65534)
    try:
        refused(sim_host, "grant", "config", "--user", "nobody", match="refusing")
        refused(sim_host, "revoke", "config", match="refusing")
        assert os.stat(sim_host.config).st_uid == 65534
    finally:
        os.chown(sim_host.config, 0, 0)


@needs_root
def test_readme_example(sim_host: Host) -> None:
    """The README's example config parses, and a grant and its revoke leave it as it was."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    example = readme.split("```toml\n", 1)[1].split("```\n", 1)[0]
    write(sim_host, example)
    assert set(grants_of(sim_host)) == {"config", GI7}
    ok(sim_host, "grant", "mig-monitor", "--user", "root")
    ok(sim_host, "grant", "mig-config", "--user", "root")
    ok(sim_host, "revoke", "mig-config", "--user", "root")
    ok(sim_host, "revoke", "mig-monitor")
    assert read(sim_host) == example

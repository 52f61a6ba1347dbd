"""The device-rule model and the cgroup v1 emulator (pure)."""

from __future__ import annotations

import itertools
import random
import re

import pytest

from capctl.cgroup.emulator import Emulator
from capctl.edits.rules import (
    ALLOW_ALL,
    DENY_ALL,
    Access,
    DeviceRule,
    DeviceType,
    char,
    parse_devices_list,
    parse_rule,
)
from capctl.errors import CgroupError, ParseError
from capctl.request.oci import DEFAULT_DEVICE_RULES, oci_device_rules
from tests.support.fuzz import Op, mutants, outcome

C, B = DeviceType.CHAR, DeviceType.BLOCK


def block(major: int | None, minor: int | None, access: str, allow: bool = True) -> DeviceRule:
    return DeviceRule(B, major, minor, Access.parse(access), allow)


# --- Access ----------------------------------------------------------------------------------


def test_access_set_operations_keep_the_type() -> None:
    rw = Access("rw")
    assert isinstance(rw | Access("m"), Access) and str(rw | Access("m")) == "rwm"
    assert str(rw - Access("r")) == "w" and isinstance(rw - Access("r"), Access)
    assert str(rw & Access("wm")) == "w"
    assert Access("wr") == Access("rw") and str(Access("mwr")) == "rwm"
    assert Access("rwm").is_full and not rw.is_full


@pytest.mark.parametrize("text", ["", "x", "rr", "rwmr", "R", "r w"], ids=repr)
def test_access_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        Access.parse(text)


# --- rules and devices.list lines -----------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "rule"),
    [
        ("c 195:* rwm", char(195, None, "rwm")),
        ("c 238:5 r", char(238, 5, "r")),
        ("b *:* m", DeviceRule(B, None, None, Access("m"))),
        ("a *:* rwm", ALLOW_ALL),
        ("c *:3 w", char(None, 3, "w")),  # type: ignore[arg-type]
    ],
    ids=["wildcard-minor", "exact", "block-all-mknod", "allow-all", "wildcard-major"],
)
def test_parse_and_format_round_trip(line: str, rule: DeviceRule) -> None:
    assert parse_rule(line) == rule
    assert rule.line() == line


@pytest.mark.parametrize(
    "line",
    [
        "c 195:* rwmx",
        "c 195 rwm",
        "x 1:3 rwm",
        "c -1:3 rwm",
        "c 1:3",
        " c 1:3 rwm",
        "c 1:3 rwm ",
        "c 1:3 rwm\n",
        "a 1:3 rwm",  # the kernel ignores everything after 'a': refuse to pretend otherwise
        "a *:* r",
        "c 4096:0 r",  # major is 12 bits
        "c 0:1048576 r",  # minor is 20 bits
        "c 1:3 rr",
    ],
    ids=repr,
)
def test_parse_rule_fails_closed(line: str) -> None:
    with pytest.raises(ValueError):
        parse_rule(line)


# The regular expressions parse_rule and Access.parse used before the hook dropped re (it costs the hook
# 5 ms at start), verbatim: the oracle the str parsers must equal, errors included.
OLD_LINE_RE = re.compile(
    r"(?P<type>[abc]) (?P<major>\*|[0-9]+):(?P<minor>\*|[0-9]+) (?P<access>[rwm]{1,3})"
)
OLD_ACCESS_RE = re.compile(r"[rwm]{1,3}")


def old_access(text: str) -> Access:
    if not OLD_ACCESS_RE.fullmatch(text) or len(set(text)) != len(text):
        raise ValueError(f"invalid access {text!r}")
    return Access(text)


def old_parse_rule(text: str) -> DeviceRule:
    m = OLD_LINE_RE.fullmatch(text)
    if m is None:
        raise ValueError(f"malformed device rule {text!r}")
    return DeviceRule(
        DeviceType(m["type"]),
        None if m["major"] == "*" else int(m["major"]),
        None if m["minor"] == "*" else int(m["minor"]),
        old_access(m["access"]),
    )


#: The edits of the mutation corpora: insert, delete, replace, duplicate a slice.
EDITS: tuple[Op, ...] = ("insert", "delete", "replace", "repeat_slice")


RULE_SEEDS = ["c 195:* rwm", "a *:* rwm", "b 8:0 m", "c *:3 w", "c 4095:1048575 rw", "c 1:3 r"]
RULE_EDGES = [
    "", " ", "c", "c 1:3", "c 1:3 ", "c  1:3 r", "c 1:3 r\n", "c 1:3 r\t", "c\t1:3 r",
    "c 1: r", "c :3 r", "c 1:3:5 r", "c ** r", "c *:** r", "c 1*:3 r", "c -1:3 r", "c +1:3 r",
    "c 1:3 rwmr", "c 1:3 rr", "c 1:3 R", "d 1:3 r", "ab 1:3 r", "c 01:003 r",
    "c \xb2:3 r", "c \u0663:3 r", "c 1:3 r\xa0", "c 4096:0 r", "a 1:3 rwm", "a *:* wr",
]  # fmt: skip
RULE_ALPHABET = [" ", ":", "*", "0", "9", "a", "b", "c", "d", "r", "w", "m", "x", "\t", "\n",
                 "\xa0", "\xb2", "\u0663", "-"]  # fmt: skip


def test_rule_parser_equals_the_old_expression() -> None:
    corpus = RULE_SEEDS + RULE_EDGES + mutants(RULE_SEEDS, RULE_ALPHABET, 20000, seed=5, ops=EDITS)
    got = [outcome(parse_rule, line) for line in corpus]
    want = [outcome(old_parse_rule, line) for line in corpus]
    diffs = [(line, g, w) for line, g, w in zip(corpus, got, want, strict=True) if g != w]
    assert diffs[:5] == []
    kinds = {g[0] if g[0] == "ok" else str(g[1]).split(" ")[0] for g in got}
    assert kinds == {"ok", "malformed", "invalid", "major", "minor", "type"}  # every way out
    assert 0.05 * len(corpus) < sum(g[0] == "ok" for g in got) < 0.8 * len(corpus)


def test_access_parser_equals_the_old_expression() -> None:
    seeds = ["r", "w", "m", "rw", "wr", "rwm", "mwr"]
    edges = ["", "rr", "rwmr", "rwmm", "x", "R", " r", "r ", "r\n", "\u0433"]  # fmt: skip
    alphabet = ["r", "w", "m", "x", " ", "\n", ""]
    corpus = seeds + edges + mutants(seeds, alphabet, 5000, seed=5, ops=EDITS)
    got = [outcome(Access.parse, text) for text in corpus]
    assert got == [outcome(old_access, text) for text in corpus]
    assert 0.2 * len(corpus) < sum(g[0] == "ok" for g in got) < 0.8 * len(corpus)


def test_parse_devices_list_names_file_and_line() -> None:
    with pytest.raises(ParseError) as exc:
        parse_devices_list("c 1:3 rwm\nbogus\n", "/sys/fs/cgroup/devices/x/devices.list")
    assert exc.value.line == 2 and "devices.list:2" in str(exc.value)


def test_rule_constructor_validates() -> None:
    with pytest.raises(ValueError):
        DeviceRule(C, 1, 3, Access())
    with pytest.raises(ValueError):
        DeviceRule(DeviceType.ALL, None, None, Access("r"))


# --- OCI spec --------------------------------------------------------------------------------


def test_oci_device_rules_in_runc_order() -> None:
    config = {
        "linux": {
            "resources": {
                "devices": [
                    {"allow": False, "access": "rwm"},
                    {"allow": True, "type": "c", "major": 195, "access": "rw"},
                ]
            },
            "devices": [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}],
        }
    }
    # linux.devices nodes get no rule of their own: runc only creates them.
    assert oci_device_rules(config) == [DENY_ALL, char(195, None, "rw"), *DEFAULT_DEVICE_RULES]


def test_a_spec_node_replaces_the_default_rule_of_its_path() -> None:
    # runc drops a default whose path linux.devices names (its own entry decides then).
    config = {
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "devices": [{"path": "/dev/null", "type": "c", "major": 1, "minor": 3}],
        }
    }
    rules = oci_device_rules(config)
    assert char(1, 3, "rwm") not in rules
    assert rules == [DENY_ALL, *(r for r in DEFAULT_DEVICE_RULES if r != char(1, 3, "rwm"))]


@pytest.mark.parametrize(
    "config",
    [
        {"linux": {"resources": {"devices": [{"access": "rwm"}]}}},
        {"linux": {"resources": {"devices": [{"allow": True, "type": "x", "access": "rwm"}]}}},
        {"linux": {"resources": {"devices": [{"allow": True, "major": "195", "access": "rwm"}]}}},
        {"linux": {"resources": {"devices": {"allow": True}}}},
        {"linux": {"devices": [{"path": "/dev/x", "type": "c", "major": 1}]}},
        {"linux": {"devices": [{"type": "c", "major": 1, "minor": 1}]}},
        {"linux": {"resources": {"devices": [{"allow": True}]}}},
        {"linux": {"resources": {"devices": [{"allow": True, "access": ""}]}}},
        {"linux": []},
    ],
    ids=[
        "no-allow",
        "bad-type",
        "string-major",
        "not-a-list",
        "node-without-minor",
        "node-without-path",
        "no-access",
        "empty-access",
        "linux-list",
    ],
)
def test_oci_device_rules_fail_closed(config: dict[str, object]) -> None:
    with pytest.raises(ParseError):
        oci_device_rules(config)


# --- emulator: apply ---------------------------------------------------------------------------

APPLY_CASES = [
    # (name, default_allow, start exceptions, rule, expected exceptions or error)
    ("whitelist-add", False, {}, char(1, 3, "r"), {(C, 1, 3): "r"}),
    ("whitelist-add-merges", False, {(C, 1, 3): "r"}, char(1, 3, "w"), {(C, 1, 3): "rw"}),
    ("whitelist-remove-part", False, {(C, 1, 3): "rw"}, char(1, 3, "r", False), {(C, 1, 3): "w"}),
    ("whitelist-remove-all", False, {(C, 1, 3): "rw"}, char(1, 3, "rwm", False), {}),
    ("whitelist-remove-absent", False, {}, char(1, 3, "r", False), {}),
    (
        "whitelist-punch-hole-minor",
        False,
        {(C, 1, None): "rw"},
        char(1, 3, "r", False),
        "punch a hole",
    ),
    ("whitelist-punch-hole-all", False, {(C, None, None): "m"}, char(1, 3, "m", False), "wildcard"),
    (
        "whitelist-no-overlap-ok",
        False,
        {(C, 1, None): "m"},
        char(1, 3, "r", False),
        {(C, 1, None): "m"},
    ),
    ("blacklist-deny-adds", True, {}, char(1, 3, "r", False), {(C, 1, 3): "r"}),
    ("blacklist-allow-removes", True, {(C, 1, 3): "rw"}, char(1, 3, "r"), {(C, 1, 3): "w"}),
    ("blacklist-punch-hole", True, {(B, 8, None): "r"}, block(8, 1, "r"), "punch a hole"),
    ("deny-all-resets", True, {(C, 1, 3): "r"}, DENY_ALL, {}),
    ("allow-all-resets", False, {(C, 1, 3): "r"}, ALLOW_ALL, {}),
]


def _emu(
    default_allow: bool, exceptions: dict[tuple[DeviceType, int | None, int | None], str]
) -> Emulator:
    return Emulator(default_allow, {k: Access(v) for k, v in exceptions.items()})


@pytest.mark.parametrize(
    ("default_allow", "start", "rule", "expected"),
    [c[1:] for c in APPLY_CASES],
    ids=[c[0] for c in APPLY_CASES],
)
def test_emulator_apply(
    default_allow: bool,
    start: dict[tuple[DeviceType, int | None, int | None], str],
    rule: DeviceRule,
    expected: dict[tuple[DeviceType, int | None, int | None], str] | str,
) -> None:
    emu = _emu(default_allow, start)
    if isinstance(expected, str):
        with pytest.raises(CgroupError, match=expected):
            emu.apply(rule)
        return
    emu.apply(rule)
    want_default = rule.allow if rule.type is DeviceType.ALL else default_allow
    assert emu == _emu(want_default, expected)


def test_from_list_allow_all_and_whitelist() -> None:
    assert Emulator.from_list("a *:* rwm\n").is_allow_all
    emu = Emulator.from_list("c 1:3 rwm\nc 136:* rwm\nb *:* m\n")
    assert not emu.default_allow and len(emu.exceptions) == 3
    assert emu.listing()[0] == DeviceRule(B, None, None, Access("m"))
    with pytest.raises(ParseError):
        Emulator.from_list("a *:* rwm\nc 1:3 r\n")
    assert Emulator.from_list("").exceptions == {} and not Emulator.from_list("").default_allow


@pytest.mark.parametrize(
    ("listing", "device", "access", "allowed"),
    [
        ("c 238:* rw\n", (238, 5), "rw", True),
        ("c 238:5 r\nc 238:5 w\n", (238, 5), "rw", True),  # merged into one exception
        ("c 238:* r\nc 238:5 w\n", (238, 5), "rw", False),  # kernel: one exception must cover
        ("c *:* m\n", (238, 5), "r", False),
        ("a *:* rwm\n", (238, 5), "rwm", True),
        ("", (238, 5), "r", False),
    ],
    ids=[
        "wildcard",
        "same-key-merged",
        "split-across-exceptions",
        "mknod-only",
        "allow-all",
        "empty",
    ],
)
def test_allows(listing: str, device: tuple[int, int], access: str, allowed: bool) -> None:
    assert Emulator.from_list(listing).allows(C, *device, Access(access)) is allowed


# --- emulator: transitions ---------------------------------------------------------------------

TRANSITIONS = [
    ("noop", "c 1:3 rwm\n", "c 1:3 rwm\n", []),
    ("add", "c 1:3 rwm\n", "c 1:3 rwm\nc 238:5 r\n", ["allow c 238:5 r"]),
    ("remove", "c 1:3 rwm\nc 238:5 r\n", "c 1:3 rwm\n", ["deny c 238:5 r"]),
    ("partial", "c 238:5 rwm\n", "c 238:5 r\n", ["deny c 238:5 wm"]),
    ("to-allow-all", "c 1:3 rwm\n", "a *:* rwm\n", ["allow a *:* rwm"]),
    ("from-allow-all", "a *:* rwm\n", "c 1:3 r\n", ["deny a *:* rwm", "allow c 1:3 r"]),
]


@pytest.mark.parametrize(
    ("source", "target", "expected"),
    [t[1:] for t in TRANSITIONS],
    ids=[t[0] for t in TRANSITIONS],
)
def test_transition_table(source: str, target: str, expected: list[str]) -> None:
    src, dst = Emulator.from_list(source), Emulator.from_list(target)
    assert [str(r) for r in src.transition(dst)] == expected


def _random_state(rng: random.Random) -> Emulator:
    keys = [(C, 1, 3), (C, 238, None), (C, 238, 5), (C, None, None), (B, 8, 0), (B, None, 1)]
    emu = Emulator(default_allow=rng.random() < 0.3)
    for key in rng.sample(keys, rng.randint(0, len(keys))):
        emu.exceptions[key] = Access(rng.sample("rwm", rng.randint(1, 3)))
    return emu


@pytest.mark.parametrize("seed", range(5))
def test_transition_round_trip_property(seed: int) -> None:
    """Applying the computed transition to the source always reaches the target."""
    rng = random.Random(seed)
    for _ in range(200):
        src, dst = _random_state(rng), _random_state(rng)
        got = src.copy()
        for rule in src.transition(dst):
            got.apply(rule, strict=False)
        if dst.default_allow:
            # devices.list cannot show a blacklist's exceptions; from a list, it has none
            assert got.default_allow
        assert got == dst


def test_grant_then_rollback_round_trip() -> None:
    before = Emulator.from_list("c 1:3 rwm\nc 238:* r\nb *:* m\n")
    after = before.with_allowed([char(238, 5, "rw"), char(238, 6, "r"), char(1, 3, "r")])
    assert [str(r) for r in before.transition(after)] == ["allow c 238:5 rw"]
    back = after.copy()
    for rule in after.transition(before):
        back.apply(rule, strict=False)
    assert back == before


def test_with_allowed_refuses_deny_and_all() -> None:
    emu = Emulator.from_list("c 1:3 rwm\n")
    with pytest.raises(CgroupError):
        emu.with_allowed([char(1, 3, "r", False)])
    with pytest.raises(CgroupError):
        emu.with_allowed([ALLOW_ALL])


def test_without_refuses_hole_and_allow_all() -> None:
    with pytest.raises(CgroupError, match="wildcard"):
        Emulator.from_list("c 238:* r\n").without([char(238, 5, "r")])
    with pytest.raises(CgroupError):
        Emulator.from_list("a *:* rwm\n").without([char(238, 5, "r")])
    assert Emulator.from_list("c 238:5 rw\n").without([char(238, 5, "w")]).rules() == [
        char(238, 5, "r")
    ]


def test_rules_are_hashable_and_comparable() -> None:
    rules = {char(1, 3, "r"), char(1, 3, "r"), char(1, 3, "rw")}
    assert len(rules) == 2
    assert list(itertools.islice(iter(rules), 1))


def test_the_rebuild_rules_are_common_to_every_runtime() -> None:
    """A filter rebuilt from these must not give a container what its runtime never did: no
    runtime-specific default (runc's tun and mknod-anything, crun's console)."""
    rules = oci_device_rules({"linux": {"resources": {"devices": [DENY_ALL_SPEC]}}})
    for runtime_specific in (char(10, 200, "rwm"), char(5, 1, "rwm"),
                             DeviceRule(DeviceType.CHAR, None, None, Access("m")),
                             DeviceRule(DeviceType.BLOCK, None, None, Access("m"))):
        assert runtime_specific not in rules
    # The OCI runtime spec's default devices, and the pty slaves /dev/ptmx opens.
    assert {(r.major, r.minor) for r in rules if r.allow} == {
        (1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 2), (136, None)}


DENY_ALL_SPEC = {"allow": False, "access": "rwm"}

"""Pure parsing of the driver's files: named table cases, malformed input fails closed."""

from __future__ import annotations

import random
import re
import subprocess
import sys
from collections.abc import Callable

import pytest

from capctl import devnum, simulated
from capctl.driver import capfile, capnames, minorsfile, procdevices
from capctl.driver.capnames import Kind, Source
from capctl.errors import ParseError
from tests.support.fuzz import Op, mutate
from tests.support.source import CAPCTL_PATH

# --- names ----------------------------------------------------------------------------------

NAMES = [
    ("config", capnames.MigRef(Kind.CONFIG)),
    ("monitor", capnames.MigRef(Kind.MONITOR)),
    ("gpu0/gi2/access", capnames.MigRef(Kind.GI, 0, 2)),
    ("gpu31/gi14/ci7/access", capnames.MigRef(Kind.CI, 31, 14, 7)),
    ("gpu0/gi02/access", None),
    ("gpu0/gi2", None),
    ("gpu0/gi2/ci/access", None),
    ("../gpu0/gi2/access", None),
    ("gpu0/gi2/access/", None),
    ("Config", None),
    ("", None),
]


@pytest.mark.parametrize(("name", "want"), NAMES, ids=[n or "empty" for n, _ in NAMES])
def test_parse_mig_name(name: str, want: capnames.MigRef | None) -> None:
    assert capnames.parse_mig_name(name) == want


PATHS = [
    ("config", "proc/driver/nvidia/capabilities/mig/config", "dev/nvidia-caps/nvidia-cap1"),
    ("monitor", "proc/driver/nvidia/capabilities/mig/monitor", "dev/nvidia-caps/nvidia-cap2"),
    (
        "gpu0/gi2/access",
        "proc/driver/nvidia/capabilities/gpu0/mig/gi2/access",
        "dev/nvidia-caps/nvidia-cap21",
    ),
    (
        "gpu1/gi2/ci0/access",
        "proc/driver/nvidia/capabilities/gpu1/mig/gi2/ci0/access",
        "dev/nvidia-caps/nvidia-cap157",
    ),
]


@pytest.mark.parametrize(("name", "proc", "node"), PATHS, ids=[p[0] for p in PATHS])
def test_name_paths_both_ways(name: str, proc: str, node: str) -> None:
    minor = simulated.minor_of(name)
    assert capnames.proc_relpath(name, Source.MIG) == proc
    assert capnames.name_from_proc_relpath(proc) == name
    assert capnames.node_relpath(minor) == node


def test_other_sources_paths() -> None:
    assert (
        capnames.proc_relpath("fabric-mgmt", Source.NVLINK)
        == "proc/driver/nvidia-nvlink/capabilities/fabric-mgmt"
    )
    assert (
        capnames.proc_relpath("fabric-imex-mgmt", Source.SYS)
        == "proc/driver/nvidia/capabilities/fabric-imex-mgmt"
    )
    assert capnames.name_from_proc_relpath("proc/driver/nvidia/capabilities/fabric-imex-mgmt") is None


# --- minors files ---------------------------------------------------------------------------


def test_full_mig_minors() -> None:
    parsed = minorsfile.parse_minors(simulated.mig_minors_text(), "mig-minors", Source.MIG)
    assert len(parsed) == 4322
    table = minorsfile.CapabilityTable(parsed)
    assert table.get("gpu0/gi2/access") == minorsfile.Capability("gpu0/gi2/access", 21, Source.MIG)
    assert table.by_minor(4322) is not None and table.by_minor(4322).name == "gpu31/gi14/ci7/access"  # type: ignore[union-attr]


BAD_MINORS = [
    ("two-spaces", "config  1\n", 1, "malformed"),
    ("tab", "config\t1\n", 1, "malformed"),
    ("no-minor", "config\n", 1, "malformed"),
    ("negative", "config -1\n", 1, "malformed"),
    ("leading-zero", "config 01\n", 1, "malformed"),
    ("trailing-junk", "config 1 x\n", 1, "malformed"),
    ("unknown-name", "config 1\nfoo 2\n", 2, "not a mig-minors capability name"),
    ("path-name", "config 1\n../../etc 2\n", 2, "not a mig-minors capability name"),
    ("huge-minor", "config 2000000\n", 1, "out of range"),
    ("repeated-name", "config 1\nconfig 2\n", 2, "repeated"),
    ("repeated-minor", "config 1\nmonitor 1\n", 2, "repeated"),
]


@pytest.mark.parametrize(
    ("text", "line", "msg"), [b[1:] for b in BAD_MINORS], ids=[b[0] for b in BAD_MINORS]
)
def test_bad_minors_fail_closed(text: str, line: int, msg: str) -> None:
    with pytest.raises(ParseError) as exc:
        minorsfile.parse_minors(text, "/x/mig-minors", Source.MIG)
    assert exc.value.line == line
    assert msg in str(exc.value)
    assert str(exc.value).startswith(f"/x/mig-minors:{line}:")


def test_blank_lines_are_allowed() -> None:
    assert len(minorsfile.parse_minors("config 1\n\nmonitor 2\n", "f", Source.MIG)) == 2


# The whole-file parser (one findall) must accept exactly what the line parser accepts, and
# leave every error, with its line, to the line parser.  Each case is a full mig-minors with
# one change; the line is the 1-based line the error names.
FULL = simulated.mig_minors_text()
MID = FULL.count("\n") // 2  # a line in the middle (its 0-based index)


def _edit_line(index: int, line: str) -> str:
    lines = FULL.splitlines(keepends=True)
    lines[index] = line
    return "".join(lines)


BAD_IN_FULL = [
    ("malformed-middle", _edit_line(MID, "gpu15/gi7/access  2000\n"), MID + 1, "malformed"),
    ("junk-middle", _edit_line(MID, "hello\n"), MID + 1, "malformed"),
    (
        "unknown-name-middle",
        _edit_line(MID, "gpu1/gi2/cx3/access 5000\n"),
        MID + 1,
        "capability name",
    ),
    (
        "repeated-name-middle",
        _edit_line(MID, "config 5000\n"),
        MID + 1,
        "'config' repeated (first on line 1)",
    ),
    ("repeated-minor-middle", _edit_line(MID, "gpu99/gi0/access 2\n"), MID + 1, "minor 2 repeated"),
    (
        "out-of-range-last",
        FULL + "gpu99/gi0/access 1048576\n",
        FULL.count("\n") + 1,
        "out of range",
    ),
    ("cr-line-ending-first", "config 1\r\n" + FULL.split("\n", 1)[1], 1, None),
    ("tab-last-line", FULL + "gpu99/gi0/access\t5000", FULL.count("\n") + 1, "malformed"),
    ("nul-middle", _edit_line(MID, "gpu99/gi0/access 5000\0\n"), MID + 1, "malformed"),
]


@pytest.mark.parametrize(
    ("text", "line", "msg"), [b[1:] for b in BAD_IN_FULL], ids=[b[0] for b in BAD_IN_FULL]
)
def test_bad_line_in_full_file_names_its_line(text: str, line: int, msg: str | None) -> None:
    assert minorsfile._parse_minors_fast(text, Source.MIG) is None  # left to the line parser
    if msg is None:  # a line the line parser accepts: both must still agree
        assert minorsfile.parse_minors(text, "f", Source.MIG) == minorsfile._parse_minors_lines(
            text, "f", Source.MIG
        )
        return
    with pytest.raises(ParseError) as exc:
        minorsfile.parse_minors(text, "/x/mig-minors", Source.MIG)
    assert exc.value.line == line
    assert msg in str(exc.value)


GOOD_VARIANTS = [
    # (case, text, whether the whole-file parser takes it)
    ("full", FULL, True),
    ("no-final-newline", FULL.rstrip("\n"), True),
    ("single-line", "config 1\n", True),
    ("empty", "", False),
    ("blank-line-middle", _edit_line(MID, "\n"), False),
    ("spaces-line-middle", _edit_line(MID, "   \n"), False),
    ("blank-line-last", FULL + "\n", False),
    ("cr-separated", "config 1\rmonitor 2\r", False),
    ("max-minor", "config 1048575\n", True),
]


@pytest.mark.parametrize(
    ("text", "fast"), [g[1:] for g in GOOD_VARIANTS], ids=[g[0] for g in GOOD_VARIANTS]
)
def test_whole_file_parser_agrees_with_line_parser(text: str, fast: bool) -> None:
    want = minorsfile._parse_minors_lines(text, "f", Source.MIG)
    got = minorsfile._parse_minors_fast(text, Source.MIG)
    assert (got is not None) == fast
    if got is not None:
        assert got == want
    assert minorsfile.parse_minors(text, "f", Source.MIG) == want


@pytest.mark.parametrize(
    ("source", "text"),
    [
        (Source.NVLINK, "fabric-mgmt 0\n"),
        (Source.SYS, "fabric-imex-mgmt 4323\nfabric-imex-other 4324"),
        (Source.NVLINK, "Fabric-mgmt 0\n"),
        (Source.NVLINK, "gpu0/gi0/access 3\n"),
        (Source.SYS, "fabric-mgmt 0\nfabric-mgmt 1\n"),
    ],
    ids=["nvlink", "sys-two", "nvlink-capital", "nvlink-mig-name", "sys-repeated"],
)
def test_whole_file_parser_other_sources(source: Source, text: str) -> None:
    try:
        want: list[minorsfile.Capability] | str = minorsfile._parse_minors_lines(text, "f", source)
    except ParseError as err:
        want = str(err)
    got = minorsfile._parse_minors_fast(text, source)
    if isinstance(want, str):
        assert got is None
        with pytest.raises(ParseError):
            minorsfile.parse_minors(text, "f", source)
    else:
        assert got == want


def test_other_minors_grammar() -> None:
    assert minorsfile.parse_minors("fabric-mgmt 0\n", "f", Source.NVLINK)[0].name == "fabric-mgmt"
    with pytest.raises(ParseError):
        minorsfile.parse_minors("gpu0/gi0/access 3\n", "f", Source.NVLINK)


def test_find_agrees_with_full_parse_on_every_line() -> None:
    text = simulated.mig_minors_text()
    for cap in minorsfile.parse_minors(text, "m", Source.MIG):
        assert minorsfile.find_mig_capability(text, "m", cap.name) == cap


FIND_CASES = [
    # (case, text, name, found minor or None)
    ("first line", "config 1\nmonitor 2\n", "config", 1),
    ("last line without newline", "config 1\nmonitor 2", "monitor", 2),
    ("absent", "config 1\n", "monitor", None),
    ("prefix of another name", "gpu0/gi1/access 3\ngpu0/gi10/access 4\n", "gpu0/gi10/access", 4),
    ("suffix of another name", "xgpu0/gi1/access 3\ngpu0/gi1/access 4\n", "gpu0/gi1/access", 4),
]


@pytest.mark.parametrize(
    ("text", "name", "minor"), [c[1:] for c in FIND_CASES], ids=[c[0] for c in FIND_CASES]
)
def test_find_mig_capability(text: str, name: str, minor: int | None) -> None:
    found = minorsfile.find_mig_capability(text, "m", name)
    assert (found.minor if found else None) == minor


BAD_FIND = [
    # (case, text, line, message): the line looked up fails closed as parse_minors would.
    ("repeated name", "config 1\nmonitor 2\nconfig 3\n", 1, "'config' repeated"),
    ("repeated minor", "config 1\nmonitor 1\n", 1, "minor 1 repeated"),
    (
        "minor repeated on the last line",
        "monitor 2\nconfig 1\ngpu0/gi0/access 1",
        2,
        "minor 1 repeated",
    ),
    ("malformed minor", "monitor 2\nconfig 01\n", 2, "malformed line"),
    ("trailing junk", "config 1 x\n", 1, "malformed line"),
    ("carriage return", "config 1\r\n", 1, "malformed line"),
    ("minor out of range", "config 9999999\n", 1, "out of range"),
]


@pytest.mark.parametrize(
    ("text", "line", "msg"), [b[1:] for b in BAD_FIND], ids=[b[0] for b in BAD_FIND]
)
def test_find_mig_capability_fails_closed(text: str, line: int, msg: str) -> None:
    with pytest.raises(ParseError) as exc:
        minorsfile.find_mig_capability(text, "/x/mig-minors", "config")
    assert str(exc.value).startswith(f"/x/mig-minors:{line}:")
    assert msg in str(exc.value)


def test_merge_keeps_each_source() -> None:
    mig = minorsfile.parse_minors("config 1\nmonitor 2\n", "m", Source.MIG)
    nvl = minorsfile.parse_minors("fabric-mgmt 0\n", "n", Source.NVLINK)
    table = minorsfile.merge_tables({Source.MIG: mig, Source.NVLINK: nvl}, "minors")
    assert table.of_source(Source.NVLINK) == nvl and table.of_source(Source.SYS) == []
    assert minorsfile.CapabilityTable(mig + nvl).of_source(Source.MIG) == mig
    assert [c.name for c in table] == ["config", "monitor", "fabric-mgmt"]
    assert table.by_minor(0) == nvl[0] and table.get("monitor") == mig[1]


def test_merge_refuses_shared_minor_within_one_list() -> None:
    twice = [minorsfile.Capability("config", 1, Source.MIG), minorsfile.Capability("monitor", 1, Source.MIG)]
    with pytest.raises(ParseError, match="minor 1 given to both 'config'"):
        minorsfile.merge_tables({Source.MIG: twice}, "minors")


def test_merge_refuses_shared_minor() -> None:
    mig = minorsfile.parse_minors("config 1\n", "m", Source.MIG)
    nvl = minorsfile.parse_minors("fabric-mgmt 1\n", "n", Source.NVLINK)
    with pytest.raises(ParseError, match="minor 1 given to both"):
        minorsfile.merge_tables({Source.MIG: mig, Source.NVLINK: nvl}, "minors")


# --- capability files -----------------------------------------------------------------------

GOOD_CAPFILES = [
    (
        "config",
        "DeviceFileMinor: 1\nDeviceFileMode: 256\nDeviceFileModify: 1\n",
        capfile.CapabilityFile(1, 0o400, True),
    ),
    (
        "gi",
        "DeviceFileMinor: 21\nDeviceFileMode: 292\nDeviceFileModify: 0\n",
        capfile.CapabilityFile(21, 0o444, False),
    ),
    (
        "other-order",
        "DeviceFileModify: 1\nDeviceFileMode: 292\nDeviceFileMinor: 4\n",
        capfile.CapabilityFile(4, 0o444, True),
    ),
    # The driver prints whatever integer was written; only 1 is "managed" (nvidia-modprobe).
    (
        "modify-2",
        "DeviceFileMinor: 1\nDeviceFileMode: 256\nDeviceFileModify: 2\n",
        capfile.CapabilityFile(1, 0o400, False),
    ),
    (
        "modify-negative",
        "DeviceFileMinor: 1\nDeviceFileMode: 256\nDeviceFileModify: -7\n",
        capfile.CapabilityFile(1, 0o400, False),
    ),
    (
        "modify-int-max",
        "DeviceFileMinor: 1\nDeviceFileMode: 256\nDeviceFileModify: 2147483647\n",
        capfile.CapabilityFile(1, 0o400, False),
    ),
]


@pytest.mark.parametrize(
    ("text", "want"), [g[1:] for g in GOOD_CAPFILES], ids=[g[0] for g in GOOD_CAPFILES]
)
def test_capability_file(text: str, want: capfile.CapabilityFile) -> None:
    assert capfile.parse_capability_file(text, "f") == want
    assert capfile.parse_capability_file(capfile.format_capability_file(want), "f") == want


BAD_CAPFILES = [
    ("missing-modify", "DeviceFileMinor: 1\nDeviceFileMode: 256\n", "missing DeviceFileModify"),
    (
        "repeated",
        "DeviceFileMinor: 1\nDeviceFileMinor: 1\nDeviceFileMode: 256\nDeviceFileModify: 1\n",
        "repeated",
    ),
    (
        "octal-mode-text",
        "DeviceFileMinor: 1\nDeviceFileMode: 0o400\nDeviceFileModify: 1\n",
        "malformed",
    ),
    (
        "mode-too-big",
        "DeviceFileMinor: 1\nDeviceFileMode: 4095\nDeviceFileModify: 1\n",
        "not a permission mode",
    ),
    (
        "unknown-key",
        "DeviceFileMinor: 1\nDeviceFileMode: 256\nDeviceFileModify: 1\nFoo: 1\n",
        "malformed",
    ),
    ("negative", "DeviceFileMinor: -1\nDeviceFileMode: 256\nDeviceFileModify: 1\n", "malformed"),
    (
        "modify-not-a-number",
        "DeviceFileMinor: 1\nDeviceFileMode: 256\nDeviceFileModify: yes\n",
        "malformed",
    ),
    (
        "modify-too-long",
        "DeviceFileMinor: 1\nDeviceFileMode: 256\nDeviceFileModify: 12345678901\n",
        "malformed",
    ),
]


@pytest.mark.parametrize(
    ("text", "msg"), [b[1:] for b in BAD_CAPFILES], ids=[b[0] for b in BAD_CAPFILES]
)
def test_bad_capability_file(text: str, msg: str) -> None:
    with pytest.raises(ParseError, match=msg):
        capfile.parse_capability_file(text, "/proc/x")


# --- /proc/devices --------------------------------------------------------------------------


def test_proc_devices_ignores_block_section() -> None:
    chars = procdevices.parse_proc_devices(simulated.PROC_DEVICES, "devices")
    # 238 is both nvidia-caps (char) and blkext (block) in the simulated file.
    assert procdevices.nvidia_majors(chars) == procdevices.Majors(238, 195, 239)
    assert "blkext" not in chars and "loop" not in chars


def test_proc_devices_names_with_slashes() -> None:
    chars = procdevices.parse_proc_devices("Character devices:\n  4 /dev/vc/0\n203 cpu/cpuid\n", "d")
    assert chars == {"/dev/vc/0": 4, "cpu/cpuid": 203}


@pytest.mark.parametrize("text", [simulated.PROC_DEVICES, simulated.LEGACY_PROC_DEVICES],
                         ids=["545-on", "before-545"])
def test_proc_devices_gpu_major_both_names(text: str) -> None:
    assert procdevices.nvidia_majors(procdevices.parse_proc_devices(text, "d")).frontend == 195


def test_proc_devices_modern_names_without_nvidia() -> None:
    chars = procdevices.parse_proc_devices("Character devices:\n195 nvidiactl\n", "d")
    assert procdevices.nvidia_majors(chars).frontend == 195


def test_other_names_with_slashes() -> None:
    caps = minorsfile.parse_minors("fabric-mgmt 0\nimex/channel-0 5000\n", "f", Source.SYS)
    assert [c.name for c in caps] == ["fabric-mgmt", "imex/channel-0"]
    assert minorsfile._parse_minors_fast("imex/channel-0 5000\n", Source.SYS) == caps[1:]
    assert capnames.proc_relpath("imex/channel-0", Source.SYS) == (
        "proc/driver/nvidia/capabilities/imex/channel-0"
    )
    for bad in ("../etc 5", "/abs 5", "a//b 5", "a/ 5"):
        with pytest.raises(ParseError, match="not a sys-minors capability name"):
            minorsfile.parse_minors(bad + "\n", "f", Source.SYS)


def test_proc_devices_legacy_nvidia_major() -> None:
    chars = procdevices.parse_proc_devices("Character devices:\n195 nvidia\n", "d")
    assert procdevices.nvidia_majors(chars) == procdevices.Majors(None, 195, None)


BAD_DEVICES = [
    ("no-char-section", "Block devices:\n  7 loop\n", "no 'Character devices:'"),
    ("junk-before", "hello\nCharacter devices:\n", "before a section"),
    ("malformed-entry", "Character devices:\n  x nvidia-caps\n", "malformed"),
    ("major-too-big", "Character devices:\n9999 nvidia-caps\n", "out of range"),
    ("missing-name", "Character devices:\n238\n", "malformed"),
]


@pytest.mark.parametrize(
    ("text", "msg"), [b[1:] for b in BAD_DEVICES], ids=[b[0] for b in BAD_DEVICES]
)
def test_bad_proc_devices(text: str, msg: str) -> None:
    with pytest.raises(ParseError, match=msg):
        procdevices.parse_proc_devices(text, "/proc/devices")


def test_malformed_block_section_is_not_our_business() -> None:
    text = "Character devices:\n238 nvidia-caps\n\nBlock devices:\nwhatever here\n"
    assert procdevices.parse_proc_devices(text, "d") == {"nvidia-caps": 238}


# --- the str parsers against the regular expressions they replaced ---------------------------
#
# The hook imports caps on every container start, so its line parsers are str methods, not
# ``re`` (docs/hook-startup.md).  These are the expressions they replaced, kept as the oracle: on every case
# below, hand-written and mutated at random, a parser and its expression must agree.

ORACLE_MIG_NAME = re.compile(
    r"(?P<fixed>config|monitor)"
    r"|gpu(?P<gpu>0|[1-9][0-9]{0,3})/gi(?P<gi>0|[1-9][0-9]{0,3})"
    r"(?:/ci(?P<ci>0|[1-9][0-9]{0,3}))?/access"
)
_ORACLE_SEGMENT = r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*"
ORACLE_OTHER_NAME = re.compile(rf"{_ORACLE_SEGMENT}(?:/{_ORACLE_SEGMENT})*")
_ORACLE_MINOR = r"(?P<minor>0|[1-9][0-9]{0,6})"
ORACLE_MINORS_LINE = re.compile(r"(?P<name>\S+) " + _ORACLE_MINOR)
ORACLE_MIG_MINORS_LINE = re.compile(r"(?P<name>" + ORACLE_MIG_NAME.pattern + r") " + _ORACLE_MINOR)
ORACLE_OTHER_MINORS_LINE = re.compile(
    r"(?P<name>" + ORACLE_OTHER_NAME.pattern + r") " + _ORACLE_MINOR
)
ORACLE_DEVICES_ENTRY = re.compile(r" *(?P<major>[0-9]{1,4}) (?P<name>\S+)")
ORACLE_CAPFILE_LINE = re.compile(
    r"(?P<key>DeviceFileMinor|DeviceFileMode): (?P<value>[0-9]{1,7})"
    r"|(?P<mkey>DeviceFileModify): (?P<mvalue>-?[0-9]{1,10})"
)
ORACLE_PROC_MIG = re.compile(
    r"mig/(?P<fixed>config|monitor)"
    r"|gpu(?P<gpu>[0-9]+)/mig/gi(?P<gi>[0-9]+)(?:/ci(?P<ci>[0-9]+))?/access"
)


def oracle_whole_file(line: re.Pattern[str]) -> re.Pattern[str]:
    one = re.sub(r"\(\?P<\w+>", "(?:", line.pattern)
    return re.compile(f"(?:{one}\n)*(?:{one}\n?)?")


def oracle_mig_name(name: str) -> capnames.MigRef | None:
    m = ORACLE_MIG_NAME.fullmatch(name)
    if m is None:
        return None
    if m["fixed"]:
        return capnames.MigRef(Kind(m["fixed"]))
    if m["ci"] is None:
        return capnames.MigRef(Kind.GI, int(m["gpu"]), int(m["gi"]))
    return capnames.MigRef(Kind.CI, int(m["gpu"]), int(m["gi"]), int(m["ci"]))


def oracle_minors_line(line: str) -> tuple[str, int] | None:
    m = ORACLE_MINORS_LINE.fullmatch(line)
    return None if m is None else (m["name"], int(m["minor"]))


def oracle_devices_entry(line: str) -> tuple[int, str] | None:
    m = ORACLE_DEVICES_ENTRY.fullmatch(line)
    return None if m is None else (int(m["major"]), m["name"])


def oracle_capfile_line(line: str) -> tuple[str, int] | None:
    m = ORACLE_CAPFILE_LINE.fullmatch(line)
    if m is None:
        return None
    return (m["key"], int(m["value"])) if m["key"] else (m["mkey"], int(m["mvalue"]))


def oracle_name_from_proc_relpath(relpath: str) -> str | None:
    prefix = capnames.CAPABILITIES_DIR + "/"
    if not relpath.startswith(prefix):
        return None
    m = ORACLE_PROC_MIG.fullmatch(relpath[len(prefix) :])
    if m is None:
        return None
    if m["fixed"]:
        return str(m["fixed"])
    if m["ci"] is None:
        return capnames.gi_name(int(m["gpu"]), int(m["gi"]))
    return capnames.ci_name(int(m["gpu"]), int(m["gi"]), int(m["ci"]))


def oracle_parse_minors_line(line: str, source: Source) -> tuple[str, int] | str:
    """What the regex-based line parser made of one line: (name, minor) or its error."""
    line_re = ORACLE_MIG_MINORS_LINE if source is Source.MIG else ORACLE_OTHER_MINORS_LINE
    m = line_re.fullmatch(line)
    if m is not None and source is not Source.MIG and ORACLE_MIG_NAME.fullmatch(m["name"]):
        m = None  # a MIG name outside mig-minors
    if m is None:
        return "malformed" if ORACLE_MINORS_LINE.fullmatch(line) is None else "not a name"
    return m["name"], int(m["minor"])


#: Characters the mutations draw from: the grammars' own, white space of every kind the
#: ``re`` module knows, digits that are not ASCII (Arabic-Indic three, superscript two,
#: fullwidth one, Devanagari five), and upper case.
MUTATION_CHARS = (
    "0123456789abcgimnoprstuvxyz-/:_+. ACDFMZ"
    "\t\n\r\x0b\x0c\x1c\x1f\x85\xa0\u2003\u2028\u3000"
    "\u0663\xb2\uff11\u096b\xb9"
)


#: The edits of the mutations: insert, delete, replace, duplicate a slice, swap neighbours.
EDITS: tuple[Op, ...] = ("insert", "delete", "replace", "repeat_slice", "swap")


def cases(hand: list[str], valid: list[str], seed: int, count: int = 3000) -> list[str]:
    """The hand-written cases, then ``count`` random mutations of the valid ones."""
    rng = random.Random(seed)
    mutated = [mutate(rng, rng.choice(valid), MUTATION_CHARS, EDITS) for _ in range(count)]
    return hand + valid + mutated


def agree(
    parser: Callable[[str], object], oracle: Callable[[str], object], inputs: list[str]
) -> set[bool]:
    """Assert that both give the same answer on every input; return which of "rejected" the
    answers were (a test also wants accepted and rejected cases both)."""
    answers = set()
    for text in inputs:
        want, got = oracle(text), parser(text)
        assert got == want, text
        answers.add(want is None)
    return answers


VALID_NAMES = [
    "config",
    "monitor",
    "gpu0/gi0/access",
    "gpu0/gi2/access",
    "gpu31/gi14/ci7/access",
    "gpu9999/gi9999/ci9999/access",
    "gpu10/gi0/ci0/access",
    "gpu1000/gi100/ci10/access",
]
HAND_NAMES = [
    "",
    "/",
    "gpu",
    "access",
    "Config",
    "CONFIG",
    "configs",
    "config\n",
    " config",
    "config ",
    "mig/config",
    "monitor/",
    "gpu00/gi0/access",
    "gpu0/gi00/access",
    "gpu0/gi0/ci00/access",
    "gpu01/gi0/access",
    "gpu10000/gi0/access",
    "gpu0/gi10000/access",
    "gpu0/gi0/ci10000/access",
    "gpu\u0663/gi0/access",
    "gpu\xb2/gi0/access",
    "gpu0/gi\uff11/access",
    "gpu/gi0/access",
    "gpu0/gi/access",
    "gpu0/gi0/ci/access",
    "gpu-1/gi0/access",
    "gpu+1/gi0/access",
    "gpu1_0/gi0/access",
    "gpu 1/gi0/access",
    "gpu0/gi0/ci0/ci0/access",
    "gpu0/gi0/access/",
    "/gpu0/gi0/access",
    "gpu0//gi0/access",
    "gpu0/mig/gi0/access",
    "gpu0/gi0/acces",
    "gpu0/gi0/ACCESS",
    "GPU0/gi0/access",
    "gpu0/GI0/access",
    "gpu0/gi0/CI0/access",
    "gpu0/ci0/gi0/access",
    "gpu0/gi0/ci0",
    "gpu0/gi0",
    "gpu0/gi0/access\n",
    "gpu0\t/gi0/access",
    "gpu0/gi0/access\x00",
    "fabric-mgmt",
    "gpu0/gi0/cx0/access",
    "gpu0/gi0/access/access",
]


def test_mig_name_parser_agrees_with_its_regex() -> None:
    answers = agree(capnames.parse_mig_name, oracle_mig_name, cases(HAND_NAMES, VALID_NAMES, 1))
    assert answers == {True, False}


VALID_OTHER = ["fabric-mgmt", "fabric-imex-mgmt", "a", "z9", "a-1", "a1-b2-c3", "x-0-0",
               "imex/channel-0", "a/b-c/d"]
HAND_OTHER = [
    "",
    "-",
    "1",
    "1a",
    "-a",
    "a-",
    "a--b",
    "A",
    "aB",
    "a_b",
    "a b",
    "a.b",
    "a/b",
    "a/",
    "/a",
    "a//b",
    "a/../b",
    "../a",
    "a/1",
    "a/B",
    "\xe9",
    "a-\xe9",
    "a\n",
    "a\u0663",
    "fabric-mgmt ",
    " fabric-mgmt",
    "Fabric-mgmt",
    "config",
]


def test_other_name_parser_agrees_with_its_regex() -> None:
    def oracle(name: str) -> bool | None:
        return True if ORACLE_OTHER_NAME.fullmatch(name) else None

    def parser(name: str) -> bool | None:
        return True if capnames._is_other_name(name) else None

    assert agree(parser, oracle, cases(HAND_OTHER, VALID_OTHER, 2)) == {True, False}
    for name in cases(HAND_OTHER + HAND_NAMES, VALID_OTHER + VALID_NAMES, 3):
        want = oracle_mig_name(name) is not None or ORACLE_OTHER_NAME.fullmatch(name) is not None
        assert capnames.is_valid_name(name) == want, name


VALID_MINORS_LINES = [
    "config 0",
    "monitor 1",
    "gpu0/gi2/access 21",
    "gpu31/gi14/ci7/access 4322",
    "fabric-mgmt 9999999",
    "x 1048575",
    "../../etc 2",
    "a/b 10",
    *simulated.mig_minors_text().splitlines()[::97],
]
HAND_MINORS_LINES = [
    "",
    " ",
    "1",
    " 1",
    "config",
    "config ",
    "config  1",
    "config\t1",
    " config 1",
    "config 1 ",
    "config 1\n",
    "config 1\r",
    "config 01",
    "config 00",
    "config 0\n",
    "config -1",
    "config +1",
    "config 1_0",
    "config \u0663",
    "config \xb2",
    "config 1\xb2",
    "config \uff11",
    "config 10000000",
    "config 1234567",
    "config 12345678",
    "config\xa01",
    "con\u2003fig 1",
    "config 1 x",
    "config 1 2",
    "\x0bconfig 1",
    "config\x00 1",
]


def test_minors_line_parser_agrees_with_its_regex() -> None:
    inputs = cases(HAND_MINORS_LINES, VALID_MINORS_LINES, 4)
    assert agree(minorsfile._minors_line, oracle_minors_line, inputs) == {True, False}


@pytest.mark.parametrize("source", list(Source), ids=[s.value for s in Source])
def test_minors_line_errors_agree_with_the_regexes(source: Source) -> None:
    # Through the public parser: the same verdict, the same kind of error, on one-line files.
    seen = set()
    for line in cases(HAND_MINORS_LINES + HAND_NAMES, VALID_MINORS_LINES, 5):
        if len(line.splitlines()) != 1 or not line.strip():
            continue  # several lines, or a blank one: that is the file parser's business
        want = oracle_parse_minors_line(line.splitlines()[0], source)
        try:
            (cap,) = minorsfile._parse_minors_lines(line, "f", source)
            got: tuple[str, int] | str = cap.name, cap.minor
        except ParseError as err:
            if "malformed line" in err.reason:
                got = "malformed"
            elif "capability name" in err.reason:
                got = "not a name"
            else:
                got = err.reason
        if isinstance(want, tuple) and want[1] > devnum.MAX_MINOR:
            want = f"minor {want[1]} out of range"
        assert got == want, line
        seen.add(want if isinstance(want, str) else "ok")
    assert {"ok", "malformed", "not a name"} <= seen


def test_find_judges_its_line_as_the_regex_did() -> None:
    # find_mig_capability on a one-line file, looking up the line's own name.
    seen = set()
    for line in cases(HAND_MINORS_LINES, VALID_MINORS_LINES, 6):
        if "\n" in line:
            continue
        name = line.partition(" ")[0]
        m = ORACLE_MIG_MINORS_LINE.fullmatch(line)
        want: int | str | None = (
            None
            if not line.startswith(f"{name} ")  # no blank: the name is not there
            else "malformed"
            if m is None or m["name"] != name
            else int(m["minor"])
        )
        if isinstance(want, int) and want > devnum.MAX_MINOR:
            want = "out of range"
        try:
            found = minorsfile.find_mig_capability(line, "m", name)
            got: int | str | None = None if found is None else found.minor
        except ParseError as err:
            got = "malformed" if "malformed line" in err.reason else err.reason
            got = "out of range" if "out of range" in err.reason else got
        assert got == want, line
        seen.add(type(want))
    assert seen == {int, str, type(None)}


VALID_DEVICES = [
    "  1 mem",
    "238 nvidia-caps",
    "195 nvidia-frontend",
    "  4 /dev/vc/0",
    "203 cpu/cpuid",
    "0 x",
    "0238 x",
    "9999 x",
    "      10 misc",
]
HAND_DEVICES = [
    "",
    " ",
    "12",
    "12 ",
    " 12 ",
    "12345 x",
    "\t12 x",
    "12  x",
    "12\tx",
    "12 x y",
    "12 x\n",
    "12 x ",
    "x 12",
    "\u0663 x",
    "\xb2 x",
    "1\uff11 x",
    "-1 x",
    "+1 x",
    "1_0 x",
    "12 x\xa0",
    "\xa012 x",
    "12 \u2003",
    "  4 tty\x0b",
    "Character devices:",
    "Block devices:",
    "12 \x00",
]


def test_devices_entry_parser_agrees_with_its_regex() -> None:
    inputs = cases(HAND_DEVICES, VALID_DEVICES, 7)
    assert agree(procdevices._devices_entry, oracle_devices_entry, inputs) == {True, False}


VALID_CAPFILE = [f"{k}: {v}" for k in capfile._CAPFILE_KEYS for v in ("0", "1", "292", "1234567")]
HAND_CAPFILE = [
    "",
    ":",
    ": 1",
    "DeviceFileMinor",
    "DeviceFileMinor:",
    "DeviceFileMinor: ",
    "DeviceFileMinor:1",
    "DeviceFileMinor :1",
    "DeviceFileMinor  : 1",
    "DeviceFileMinor:  1",
    "DeviceFileMinor:\t1",
    "devicefileminor: 1",
    "DEVICEFILEMINOR: 1",
    "DeviceFileMinorX: 1",
    "DeviceFile: 1",
    "Foo: 1",
    "DeviceFileMode: 0o400",
    "DeviceFileMode: 12345678",
    "DeviceFileMode: 0000000",
    "DeviceFileMode: 00000000",
    "DeviceFileMode: -1",
    "DeviceFileMode: \u0663",
    "DeviceFileMode: \xb2",
    "DeviceFileMode: 1 ",
    " DeviceFileMode: 1",
    "DeviceFileMode: 1\n",
    "DeviceFileMode: 1: 2",
    "DeviceFileMinor: DeviceFileMode: 1",
    "DeviceFileModify: -",
    "DeviceFileModify: --1",
    "DeviceFileModify: -\u0663",
    "DeviceFileModify: +1",
    "DeviceFileModify: -12345678901",
    "DeviceFileModify: -1234567890",
    "DeviceFileModify: 1234567890",
    "DeviceFileMinor: -1234567",
]


def test_capability_file_line_parser_agrees_with_its_regex() -> None:
    inputs = cases(HAND_CAPFILE, VALID_CAPFILE, 8)
    # parse_capability_file strips each line before judging it, as it did before.
    stripped = [line.strip() for line in inputs]
    assert agree(capfile._capfile_line, oracle_capfile_line, inputs + stripped) == {True, False}


VALID_PROC = [
    f"{capnames.CAPABILITIES_DIR}/{rest}"
    for rest in (
        "mig/config",
        "mig/monitor",
        "gpu0/mig/gi0/access",
        "gpu31/mig/gi14/ci7/access",
        "gpu007/mig/gi01/ci002/access",
        "gpu123456789/mig/gi0/access",
    )
]
HAND_PROC = [
    f"{capnames.CAPABILITIES_DIR}/{rest}"
    for rest in (
        "",
        "mig",
        "mig/",
        "mig/other",
        "mig/config/",
        "mig/config\n",
        "config",
        "gpu\u0663/mig/gi0/access",
        "gpu\xb2/mig/gi0/access",
        "gpu/mig/gi0/access",
        "gpu0/mig/gi/access",
        "gpu0/mig/gi0/ci/access",
        "gpu0/mig/gi0/ci0/x/access",
        "gpu0/mig/gi0",
        "gpu0/gi0/access",
        "gpu0/MIG/gi0/access",
        "gpu0/mig/gi0/access\n",
        "gpu0/mig/gi0/ci0/ci0/access",
        "fabric-imex-mgmt",
        "gpu0/mig/gi-1/access",
        "gpu0/mig/gi0/cx0/access",
    )
] + ["", "mig/config", "proc/driver/nvidia/capabilities", "x/" + VALID_PROC[0]]


def test_proc_path_parser_agrees_with_its_regex() -> None:
    inputs = cases(HAND_PROC, VALID_PROC, 9)
    assert agree(capnames.name_from_proc_relpath, oracle_name_from_proc_relpath, inputs) == {
        True,
        False,
    }


def test_every_white_space_and_digit_character() -> None:
    # Each code point that re, str.split or int might call white space or a digit, in the
    # place of a name's character and of a number's.
    special = [
        chr(c)
        for c in range(sys.maxunicode + 1)
        if chr(c).isspace()
        or chr(c).isdigit()
        or chr(c).isnumeric()
        or re.fullmatch(r"\s", chr(c))
        or re.fullmatch(r"\d", chr(c))
    ]
    assert len(special) > 1000 and "\u0663" in special and "\x1c" in special
    for c in special + [chr(c) for c in range(128)]:
        for line in (f"a{c}b 1", f"gpu0/gi0/access 1{c}", f"config {c}", f"{c} 1"):
            assert minorsfile._minors_line(line) == oracle_minors_line(line), line
        for line in (f"1{c} x", f" {c} x", f"12 x{c}"):
            assert procdevices._devices_entry(line) == oracle_devices_entry(line), line
        line = f"DeviceFileMode: 4{c}"
        assert capfile._capfile_line(line) == oracle_capfile_line(line), line
        name = f"gpu{c}/gi0/access"
        assert capnames.parse_mig_name(name) == oracle_mig_name(name), name
        relpath = f"{capnames.CAPABILITIES_DIR}/gpu0/mig/gi{c}/access"
        assert capnames.name_from_proc_relpath(relpath) == oracle_name_from_proc_relpath(relpath)


@pytest.mark.parametrize("source", list(Source), ids=[s.value for s in Source])
def test_whole_file_pattern_agrees_with_its_old_construction(source: Source) -> None:
    oracle = oracle_whole_file(
        ORACLE_MIG_MINORS_LINE if source is Source.MIG else ORACLE_OTHER_MINORS_LINE
    )
    rng = random.Random(10)
    # Every line case, alone and between two good lines of this file's kind...
    good = ("config 1", "monitor 2") if source is Source.MIG else ("a 1", "b-c 2")
    lines = cases(
        [*HAND_MINORS_LINES, "x_y 1", "a-b_c 1", "config 12345678", "fabric-mgmt 99999999"],
        VALID_MINORS_LINES + [f"{name} {minor}" for minor, name in enumerate(VALID_OTHER)],
        10,
    )
    texts = ["", "\n", "\n\n", *lines]
    texts += [f"{good[0]}\n{line}\n{good[1]}" for line in lines]
    # ... and a whole file of its kind with one line mutated.
    if source is Source.MIG:
        full = FULL.splitlines(keepends=True)
    else:
        full = [f"{name} {minor}\n" for minor, name in enumerate(VALID_OTHER)]
    texts += ["".join(full), "".join(full).rstrip("\n")]
    for _ in range(50):
        edited = list(full)
        i = rng.randrange(len(edited))
        edited[i] = mutate(rng, edited[i], MUTATION_CHARS, EDITS)
        texts.append("".join(edited))
    verdicts = set()
    for text in texts:
        want = oracle.fullmatch(text) is not None
        assert (minorsfile._minors_file(source).fullmatch(text) is not None) == want, text[:200]
        verdicts.add(want)
    assert verdicts == {True, False}


# --- what importing caps costs the hook ------------------------------------------------------

#: What a module on the hook's path may import from the standard library (docs/hook-startup.md), and what
#: ``os`` brings with it when ``site`` has not imported it already.
HOOK_STDLIB = frozenset(
    {
        "os",
        "sys",
        "stat",
        "posixpath",
        "errno",
        "time",
        "io",
        "_json",
        "syslog",
        "fcntl",
        "_operator",
        "itertools",
        "__future__",
        "os.path",
        "genericpath",
        "_stat",
        "_collections_abc",
    }
)


def imports_of(module: str) -> set[str]:
    """The modules that importing ``module`` adds, with ``site`` off (``-S``: this checkout's
    editable install makes ``site`` import re and pathlib, which would hide them)."""
    code = (
        f"import sys; sys.path.insert(0, {CAPCTL_PATH!r}); before = set(sys.modules); "
        f"import {module}; print(*sorted(set(sys.modules) - before))"
    )
    res = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True
    )
    return set(res.stdout.split())


def test_importing_caps_loads_only_what_the_hook_may() -> None:
    added = imports_of("capctl.driver.capnames")
    assert "capctl.driver.capnames" in added and "capctl._lite.litenum" in added
    assert sorted(m for m in added if not m.startswith("capctl") and m not in HOOK_STDLIB) == []


def test_a_compute_instances_name_from_its_gi_agrees_with_the_whole_path() -> None:
    """``sync`` names each ``ci<C>`` entry of a GI's proc directory from the GI's own name
    (:func:`capnames.ci_name_in_gi`) instead of parsing the whole path: the same answer."""
    special = [chr(c) for c in range(0x10000) if chr(c).isdigit() or chr(c).isspace()]
    entries = ["ci0", "ci7", "ci007", "ci12345678", "ci", "c0", "cx0", "ci-1", "ci+1", "ci 1",
               "ci1 ", "ci0x", "CI0", "ci1/2", "access", *(f"ci{c}" for c in special),
               *(f"ci1{c}" for c in special)]
    gis = [f"{capnames.CAPABILITIES_DIR}/gpu{g}/mig/gi{i}"
           for g in ("0", "07", "31", "1234567") for i in ("0", "14", "0003")]
    for gi_dir in gis:
        gi_access = capnames.name_from_proc_relpath(f"{gi_dir}/access")
        assert gi_access is not None, gi_dir
        for entry in entries:
            want = capnames.name_from_proc_relpath(f"{gi_dir}/{entry}/access")
            assert capnames.ci_name_in_gi(gi_access, entry) == want, (gi_dir, entry)

"""Pure parsing of the driver's files: named table cases, malformed input fails closed."""

from __future__ import annotations

import pytest

from capctl import caps, simulated
from capctl.caps import Kind, Source
from capctl.errors import ParseError

# --- names ----------------------------------------------------------------------------------

NAMES = [
    ("config", caps.MigRef(Kind.CONFIG)),
    ("monitor", caps.MigRef(Kind.MONITOR)),
    ("gpu0/gi2/access", caps.MigRef(Kind.GI, 0, 2)),
    ("gpu31/gi14/ci7/access", caps.MigRef(Kind.CI, 31, 14, 7)),
    ("gpu0/gi02/access", None),
    ("gpu0/gi2", None),
    ("gpu0/gi2/ci/access", None),
    ("../gpu0/gi2/access", None),
    ("gpu0/gi2/access/", None),
    ("Config", None),
    ("", None),
]


@pytest.mark.parametrize(("name", "want"), NAMES, ids=[n or "empty" for n, _ in NAMES])
def test_parse_mig_name(name: str, want: caps.MigRef | None) -> None:
    assert caps.parse_mig_name(name) == want


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
    assert caps.proc_relpath(name, Source.MIG) == proc
    assert caps.name_from_proc_relpath(proc) == name
    assert caps.node_relpath(minor) == node


def test_other_sources_paths() -> None:
    assert (
        caps.proc_relpath("fabric-mgmt", Source.NVLINK)
        == "proc/driver/nvidia-nvlink/capabilities/fabric-mgmt"
    )
    assert (
        caps.proc_relpath("fabric-imex-mgmt", Source.SYS)
        == "proc/driver/nvidia/capabilities/fabric-imex-mgmt"
    )
    assert caps.name_from_proc_relpath("proc/driver/nvidia/capabilities/fabric-imex-mgmt") is None


# --- minors files ---------------------------------------------------------------------------


def test_full_mig_minors() -> None:
    parsed = caps.parse_minors(simulated.mig_minors_text(), "mig-minors", Source.MIG)
    assert len(parsed) == 4322
    table = caps.CapabilityTable(parsed)
    assert table.get("gpu0/gi2/access") == caps.Capability("gpu0/gi2/access", 21, Source.MIG)
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
        caps.parse_minors(text, "/x/mig-minors", Source.MIG)
    assert exc.value.line == line
    assert msg in str(exc.value)
    assert str(exc.value).startswith(f"/x/mig-minors:{line}:")


def test_blank_lines_are_allowed() -> None:
    assert len(caps.parse_minors("config 1\n\nmonitor 2\n", "f", Source.MIG)) == 2


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
    assert caps._parse_minors_fast(text, Source.MIG) is None  # left to the line parser
    if msg is None:  # a line the line parser accepts: both must still agree
        assert caps.parse_minors(text, "f", Source.MIG) == caps._parse_minors_lines(
            text, "f", Source.MIG
        )
        return
    with pytest.raises(ParseError) as exc:
        caps.parse_minors(text, "/x/mig-minors", Source.MIG)
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
    want = caps._parse_minors_lines(text, "f", Source.MIG)
    got = caps._parse_minors_fast(text, Source.MIG)
    assert (got is not None) == fast
    if got is not None:
        assert got == want
    assert caps.parse_minors(text, "f", Source.MIG) == want


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
        want: list[caps.Capability] | str = caps._parse_minors_lines(text, "f", source)
    except ParseError as err:
        want = str(err)
    got = caps._parse_minors_fast(text, source)
    if isinstance(want, str):
        assert got is None
        with pytest.raises(ParseError):
            caps.parse_minors(text, "f", source)
    else:
        assert got == want


def test_other_minors_grammar() -> None:
    assert caps.parse_minors("fabric-mgmt 0\n", "f", Source.NVLINK)[0].name == "fabric-mgmt"
    with pytest.raises(ParseError):
        caps.parse_minors("gpu0/gi0/access 3\n", "f", Source.NVLINK)


def test_find_agrees_with_full_parse_on_every_line() -> None:
    text = simulated.mig_minors_text()
    for cap in caps.parse_minors(text, "m", Source.MIG):
        assert caps.find_mig_capability(text, "m", cap.name) == cap


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
    found = caps.find_mig_capability(text, "m", name)
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
        caps.find_mig_capability(text, "/x/mig-minors", "config")
    assert str(exc.value).startswith(f"/x/mig-minors:{line}:")
    assert msg in str(exc.value)


def test_merge_keeps_each_source() -> None:
    mig = caps.parse_minors("config 1\nmonitor 2\n", "m", Source.MIG)
    nvl = caps.parse_minors("fabric-mgmt 0\n", "n", Source.NVLINK)
    table = caps.merge_tables({Source.MIG: mig, Source.NVLINK: nvl}, "minors")
    assert table.of_source(Source.NVLINK) == nvl and table.of_source(Source.SYS) == []
    assert caps.CapabilityTable(mig + nvl).of_source(Source.MIG) == mig
    assert [c.name for c in table] == ["config", "monitor", "fabric-mgmt"]
    assert table.by_minor(0) == nvl[0] and table.get("monitor") == mig[1]


def test_merge_refuses_shared_minor_within_one_list() -> None:
    twice = [caps.Capability("config", 1, Source.MIG), caps.Capability("monitor", 1, Source.MIG)]
    with pytest.raises(ParseError, match="minor 1 given to both 'config'"):
        caps.merge_tables({Source.MIG: twice}, "minors")


def test_merge_refuses_shared_minor() -> None:
    mig = caps.parse_minors("config 1\n", "m", Source.MIG)
    nvl = caps.parse_minors("fabric-mgmt 1\n", "n", Source.NVLINK)
    with pytest.raises(ParseError, match="minor 1 given to both"):
        caps.merge_tables({Source.MIG: mig, Source.NVLINK: nvl}, "minors")


# --- capability files -----------------------------------------------------------------------

GOOD_CAPFILES = [
    (
        "config",
        "DeviceFileMinor: 1\nDeviceFileMode: 256\nDeviceFileModify: 1\n",
        caps.CapabilityFile(1, 0o400, True),
    ),
    (
        "gi",
        "DeviceFileMinor: 21\nDeviceFileMode: 292\nDeviceFileModify: 0\n",
        caps.CapabilityFile(21, 0o444, False),
    ),
    (
        "other-order",
        "DeviceFileModify: 1\nDeviceFileMode: 292\nDeviceFileMinor: 4\n",
        caps.CapabilityFile(4, 0o444, True),
    ),
]


@pytest.mark.parametrize(
    ("text", "want"), [g[1:] for g in GOOD_CAPFILES], ids=[g[0] for g in GOOD_CAPFILES]
)
def test_capability_file(text: str, want: caps.CapabilityFile) -> None:
    assert caps.parse_capability_file(text, "f") == want
    assert caps.parse_capability_file(caps.format_capability_file(want), "f") == want


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
    ("modify-2", "DeviceFileMinor: 1\nDeviceFileMode: 256\nDeviceFileModify: 2\n", "want 0 or 1"),
    (
        "unknown-key",
        "DeviceFileMinor: 1\nDeviceFileMode: 256\nDeviceFileModify: 1\nFoo: 1\n",
        "malformed",
    ),
    ("negative", "DeviceFileMinor: -1\nDeviceFileMode: 256\nDeviceFileModify: 1\n", "malformed"),
]


@pytest.mark.parametrize(
    ("text", "msg"), [b[1:] for b in BAD_CAPFILES], ids=[b[0] for b in BAD_CAPFILES]
)
def test_bad_capability_file(text: str, msg: str) -> None:
    with pytest.raises(ParseError, match=msg):
        caps.parse_capability_file(text, "/proc/x")


# --- /proc/devices --------------------------------------------------------------------------


def test_proc_devices_ignores_block_section() -> None:
    chars = caps.parse_proc_devices(simulated.PROC_DEVICES, "devices")
    # 238 is both nvidia-caps (char) and blkext (block) in the simulated file.
    assert caps.nvidia_majors(chars) == caps.Majors(238, 195, 239)
    assert "blkext" not in chars and "loop" not in chars


def test_proc_devices_names_with_slashes() -> None:
    chars = caps.parse_proc_devices("Character devices:\n  4 /dev/vc/0\n203 cpu/cpuid\n", "d")
    assert chars == {"/dev/vc/0": 4, "cpu/cpuid": 203}


def test_proc_devices_legacy_nvidia_major() -> None:
    chars = caps.parse_proc_devices("Character devices:\n195 nvidia\n", "d")
    assert caps.nvidia_majors(chars) == caps.Majors(None, 195, None)


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
        caps.parse_proc_devices(text, "/proc/devices")


def test_malformed_block_section_is_not_our_business() -> None:
    text = "Character devices:\n238 nvidia-caps\n\nBlock devices:\nwhatever here\n"
    assert caps.parse_proc_devices(text, "d") == {"nvidia-caps": 238}

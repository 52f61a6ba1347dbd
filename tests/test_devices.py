"""The NVIDIA_VISIBLE_DEVICES grammar: every form, every rejection (pure, table-driven)."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from capctl.errors import DeviceError
from capctl.request.devices import (
    MAX_TOKEN,
    DeviceRef,
    GpuByIndex,
    GpuByPciBusId,
    GpuByUuid,
    MigByIndex,
    MigByInstance,
    MigByUuid,
    Request,
    parse_request,
    parse_token,
)
from tests.support.fuzz import Op, mutants

U = "6f1c2a52-7d3e-4a0b-9c55-2c6f0e7b1a00"
U2 = "0b9a3c1e-1111-4222-8333-944455556666"

ACCEPT = [
    ("unset", None, []),
    ("empty", "", []),
    ("blank", "  \t ", []),
    ("none", "none", []),
    ("void", "void", []),
    ("none padded", " none ", []),
    ("mig uuid", f"MIG-{U}", [MigByUuid(f"MIG-{U}")]),
    ("mig uuid upper hex", f"MIG-{U.upper()}", [MigByUuid(f"MIG-{U}")]),
    ("mig triple", f"MIG-GPU-{U}/7/0", [MigByInstance(f"GPU-{U}", 7, 0)]),
    ("mig triple two digits", f"MIG-GPU-{U}/13/7", [MigByInstance(f"GPU-{U}", 13, 7)]),
    ("mig index", "0:1", [MigByIndex(0, 1)]),
    ("mig index multi digit", "12:10", [MigByIndex(12, 10)]),
    ("gpu uuid", f"GPU-{U}", [GpuByUuid(f"GPU-{U}")]),
    ("gpu index", "3", [GpuByIndex(3)]),
    ("gpu index zero", "0", [GpuByIndex(0)]),
    ("list", f"0, 1:2 ,GPU-{U2}", [GpuByIndex(0), MigByIndex(1, 2), GpuByUuid(f"GPU-{U2}")]),
    ("tabs", "\t0\t,\t1\t", [GpuByIndex(0), GpuByIndex(1)]),
    ("duplicates dropped", "1,0,1, 0", [GpuByIndex(1), GpuByIndex(0)]),
    ("duplicate uuid case", f"MIG-{U},MIG-{U.upper()}", [MigByUuid(f"MIG-{U}")]),
    # The container toolkit's spellings.
    ("empty item", "0,,1", [GpuByIndex(0), GpuByIndex(1)]),
    ("trailing comma", "0,", [GpuByIndex(0)]),
    ("leading comma", ",0", [GpuByIndex(0)]),
    ("only commas", ", ,", []),
    ("pci bus id", "0000:07:00.0", [GpuByPciBusId("00000000:07:00.0")]),
    ("pci bus id nvml domain", "00000000:10:00.0", [GpuByPciBusId("00000000:10:00.0")]),
    ("pci bus id upper hex", "0000:0A:1F.7", [GpuByPciBusId("00000000:0a:1f.7")]),
    ("pci bus id in a list", "0000:07:00.0,1:2",
     [GpuByPciBusId("00000000:07:00.0"), MigByIndex(1, 2)]),
]


@pytest.mark.parametrize("value", ["all", "ALL", "All", " aLl "])
def test_all_in_any_case(value: str) -> None:
    assert parse_request(value) == Request(all=True)


@pytest.mark.parametrize(("value", "want"), [(v, w) for _, v, w in ACCEPT],
                         ids=[i for i, _, _ in ACCEPT])
def test_accept(value: str | None, want: list[object]) -> None:
    req = parse_request(value)
    assert not req.all
    assert [r.device for r in req.refs] == want
    assert req.empty == (want == [])


def test_all() -> None:
    assert parse_request("all") == Request(all=True)
    assert parse_request(" all ").all
    assert not parse_request("all").empty


def test_token_kept_for_messages() -> None:
    req = parse_request(" 0:1 , 2")
    assert [r.token for r in req.refs] == ["0:1", "2"]


LONG = "1" * (MAX_TOKEN + 1)

REJECT = [
    # (id, value, the token the error must quote)
    ("absolute path", "/dev/nvidia0", "/dev/nvidia0"),
    ("dotdot", "..", ".."),
    ("dotdot path", "../../etc/passwd", "../../etc/passwd"),
    ("relative path", "dev/nvidia0", "dev/nvidia0"),
    ("node name", "nvidia0", "nvidia0"),
    ("triple with dotdot", f"MIG-GPU-{U}/../0", f"MIG-GPU-{U}/../0"),
    ("triple extra part", f"MIG-GPU-{U}/1/0/0", f"MIG-GPU-{U}/1/0/0"),
    ("overlong", LONG, LONG[:MAX_TOKEN]),
    ("short uuid", "GPU-6f1c2a52-7d3e-4a0b-9c55", "GPU-6f1c2a52-7d3e-4a0b-9c55"),
    ("uuid bad hex", f"GPU-{U[:-1]}g", f"GPU-{U[:-1]}g"),
    ("uuid no dashes", "GPU-" + U.replace("-", ""), "GPU-" + U.replace("-", "")),
    ("uuid lower prefix", f"gpu-{U}", f"gpu-{U}"),
    ("mig uuid bad", "MIG-1234", "MIG-1234"),
    ("old mig uuid with gpu prefix only", f"MIG-GPU-{U}", f"MIG-GPU-{U}"),
    ("negative index", "-1", "-1"),
    ("leading zero", "01", "01"),
    ("plus sign", "+1", "+1"),
    ("index too long", "1234", "1234"),
    ("mig index missing part", "0:", "0:"),
    ("mig index three parts", "0:1:2", "0:1:2"),
    ("space inside", "0 1", "0 1"),
    ("newline inside", "0\n1", "0\n1"),
    ("all in a list", "all,0", "all"),
    ("none in a list", "0,none", "none"),
    ("all inside a list in upper case", "0,ALL", "ALL"),
    ("pci bus id function 8", "0000:07:00.8", "0000:07:00.8"),
    ("pci bus id 6-digit domain", "000000:07:00.0", "000000:07:00.0"),
    ("pci bus id no function", "0000:07:00", "0000:07:00"),
    ("glob", "*", "*"),
    ("unicode digit", "\u0661", "\u0661"),
    ("nul", "0\x00", "0\x00"),
]


@pytest.mark.parametrize(("value", "token"), [(v, t) for _, v, t in REJECT],
                         ids=[i for i, _, _ in REJECT])
def test_reject(value: str, token: str) -> None:
    with pytest.raises(DeviceError) as info:
        parse_request(value)
    assert info.value.device.startswith(token)
    assert repr(info.value.device) in str(info.value)


def test_path_like_message() -> None:
    with pytest.raises(DeviceError, match="path"):
        parse_request("/dev/nvidia0")


def test_overlong_value() -> None:
    with pytest.raises(DeviceError, match="longer than"):
        parse_request(",".join(["0"] * 5000))


# --- the string parsers against the regular expressions they replaced -----------------------
# devices.py parses tokens with string methods (``re`` costs 5 ms of every hook start); these
# are the expressions it used before, kept as the oracle: same language, same results.

_HEX_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_INDEX = r"0|[1-9][0-9]{0,2}"
ORACLE_FORMS: list[tuple[re.Pattern[str], Callable[[re.Match[str]], DeviceRef]]] = [
    (re.compile(rf"MIG-(?P<uuid>{_HEX_UUID})"),
     lambda m: MigByUuid("MIG-" + m["uuid"].lower())),
    (re.compile(rf"MIG-GPU-(?P<uuid>{_HEX_UUID})/(?P<gi>{_INDEX})/(?P<ci>{_INDEX})"),
     lambda m: MigByInstance("GPU-" + m["uuid"].lower(), int(m["gi"]), int(m["ci"]))),
    (re.compile(rf"(?P<gpu>{_INDEX}):(?P<mig>{_INDEX})"),
     lambda m: MigByIndex(int(m["gpu"]), int(m["mig"]))),
    (re.compile(rf"GPU-(?P<uuid>{_HEX_UUID})"),
     lambda m: GpuByUuid("GPU-" + m["uuid"].lower())),
    (re.compile(rf"(?P<gpu>{_INDEX})"), lambda m: GpuByIndex(int(m["gpu"]))),
    (re.compile(r"(?P<d>[0-9a-fA-F]{4}|[0-9a-fA-F]{8}):(?P<b>[0-9a-fA-F]{2}):"
                r"(?P<s>[0-9a-fA-F]{2}\.[0-7])"),
     lambda m: GpuByPciBusId(f"{m['d'].lower():0>8}:{m['b'].lower()}:{m['s'].lower()}")),
]


def oracle_device(token: str) -> DeviceRef | None:
    for pattern, build in ORACLE_FORMS:
        if m := pattern.fullmatch(token):
            return build(m)
    return None


def outcome(token: str) -> tuple[str, object]:
    try:
        return "ok", parse_token(token)
    except DeviceError as err:
        return "error", (err.device, str(err))


#: Characters a careless parser lets through: superscript two, Arabic-Indic three,
#: full-width three and A, a long s, a dotted capital I, control characters, blanks.
ODD = "\u00b2\u0663\uff13\uff21\u017f\u0130é\x00\n\t \x7f"


#: The edits of the mutation corpus: delete, insert, replace, upper-case a tail, repeat a
#: character up to 39 more times.
EDITS: tuple[Op, ...] = ("delete", "insert", "replace", "upper", "repeat_char")


TOKENS = [
    f"MIG-{U}", f"MIG-{U.upper()}", f"MIG-{U[:9]}{U[9:].upper()}", f"MIG-GPU-{U}/7/0",
    f"MIG-GPU-{U2.upper()}/13/7", f"MIG-GPU-{U}/0/0", f"MIG-GPU-{U}/999/999",
    f"MIG-GPU-{U}/1000/0", f"MIG-GPU-{U}/01/0", f"MIG-GPU-{U}/1/", f"MIG-GPU-{U}//1",
    f"MIG-GPU-{U}/1/0/", f"MIG-GPU-{U}", f"MIG-GPU-MIG-{U}/1/0", f"GPU-{U}", f"GPU-{U2}",
    f"GPU-{U}-", f"GPU-{U[:-1]}", f"GPU-{U}0", f"GPU-{U.replace('-', '')}",
    f"GPU-{U[:8]}{U[9:13]}-{U[13:]}-0", f"mig-{U}", f"MIG-{U}\n", f"GPU--{U[1:]}",
    "0", "1", "9", "10", "99", "100", "999", "1000", "01", "00", "000", "007", "-0", "+1",
    "0:0", "1:2", "12:10", "999:999", "1000:0", "0:1000", "01:1", "1:01", "0:", ":0", "0::0",
    "0:1:2", " 0", "0 ", "\u00b2", "\u0663", "\uff13", "1\u00b2", "1:\u0663", "0x1", "1e2", "1_0", "", "all", "none",
    "void", "..", "/dev/nvidia0", "nvidia0", "0000:07:00.0", "00000000:10:00.7",
    "0000:0a:1F.3", "0000:07:00.8", "000:07:00.0", "0000:7:00.0", "0000:07:00:0",
]


def test_token_parser_is_the_regular_expressions() -> None:
    alphabet = "0123456789abcdefABCDEFGgMIUP-:/_."
    tokens = TOKENS + mutants(TOKENS, alphabet + ODD, 4000, seed=17, ops=EDITS, max_repeat=39)
    accepted = 0
    for token in tokens:
        got = outcome(token)
        want = oracle_device(token)
        if want is not None and len(token) <= MAX_TOKEN:
            assert got == ("ok", want), token
            accepted += 1
        else:
            assert got[0] == "error", (token, got)
    assert accepted > 200  # both sides of the grammar are exercised


#: Every ASCII character and the odd ones above.
CHARS = [chr(c) for c in range(128)] + list(ODD)


def check_tokens(tokens: list[str]) -> None:
    for token in tokens:
        want = oracle_device(token)
        if want is None:
            assert outcome(token)[0] == "error", token
        else:
            assert outcome(token) == ("ok", want), token


@pytest.mark.parametrize("form", [f"MIG-{U}", f"GPU-{U}", f"MIG-GPU-{U}/1/0"],
                         ids=["mig uuid", "gpu uuid", "mig triple"])
def test_every_single_substitution_in_a_uuid_token(form: str) -> None:
    # Each character of the token replaced by each of CHARS, and deleted, and doubled.
    tokens = [form[:i] + c + form[i + 1:] for i in range(len(form)) for c in CHARS]
    tokens += [form[:i] + form[i + 1:] for i in range(len(form))]
    tokens += [form[:i] + form[i] + form[i:] for i in range(len(form))]
    check_tokens(tokens)


def test_every_short_index_token() -> None:
    # All strings of up to four characters over digits, the index separators and look-alikes.
    alphabet = "019:/\u00b2\u0663\uff13 +-"
    level, tokens = [""], []
    for _ in range(4):
        level = [t + c for t in level for c in alphabet]
        tokens += level
    assert len(tokens) == 11 + 11**2 + 11**3 + 11**4
    check_tokens(tokens)


@pytest.mark.parametrize("text", ["\u00b2", "\u0663", "\uff13", "1\u00b2", "\u0663:0", "0:\uff13", "\uff11"],
                         ids=["superscript", "arabic-indic", "fullwidth", "digit-superscript",
                              "arabic-indic-mig", "fullwidth-mig", "fullwidth-one"])
def test_non_ascii_digits_refused(text: str) -> None:
    assert text[-1].isdigit() or text[0].isdigit()  # str.isdigit would have taken them
    with pytest.raises(DeviceError, match="not a device"):
        parse_request(text)


def test_index_bounds() -> None:
    assert [parse_token(str(i)) for i in (0, 7, 999)] == [
        GpuByIndex(0), GpuByIndex(7), GpuByIndex(999)]
    for text in ("1000", "01", "00", "-1", "+0"):
        with pytest.raises(DeviceError):
            parse_token(text)

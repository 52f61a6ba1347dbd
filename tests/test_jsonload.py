"""Strict JSON without the json package (:mod:`capctl._lite.jsonload`), held to ``json.loads``.

The oracle is ``json.loads`` with the two rules jsonload adds (a repeated key and ``NaN`` /
``Infinity`` are errors): on every document both give the same value, or both refuse, and a
syntax error reads exactly like json's.  Documents come from a table (valid, invalid, deep,
escapes, surrogates, big numbers, whitespace, trailing data, BOM), from random values dumped
in several layouts, and from random mutations of those, with fixed seeds.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from typing import Any

import pytest

from capctl._lite import jsonload
from capctl._lite.jsonload import JSONError
from tests.support.fuzz import Op, mutate
from tests.support.source import CAPCTL_PATH


class OracleError(Exception):
    pass


def _oracle_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise OracleError("duplicate key")
    return dict(pairs)


def _oracle_constant(name: str) -> Any:
    raise OracleError(name)


def _oracle_float(text: str) -> float:
    import math

    value = float(text)
    if not math.isfinite(value):
        raise OracleError(f"{text} overflows")
    return value


def oracle(text: str) -> tuple[str, Any]:
    """("ok", value) or ("refused", error) as json.loads sees ``text`` under the rules."""
    try:
        return "ok", json.loads(text, object_pairs_hook=_oracle_pairs,
                                parse_constant=_oracle_constant, parse_float=_oracle_float)
    except (ValueError, OracleError, RecursionError) as err:
        return "refused", err


def ours(text: str | bytes, loads: Any = jsonload.loads) -> tuple[str, Any]:
    try:
        return "ok", loads(text)
    except JSONError as err:
        return "refused", str(err)


def same(a: Any, b: Any) -> bool:
    """Equal values of equal types, dict keys in the same order, floats bit for bit."""
    todo = [(a, b)]
    while todo:
        x, y = todo.pop()
        if type(x) is not type(y):
            return False
        if isinstance(x, dict):
            if list(x) != list(y):
                return False
            todo.extend((x[k], y[k]) for k in x)
        elif isinstance(x, list):
            if len(x) != len(y):
                return False
            todo.extend(zip(x, y, strict=True))
        elif repr(x) != repr(y):  # floats: -0.0 is not 0.0
            return False
    return True


def check(text: str) -> None:
    want, got = oracle(text), ours(text)
    assert want[0] == got[0], (text[:200], want, got)
    if want[0] == "ok":
        assert same(want[1], got[1]), (text[:200], want, got)
    elif isinstance(want[1], json.JSONDecodeError):  # a syntax error: the very same message
        assert got[1] == str(want[1]), (text[:200], got[1], want[1])


DEEP = 100_000

DOCUMENTS: list[tuple[str, str]] = [
    # values
    ("object", '{"a": 1, "b": [true, false, null], "c": {"d": "e"}}'),
    ("empty object", "{}"),
    ("empty array", "[]"),
    ("string", '"x"'),
    ("number", "42"),
    ("true", "true"),
    ("null", "null"),
    ("nested", '{"a": {"b": {"c": [[[{}]]]}}}'),
    ("key order", '{"z": 1, "a": 2, "m": 3}'),
    ("same key in two objects", '[{"a": 1}, {"a": 2}]'),
    ("same key nested", '{"a": {"a": {"a": 1}}}'),
    # numbers
    ("negative zero", "-0"),
    ("float negative zero", "-0.0"),
    ("exponent", "1e5"),
    ("exponent upper signed", "1E+05"),
    ("exponent negative", "2.5e-3"),
    ("big int", "1" + "0" * 300),
    ("int at the digit limit", "9" * 4300),
    ("int over the digit limit", "9" * 4301),
    ("huge exponent", "1e400"),
    ("huge negative exponent", "-1e400"),
    ("huge in an object", '{"memory": 1.0e999}'),
    ("largest double", "1.7976931348623157e308"),
    ("tiny exponent", "1e-400"),
    ("tiny exponent", "1e-400"),
    ("long fraction", "0." + "3" * 400),
    ("leading zero", "01"),
    ("leading plus", "+1"),
    ("bare minus", "-"),
    ("dot first", ".5"),
    ("dot last", "5."),
    ("exponent without digits", "1e"),
    ("hex", "0x10"),
    ("NaN", "NaN"),
    ("Infinity", "Infinity"),
    ("-Infinity", "-Infinity"),
    ("NaN in object", '{"gpus": NaN}'),
    ("nan lower", "nan"),
    # strings and escapes
    ("escapes", r'"\" \\ \/ \b \f \n \r \t"'),
    ("unicode escape", r'"\u00e9\u4e2d"'),
    ("surrogate pair", r'"\ud83d\ude00"'),
    ("lone high surrogate", r'"\ud800"'),
    ("lone low surrogate", r'"\udc00x"'),
    ("reversed surrogates", r'"\udc00\ud800"'),
    ("upper hex escape", r'"\u00E9"'),
    ("short unicode escape", r'"\u12"'),
    ("bad unicode escape", r'"\u12g4"'),
    ("x in unicode escape", r'"\u0x12"'),
    ("bad escape", r'"\x41"'),
    ("escaped nul", r'"\u0000"'),
    ("raw control character", '"a\nb"'),
    ("raw tab", '"a\tb"'),
    ("raw nul", '"a\x00b"'),
    ("raw DEL", '"a\x7fb"'),
    ("non-ASCII", '"é中😀"'),
    ("raw lone surrogate", '"\ud800"'),
    ("unterminated string", '"abc'),
    ("backslash at end", '"abc\\'),
    ("single quotes", "'a'"),
    ("key not string", "{1: 2}"),
    ("escaped key", r'{"\u0061": 1}'),
    # duplicates
    ("duplicate key", '{"gpus": [], "gpus": []}'),
    ("duplicate key same value", '{"a": 1, "a": 1}'),
    ("duplicate key nested", '{"x": {"id": "a", "id": "b"}}'),
    ("duplicate key by escape", r'{"id": 1, "\u0069d": 2}'),
    ("duplicate key in array", '[{"a": 1, "b": 2, "a": 3}]'),
    # syntax
    ("empty", ""),
    ("blank", " \t\n\r "),
    ("unclosed object", '{"a": 1'),
    ("unclosed array", "[1, 2"),
    ("trailing comma array", "[1, 2,]"),
    ("trailing comma object", '{"a": 1,}'),
    ("missing colon", '{"a" 1}'),
    ("missing comma", "[1 2]"),
    ("missing value", '{"a": }'),
    ("comment", "[1] // x"),
    ("bare word", "yes"),
    ("True", "True"),
    ("nul", "null\x00"),
    # whitespace and trailing data
    ("whitespace around", " \t\r\n{\"a\" : [ 1 , 2 ] }\n\r\t "),
    ("form feed before", "\x0c[1]"),
    ("form feed after", "[1]\x0c"),
    ("vertical tab inside", "[1,\x0b2]"),
    ("no-break space", "\xa0[1]"),
    ("ideographic space after", "[1]\u3000"),
    ("line separator after", "[1]\u2028"),
    ("extra value", "[1] [2]"),
    ("extra value after newline", "{}\n\n  {}"),
    ("extra comma", "1,"),
    ("two numbers", "1 2"),
    ("garbage", "[1]x"),
    ("BOM", "\ufeff[1]"),
    ("BOM after blank", " \ufeff[1]"),
    ("BOM inside string", '"\ufeff"'),
    # depth
    ("deep arrays", "[" * 500 + "]" * 500),
    ("deep objects", '{"a":' * 500 + "1" + "}" * 500),
    ("too deep arrays", "[" * DEEP + "]" * DEEP),
    ("too deep objects", '{"a":' * DEEP + "1" + "}" * DEEP),
    ("too deep unclosed", "[" * DEEP),
]


@pytest.mark.parametrize("text", [d for _, d in DOCUMENTS], ids=[i for i, _ in DOCUMENTS])
def test_like_json(text: str) -> None:
    check(text)


REFUSED: list[tuple[str, str, str]] = [
    ("duplicate key", '{"gpus": [], "gpus": []}', "duplicate key 'gpus'"),
    ("duplicate key nested", '{"x": {"id": "a", "id": "b"}}', "duplicate key 'id'"),
    ("duplicate key by escape", r'{"id": 1, "\u0069d": 2}', "duplicate key 'id'"),
    ("NaN", '{"gpus": NaN}', "NaN is not JSON"),
    ("Infinity", "[Infinity]", "Infinity is not JSON"),
    ("-Infinity", "-Infinity", "-Infinity is not JSON"),
    ("empty", "", "Expecting value: line 1 column 1 (char 0)"),
    ("blank", "  \n ", "Expecting value: line 2 column 2 (char 4)"),
    ("extra data", "[1]\n  x", "Extra data: line 2 column 3 (char 6)"),
    ("BOM", "\ufeff{}", "Unexpected UTF-8 BOM"),
    ("too deep", "[" * DEEP + "]" * DEEP, "nested too deeply"),
]


@pytest.mark.parametrize(("text", "message"), [c[1:] for c in REFUSED],
                         ids=[c[0] for c in REFUSED])
def test_refused_with_message(text: str, message: str) -> None:
    with pytest.raises(JSONError) as info:
        jsonload.loads(text)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


def test_error_position() -> None:
    with pytest.raises(JSONError) as info:
        jsonload.loads('{\n  "a": 1,\n  "b" 2\n}')
    err = info.value
    assert (err.msg, err.pos, err.lineno, err.colno) == ("Expecting ':' delimiter", 18, 3, 7)


def test_plain_json_documents_decode_as_json_does() -> None:
    # Without repeated keys or constants jsonload is json.loads, value for value.
    accepted = 0
    for _, text in DOCUMENTS:
        if oracle(text)[0] == "ok":
            assert same(jsonload.loads(text), json.loads(text)), text[:100]
            accepted += 1
    assert accepted > 30


# --- generated documents --------------------------------------------------------------------

KEYS = ["a", "b", "id", "gpus", "é", "\u0000", "\ud800", "k" * 40, ""]
STRINGS = ["", "x", "MIG-1", "a\"b", "back\\slash", "tab\t", "nl\n", "é中😀", "\x7f", "\ud83d"]


def random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice([0, -1, 7, 2**53 + 1, -(10**30), rng.randrange(-10**6, 10**6)])
    if kind == 2:
        return rng.choice([0.5, -0.0, 1e-300, 1.7976931348623157e308, rng.uniform(-1e6, 1e6)])
    if kind in (3, 4, 5):
        return rng.choice(STRINGS)
    if kind in (6, 7):
        return {rng.choice(KEYS): random_value(rng, depth + 1) for _ in range(rng.randrange(4))}
    return [random_value(rng, depth + 1) for _ in range(rng.randrange(4))]


def layouts(value: Any) -> list[str]:
    return [
        json.dumps(value),
        json.dumps(value, ensure_ascii=False),
        json.dumps(value, indent=2),
        json.dumps(value, indent="\t", separators=(" ,\r\n", " :\t")),
        " \n" + json.dumps(value, separators=(",", ":")) + "\r\n\t",
    ]


def test_random_documents() -> None:
    rng = random.Random(5)
    for _ in range(400):
        for text in layouts(random_value(rng)):
            check(text)


PIECES = ['"', "\\", "\\u", "{", "}", "[", "]", ",", ":", " ", "\n", "0", "-", "e", ".",
          "NaN", "\ufeff", "\x00", "tru", "nul", '"a":1', "1e999"]


#: The edits of the mutations: delete a character, insert or replace one with a piece.
EDITS: tuple[Op, ...] = ("delete", "insert", "replace")


def test_random_mutations() -> None:
    rng = random.Random(55)
    refused = 0
    for _ in range(3000):
        text = mutate(rng, rng.choice(layouts(random_value(rng))), PIECES, EDITS)
        check(text)
        refused += oracle(text)[0] == "refused"
    assert refused > 500  # the mutations do reach the error paths


# --- bytes ----------------------------------------------------------------------------------


def test_bytes_are_utf8() -> None:
    rng = random.Random(7)
    for _ in range(200):
        text = rng.choice(layouts(random_value(rng)))
        try:
            data = text.encode()
        except UnicodeEncodeError:  # a lone surrogate in a str made by ensure_ascii=False
            continue
        want, got = ours(text), ours(data)
        assert want[0] == got[0] and (want[0] != "ok" or same(want[1], got[1])), text


BYTES_REFUSED: list[tuple[str, bytes]] = [
    ("invalid utf-8", b'{"id": "\xff"}'),
    ("truncated utf-8", b'"\xc3"'),
    ("overlong utf-8", b'"\xc0\xaf"'),
    ("encoded surrogate", b'"\xed\xa0\x80"'),
    ("utf-8 BOM", b"\xef\xbb\xbf{}"),
    ("utf-16", '{"a": 1}'.encode("utf-16")),
    ("utf-16-le", '{"a": 1}'.encode("utf-16-le")),
    ("utf-32", '{"a": 1}'.encode("utf-32")),
]


@pytest.mark.parametrize("data", [d for _, d in BYTES_REFUSED], ids=[i for i, _ in BYTES_REFUSED])
def test_bytes_refused(data: bytes) -> None:
    with pytest.raises(JSONError):
        jsonload.loads(data)


def test_bytes_json_would_guess_are_refused() -> None:
    # The difference from json.loads(bytes), on purpose: it guesses UTF-16/32 and BOMs and
    # lets encoded surrogates through; Go's encoding/json (runc) does none of that.
    for _, data in BYTES_REFUSED[3:]:
        json.loads(data)  # accepted there
        assert ours(data)[0] == "refused"


def test_invalid_utf8_names_the_byte() -> None:
    with pytest.raises(JSONError, match=r"not UTF-8 \(byte 8\)"):
        jsonload.loads(b'{"id": "\xff"}')


# --- without _json, and without json loaded --------------------------------------------------


def test_json_fallback_agrees(monkeypatch: pytest.MonkeyPatch) -> None:
    # What runs where _json does not exist (json.loads with the same rules), on the same
    # documents; messages included.
    rng = random.Random(9)
    texts = [d for _, d in DOCUMENTS]
    texts += [
        mutate(rng, rng.choice(layouts(random_value(rng))), PIECES, EDITS) for _ in range(500)
    ]
    fast = [ours(text) for text in texts]
    monkeypatch.setattr(jsonload, "_scan", None)
    for text, want in zip(texts, fast, strict=True):
        got = ours(text)
        assert got[0] == want[0], (text[:100], got, want)
        assert got[0] != "ok" or same(got[1], want[1])
        assert got[0] != "refused" or got[1] == want[1], (text[:100], got, want)


def _run(code: str, stdin: str = "") -> str:
    res = subprocess.run([sys.executable, "-I", "-S", "-c", code], input=stdin,
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


def test_without_c_scanner() -> None:
    texts = [d for _, d in DOCUMENTS if len(d) < 10_000]
    code = (
        f"import sys, ast; sys.path.insert(0, {CAPCTL_PATH!r}); sys.modules['_json'] = None\n"
        "from capctl._lite import jsonload\n"
        "assert jsonload._scan is None\n"
        "for text in ast.literal_eval(sys.stdin.read()):\n"
        "    try: print(ascii(('ok', jsonload.loads(text))))\n"
        "    except jsonload.JSONError as err: print(ascii(('refused', str(err))))\n"
    )
    lines = _run(code, ascii(texts)).splitlines()
    assert len(lines) == len(texts)
    for text, line in zip(texts, lines, strict=True):
        want = ours(text)
        got = eval(line, {"inf": float("inf")})  # ascii() of JSON values: literals and inf
        if got == ("refused", "nested too deeply"):
            # json's Python decoder takes about 3 frames per level: 500 are too deep for it.
            assert text.startswith(("[[[", '{"a":{"a":{')), text[:100]
            continue
        assert got[0] == want[0], (text, got, want)
        assert got[0] != "ok" or same(got[1], want[1]), (text, got, want)


def test_errors_without_json_loaded() -> None:
    # CPython 3.11's scanner needs json.decoder in sys.modules to report a syntax error;
    # jsonload loads it then, and only then.
    out = _run(
        f"import sys; sys.path.insert(0, {CAPCTL_PATH!r})\n"
        "from capctl._lite import jsonload\n"
        "print(jsonload.loads('{\"a\": [1, {\"b\": null}]}'), 'json' in sys.modules)\n"
        "try: jsonload.loads('[1,')\n"
        "except jsonload.JSONError as err: print(err.pos, err)\n"
        "try: jsonload.loads('{\"a\" 1}')\n"
        "except jsonload.JSONError as err: print(err.pos, err)\n"
    )
    assert out.splitlines() == [
        "{'a': [1, {'b': None}]} False",
        "3 Expecting value: line 1 column 4 (char 3)",
        "5 Expecting ':' delimiter: line 1 column 6 (char 5)",
    ]


# --- what the hook's parsers import ----------------------------------------------------------

#: Issue 5: what the modules on the hook's path may import at module level.  Anything else
#: (re, enum, functools, collections, contextlib, pathlib, json, typing, dataclasses, ...)
#: costs milliseconds of every container start.
ALLOWED = frozenset({
    "os", "os.path", "posixpath", "genericpath", "stat", "_stat", "errno", "time", "io",
    "_json", "syslog", "fcntl", "_operator", "itertools", "__future__", "_collections_abc",
})
HEAVY = ("re", "enum", "functools", "collections", "contextlib", "pathlib", "json", "typing",
         "dataclasses")


def test_parsers_import_nothing_heavy() -> None:
    # -S: the venv's site (an editable install's finder) imports re and pathlib itself.
    out = _run(
        f"import sys; sys.path.insert(0, {CAPCTL_PATH!r}); before = set(sys.modules)\n"
        "import capctl.request.oci, capctl.request.devices, capctl.request.topology, capctl._lite.jsonload\n"
        "print(*sorted(set(sys.modules) - before))"
    )
    added = set(out.split())
    assert {"capctl.request.oci", "capctl.request.devices", "capctl.request.topology", "capctl._lite.jsonload"} <= added
    assert sorted(m for m in added if m.split(".")[0] in HEAVY) == []
    assert sorted(m for m in added - ALLOWED if not m.startswith("capctl")) == []

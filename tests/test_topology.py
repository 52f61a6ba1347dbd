"""Topology snapshots: strict validation (named malformed cases), bounded reads, round trip."""

from __future__ import annotations

import copy
import json
import random
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from capctl import simulated
from capctl.errors import TopologyError
from capctl.host import Host
from capctl.request import topology
from tests.support.fuzz import Op, mutants

Doc = dict[str, Any]


def _set(path: tuple[Any, ...], value: Any) -> Callable[[Doc], None]:
    def edit(doc: Doc) -> None:
        target: Any = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return edit


def _delete(path: tuple[Any, ...]) -> Callable[[Doc], None]:
    def edit(doc: Doc) -> None:
        target: Any = doc
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
    return edit


def _dup_gpu_field(field: str) -> Callable[[Doc], None]:
    def edit(doc: Doc) -> None:
        doc["gpus"][1][field] = doc["gpus"][0][field]
    return edit


def _dup_mig(field: str) -> Callable[[Doc], None]:
    def edit(doc: Doc) -> None:
        migs = doc["gpus"][0]["mig_devices"]
        if field == "instance":
            migs[1]["gi"], migs[1]["ci"] = migs[0]["gi"], migs[0]["ci"]
        else:
            migs[1][field] = migs[0][field]
    return edit


def _dup_mig_uuid_across_gpus(doc: Doc) -> None:
    doc["gpus"][1]["mig_devices"][0]["uuid"] = doc["gpus"][0]["mig_devices"][0]["uuid"]


M = ("gpus", 0, "mig_devices", 0)

MALFORMED: list[tuple[str, Callable[[Doc], None], str]] = [
    ("top not object", _set(("gpus",), 1), "gpus: expected a list"),
    ("top unknown key", _set(("extra",), 1), "extra: unknown field"),
    ("top missing gpus", _delete(("gpus",)), "gpus: missing"),
    ("gpu not object", _set(("gpus", 0), []), "gpus[0]: expected an object"),
    ("gpu unknown key", _set(("gpus", 0, "serial"), "x"), "gpus[0].serial: unknown field"),
    ("gpu missing minor", _delete(("gpus", 0, "minor")), "gpus[0].minor: missing"),
    ("index string", _set(("gpus", 2, "index"), "2"), "gpus[2].index: expected an integer"),
    ("index bool", _set(("gpus", 2, "index"), True), "gpus[2].index: expected an integer"),
    ("index float", _set(("gpus", 2, "index"), 2.0), "gpus[2].index: expected an integer"),
    ("index negative", _set(("gpus", 2, "index"), -1), "gpus[2].index: -1 out of range"),
    ("minor too big", _set(("gpus", 3, "minor"), 255), "gpus[3].minor: 255 out of range"),
    ("minor null", _set(("gpus", 3, "minor"), None),
     "gpus[3].minor: expected an integer, got null"),
    ("gpu uuid bad", _set(("gpus", 1, "uuid"), "GPU-1234"), "gpus[1].uuid: 'GPU-1234' is not"),
    ("gpu uuid path", _set(("gpus", 1, "uuid"), "../../x"), "gpus[1].uuid"),
    ("gpu uuid upper", _set(("gpus", 1, "uuid"), "GPU-" + "A" * 8 + "-aaaa-aaaa-aaaa-" + "a" * 12),
     "gpus[1].uuid"),
    ("gpu uuid is mig", _set(("gpus", 1, "uuid"), simulated.topology()["gpus"][0]["mig_devices"][0]
                             ["uuid"]), "gpus[1].uuid"),
    ("name empty", _set(("gpus", 0, "name"), ""), "gpus[0].name"),
    ("name control char", _set(("gpus", 0, "name"), "A100\n"), "gpus[0].name"),
    ("pci bad", _set(("gpus", 0, "pci_bus_id"), "07:00.0"), "gpus[0].pci_bus_id"),
    ("mig_enabled int", _set(("gpus", 0, "mig_enabled"), 1),
     "gpus[0].mig_enabled: expected a boolean"),
    ("mig_devices not list", _set(("gpus", 0, "mig_devices"), {}),
     "gpus[0].mig_devices: expected a list"),
    ("mig devices on non-mig gpu", _set(("gpus", 0, "mig_enabled"), False),
     "gpus[0].mig_devices: MIG devices on a GPU whose mig_enabled is false"),
    ("mig unknown key", _set((*M, "slot"), 0), "gpus[0].mig_devices[0].slot: unknown field"),
    ("mig missing ci", _delete((*M, "ci")), "gpus[0].mig_devices[0].ci: missing"),
    ("mig gi string", _set((*M, "gi"), "7"), "gpus[0].mig_devices[0].gi: expected an integer"),
    ("mig gi too big", _set((*M, "gi"), 64), "gpus[0].mig_devices[0].gi: 64 out of range"),
    ("mig ci negative", _set((*M, "ci"), -1), "gpus[0].mig_devices[0].ci"),
    ("mig uuid old format", _set((*M, "uuid"), "MIG-GPU-" + "a" * 8 + "/1/0"),
     "gpus[0].mig_devices[0].uuid"),
    ("mig uuid is gpu", _set((*M, "uuid"), simulated.topology()["gpus"][0]["uuid"]),
     "gpus[0].mig_devices[0].uuid"),
    ("profile empty", _set((*M, "profile"), ""), "gpus[0].mig_devices[0].profile"),
    ("profile slash", _set((*M, "profile"), "1g/5gb"), "gpus[0].mig_devices[0].profile"),
    ("duplicate gpu index", _dup_gpu_field("index"), "gpus[1]: index 0 repeats gpus[0]"),
    ("duplicate gpu minor", _dup_gpu_field("minor"), "gpus[1]: minor 0 repeats gpus[0]"),
    ("duplicate gpu uuid", _dup_gpu_field("uuid"), "gpus[1]: uuid"),
    ("duplicate pci", _dup_gpu_field("pci_bus_id"), "gpus[1]: pci_bus_id"),
    ("duplicate mig index", _dup_mig("index"), "gpus[0].mig_devices[1]: index 0 repeats"),
    ("duplicate mig instance", _dup_mig("instance"), "gpus[0].mig_devices[1]: instance (gi, ci)"),
    ("duplicate mig uuid on gpu", _dup_mig("uuid"), "gpus[0].mig_devices[1].uuid"),
    ("duplicate mig uuid across gpus", _dup_mig_uuid_across_gpus,
     "gpus[1].mig_devices[0].uuid: MIG-"),
]


@pytest.mark.parametrize(("edit", "message"), [(e, m) for _, e, m in MALFORMED],
                         ids=[i for i, _, _ in MALFORMED])
def test_malformed(edit: Callable[[Doc], None], message: str) -> None:
    doc = copy.deepcopy(simulated.topology())
    edit(doc)
    with pytest.raises(TopologyError) as info:
        topology.from_dict(doc, "snap.json")
    assert str(info.value).startswith("snap.json: ")
    assert message in str(info.value)


TEXT_ERRORS = [
    ("not json", "{", "not a valid JSON snapshot"),
    ("duplicate key", '{"gpus": [], "gpus": []}', "duplicate key 'gpus'"),
    ("nan", '{"gpus": NaN}', "NaN is not JSON"),
    ("top list", "[]", "expected an object, got a list"),
]


@pytest.mark.parametrize(("text", "message"), [(t, m) for _, t, m in TEXT_ERRORS],
                         ids=[i for i, _, _ in TEXT_ERRORS])
def test_text_errors(text: str, message: str) -> None:
    with pytest.raises(TopologyError, match=message):
        topology.parse_snapshot(text, "snap.json")


def test_simulated_is_valid() -> None:
    topo = topology.from_dict(simulated.topology(), "sim")
    assert [g.index for g in topo.gpus] == list(range(8))
    assert topo.gpus[6].minor == 7 and topo.gpus[7].minor == 6
    assert not topo.gpus[4].mig_enabled and topo.gpus[4].mig_devices == ()


def test_empty_topology_is_valid() -> None:
    assert topology.parse_snapshot('{"gpus": []}', "x").gpus == ()


def test_round_trip() -> None:
    topo = topology.from_dict(simulated.topology(), "sim")
    again = topology.parse_snapshot(topo.to_json(), "sim")
    assert again == topo
    assert json.loads(topo.to_json()) == simulated.topology()


def test_lookups() -> None:
    topo = topology.from_dict(simulated.topology(), "sim")
    gpu7 = topo.gpus[7]
    assert topo.gpu_by_index(7) is gpu7
    assert topo.gpu_by_uuid(gpu7.uuid) is gpu7
    assert topo.mig_by_uuid(gpu7.mig_devices[1].uuid) == (gpu7, gpu7.mig_devices[1])
    assert topo.gpu_by_index(99) is None
    assert topo.mig_by_uuid("MIG-x") is None


def test_load_snapshot_file(sim_root: Path) -> None:
    topo = topology.load_snapshot(sim_root / "topology.json")
    assert topo.source == str(sim_root / "topology.json")
    assert len(topo.gpus) == 8


def test_load_snapshot_missing(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match="cannot read topology snapshot"):
        topology.load_snapshot(tmp_path / "nope.json")


def test_load_snapshot_bounded(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    path.write_text('{"gpus": []}' + " " * 200)
    with pytest.raises(TopologyError, match="larger than 100 bytes"):
        topology.load_snapshot(path, limit=100)


def test_load_snapshot_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(b'{"gpus": [\xff]}')
    with pytest.raises(TopologyError, match="not UTF-8"):
        topology.load_snapshot(path)


def test_load_topology_prefers_snapshot(sim_root: Path, tmp_path: Path) -> None:
    host = Host(root=sim_root, topology=sim_root / "topology.json")
    assert len(topology.load_topology(host).gpus) == 8


def test_import_is_cheap() -> None:
    # The hook imports these on every container start: no pynvml, no json-schema library.
    import subprocess
    import sys

    code = ("import sys, capctl.request.resolve, capctl.request.topology, capctl.request.devices; "
            "print(sorted(m for m in sys.modules if 'nvml' in m or 'schema' in m))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "[]"


# --- field syntax against the regular expressions it replaced -------------------------------
# topology.py checks fields with string code (``re`` costs 5 ms of every hook start); these
# are the expressions it used before, kept as the oracle.

_HEX_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
ORACLES: dict[str, tuple[re.Pattern[str], Callable[[str], bool]]] = {
    "gpu uuid": (re.compile(rf"GPU-{_HEX_UUID}"), topology.is_gpu_uuid),
    "mig uuid": (re.compile(rf"MIG-{_HEX_UUID}"), topology.is_mig_uuid),
    "pci bus id": (
        re.compile(r"(?:[0-9A-Fa-f]{4}|[0-9A-Fa-f]{8}):[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7]"),
        topology.is_pci_bus_id,
    ),
    "name": (re.compile(r"[ -~]{1,96}"), topology.is_product_name),
    "profile": (re.compile(r"[A-Za-z0-9][A-Za-z0-9.+-]{0,31}"), topology.is_profile),
}

U = "6f1c2a52-7d3e-4a0b-9c55-2c6f0e7b1a00"
SAMPLES: dict[str, list[str]] = {
    "gpu uuid": [f"GPU-{U}", f"GPU-{U.upper()}", f"GPU-{U[:-1]}A", f"MIG-{U}", f"gpu-{U}",
                 f"GPU-{U}\n", f"GPU-{U[:-1]}", f"GPU-{U}0", f"GPU-{U.replace('-', '')}",
                 f"GPU-{U[:8]}{U[9:13]}-{U[13:]}-0", "GPU-", "", f"GPU-{U[:-1]}\u0663"],
    "mig uuid": [f"MIG-{U}", f"MIG-{U.upper()}", f"GPU-{U}", f"MIG-GPU-{U}/1/0", f"MIG-{U} ",
                 f"MIG--{U[1:]}", "MIG-", ""],
    "pci bus id": ["00000000:07:00.0", "0000:07:00.0", "0000:FF:1f.7", "0000:07:00.8",
                   "000:07:00.0", "00000:07:00.0", "0000000:07:00.0", "000000000:07:00.0",
                   "0000:7:00.0", "0000:07:0.0", "0000:07:00", "0000:07:00.", "0000:07:00.00",
                   "0000:07:00:0", "0000:07.00.0", "07:00.0", "0000:g7:00.0", "0000:07:00.0\n",
                   "0000:07:00.\u0663", "0000:0\uff17:00.0", "0000:07:00.0.0", "", "abcdABCD:ef:EF.1"],
    "name": ["NVIDIA A100-SXM4-40GB", "x", " ", "~", "a" * 96, "a" * 97, "", "A100\n", "\t",
             "\x7f", "\x1f", "é", "\uff21100", "\x00", "NVIDIA H100 80GB HBM3 (a) [b] {c} 100%"],
    "profile": ["1g.5gb", "1c.3g.20gb", "1g.10gb+me", "unknown", "a" * 32, "a" * 33, "", ".a",
                "-a", "+a", "1g/5gb", "1g 5gb", "1g_5gb", "1g.5gb\n", "\u00b2g.5gb", "1g.\u0663gb", "\uff21",
                "Z", "9", "1g.5gb+me-x.y"],
}
ALPHABETS = {
    "gpu uuid": "0123456789abcdefABCDEFG-UPI",
    "mig uuid": "0123456789abcdefABCDEFGM-I",
    "pci bus id": "0123456789abcdefABCDEFg:.",
    "name": "aZ09 ~!-_.()/\x1f\x7f\x80",
    "profile": "aZ09gbc.+-_/",
}
#: Superscript two, Arabic-Indic three, full-width three and A, a long s, a dotted capital I,
#: a Kelvin sign, control characters and blanks: none is in an ASCII class.
ODD = "\u00b2\u0663\uff13\uff21\u017f\u0130\u212aé\x00\n\t \x7f"


#: The edits of the mutation corpus: delete, insert, replace, upper-case a tail, repeat a
#: character up to 39 more times.
EDITS: tuple[Op, ...] = ("delete", "insert", "replace", "upper", "repeat_char")


@pytest.mark.parametrize("field", list(ORACLES))
def test_field_syntax_is_the_regular_expression(field: str) -> None:
    pattern, check = ORACLES[field]
    rng = random.Random(3)
    # Random UUIDs: hex digits in every position.
    samples = SAMPLES[field] + [f"{field[:3].upper()}-{uuid.UUID(int=rng.getrandbits(128))}"
                                for _ in range(200) if field.endswith("uuid")]
    accepted = 0
    alphabet = ALPHABETS[field] + ODD
    texts = samples + mutants(samples, alphabet, 3000, seed=31, ops=EDITS, max_repeat=39)
    for i, text in enumerate(texts):
        want = pattern.fullmatch(text) is not None
        assert check(text) is want, (field, i, text)
        accepted += want
    assert 100 < accepted < len(texts) - 100  # both sides are exercised


#: Every ASCII character and the odd ones above.
CHARS = [chr(c) for c in range(128)] + list(ODD)
EXACT = [("gpu uuid", f"GPU-{U}"), ("mig uuid", f"MIG-{U}"), ("pci bus id", "00000000:07:00.0"),
         ("pci bus id", "0000:07:00.0"), ("name", "A100 x"), ("profile", "1g.5gb+me")]


@pytest.mark.parametrize(("field", "valid"), EXACT, ids=[f"{f}: {v}" for f, v in EXACT])
def test_field_syntax_every_single_substitution(field: str, valid: str) -> None:
    pattern, check = ORACLES[field]
    texts = [valid[:i] + c + valid[i + 1:] for i in range(len(valid)) for c in CHARS]
    texts += [valid[:i] + c + valid[i:] for i in range(len(valid) + 1) for c in CHARS]
    texts += [valid[:i] + valid[i + 1:] for i in range(len(valid))]
    for text in texts:
        assert check(text) is (pattern.fullmatch(text) is not None), (field, text)


TEXT_ERRORS_STRICT = [
    ("infinity", '{"gpus": [Infinity]}', "Infinity is not JSON"),
    ("duplicate nested key", '{"gpus": [{"index": 0, "index": 1}]}', "duplicate key 'index'"),
    ("trailing data", '{"gpus": []} []', "Extra data: line 1 column 14"),
    ("bom", '\ufeff{"gpus": []}', "BOM"),
    ("too deep", '{"gpus": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
]


@pytest.mark.parametrize(("text", "message"), [(t, m) for _, t, m in TEXT_ERRORS_STRICT],
                         ids=[i for i, _, _ in TEXT_ERRORS_STRICT])
def test_text_errors_strict(text: str, message: str) -> None:
    with pytest.raises(TopologyError) as info:
        topology.parse_snapshot(text, "snap.json")
    assert str(info.value).startswith("snap.json: not a valid JSON snapshot: ")
    assert message in str(info.value)


def test_load_snapshot_str_path(sim_root: Path) -> None:
    # Host.topology is a str: load_snapshot takes one.
    path = str(sim_root / "topology.json")
    assert topology.load_snapshot(path).source == path
    assert len(topology.load_topology(Host(root=str(sim_root), topology=path)).gpus) == 8

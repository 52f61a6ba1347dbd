"""capctl._lite.jsondump: json.dumps' output, byte for byte, without importing json.

The runtime wrapper rewrites every container's spec with it, so every field and value must
come back: checked on specs written by runc (``runc spec``, rootless too), containerd
(``ctr oci spec``), podman 4.3 and Docker 20.10 (captured at their runtime's ``create``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from capctl._lite import jsondump, jsonload
from capctl._lite.jsondump import dumps
from capctl.deliver.runtime import add_edits, write_spec
from capctl.edits.edits import Edits, NodeEdit

SPECS = sorted((Path(__file__).parent / "golden/specs").glob("*.json"))


def test_specs_of_every_client_are_present() -> None:
    assert {p.stem for p in SPECS} >= {"runc", "runc-rootless", "containerd", "docker",
                                       "podman-privileged", "podman-cap-drop"}


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_real_specs_round_trip(path: Path) -> None:
    raw = path.read_bytes()
    spec = jsonload.loads(raw)
    text = dumps(spec)
    assert text == json.dumps(spec)
    assert json.loads(text) == spec == json.loads(raw)


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_rewritten_spec_keeps_every_field(path: Path, tmp_path: Path) -> None:
    spec = jsonload.loads(path.read_bytes())
    assert isinstance(spec, dict)
    cap = "/dev/nvidia-caps/nvidia-cap12"
    edits = Edits(nodes=(NodeEdit(cap, f"/host{cap}", 238, 12, 0o444, "r"),))
    want = json.loads(path.read_bytes())
    add_edits(want, edits, "x")
    target = tmp_path / "config.json"
    target.write_bytes(path.read_bytes())
    add_edits(spec, edits, "x")
    write_spec(str(target), spec)
    assert json.loads(target.read_bytes()) == want


VALUES = [
    {}, [], "", 0, -1, 10**40, -(10**40), 0.0, -0.0, 1.5, 1e-300, 1e300, 2.0**53 + 1, True,
    False, None, "é \u2028 \x00 \x1f \" \\ / \U0001f600 \ud800",
    {"a": [1, {"b": [None, True]}], "": {}, "é": "\t"}, (1, 2), [[[]]],
    {1: "int key", 1.5: "float", None: "null"}, {True: "bool"},
]


@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
def test_same_as_json_dumps(value: object) -> None:
    assert dumps(value) == json.dumps(value)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), [float("-inf")], {"x": {1, 2}},
                                 b"bytes", {(1, 2): 1}])
def test_what_is_not_json_is_refused(bad: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        dumps(bad)


def test_circular_reference_is_refused() -> None:
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular"):
        dumps(loop)
    shared: list[object] = [1]
    assert dumps([shared, shared]) == "[[1], [1]]"  # the markers are per call and per path


def test_without_the_c_encoder_json_does_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jsondump, "_c_encoder", lambda: None)
    for value in VALUES:
        assert dumps(value) == json.dumps(value)
    with pytest.raises(ValueError):
        dumps(float("nan"))

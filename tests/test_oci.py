"""Pure parsing of the OCI container state and ``config.json`` (:mod:`capctl.request.oci`).

Both inputs are hostile or at least untrusted (``process.env`` is the image's and the
user's): every malformed case is a :class:`HookError` whose message names the field at fault.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from capctl.edits.rules import DeviceType
from capctl.errors import HookError
from capctl.request import oci
from tests.support.fuzz import Op, mutants

BUNDLE = "/run/containers/b1"
GOOD_STATE: dict[str, Any] = {
    "ociVersion": "1.0.2",
    "id": "ctr-1_a.b+c:d",
    "status": "creating",
    "pid": 4242,
    "bundle": BUNDLE,
    "annotations": {"io.example/x": "y"},
}

DROP = object()  # state(key=DROP): leave the key out


def state(**changes: Any) -> bytes:
    obj = dict(GOOD_STATE)
    for key, value in changes.items():
        if value is DROP:
            obj.pop(key, None)
        else:
            obj[key] = value
    return json.dumps(obj).encode()


# --- parse_state --------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["creating", "created"])
def test_state_good(status: str) -> None:
    st = oci.parse_state(state(status=status))
    assert st == oci.State("ctr-1_a.b+c:d", status, 4242, BUNDLE)


def test_state_at_the_size_limit_is_accepted() -> None:
    pad = oci.MAX_STATE - len(state(annotations={"p": ""}))
    data = state(annotations={"p": "x" * pad})
    assert len(data) == oci.MAX_STATE
    assert oci.parse_state(data).id == GOOD_STATE["id"]


STATE_ERRORS: list[tuple[str, bytes, list[str]]] = [
    ("not-json", b"{not json", ["container state", "not valid JSON"]),
    ("not-utf8", b'{"id": "\xff"}', ["container state", "not valid JSON"]),
    ("empty-input", b"", ["container state", "not valid JSON"]),
    ("array", b'["id"]', ["container state", "JSON object"]),
    ("string", b'"creating"', ["container state", "JSON object"]),
    ("null", b"null", ["container state", "JSON object"]),
    (
        "huge",
        state(annotations={"pad": "x" * (oci.MAX_STATE + 1)}),
        ["container state", f"larger than {oci.MAX_STATE} bytes"],
    ),
    ("id-missing", state(id=DROP), ["'id'"]),
    ("id-empty", state(id=""), ["'id'"]),
    ("id-not-string", state(id=12), ["'id'"]),
    ("id-slash", state(id="../etc"), ["id", "'../etc'"]),
    ("id-space", state(id="a b"), ["id", "'a b'"]),
    ("id-newline", state(id="a\nb"), ["id", "not a container id"]),
    ("id-leading-dash", state(id="-x"), ["id", "'-x'"]),
    ("id-too-long", state(id="a" * 1025), ["id", "not a container id"]),
    ("id-nul", state(id="a\0b"), ["'id'"]),
    ("status-missing", state(status=DROP), ["'status'"]),
    ("status-running", state(status="running"), ["status 'running'", "prestart or createRuntime"]),
    ("status-stopped", state(status="stopped"), ["status 'stopped'", "prestart or createRuntime"]),
    ("status-nul", state(status="creating\0"), ["'status'"]),
    ("pid-missing", state(pid=DROP), ["'pid'", "None"]),
    ("pid-zero", state(pid=0), ["'pid'", "not 0"]),
    ("pid-negative", state(pid=-5), ["'pid'", "not -5"]),
    ("pid-bool", state(pid=True), ["'pid'", "not True"]),
    ("pid-string", state(pid="4242"), ["'pid'", "'4242'"]),
    ("pid-float", state(pid=42.0), ["'pid'"]),
    ("pid-huge", state(pid=1 << 40), ["'pid'", str(1 << 40)]),
    ("bundle-missing", state(bundle=DROP), ["'bundle'"]),
    ("bundle-empty", state(bundle=""), ["'bundle'"]),
    ("bundle-relative", state(bundle="run/b1"), ["bundle 'run/b1'", "not an absolute path"]),
    ("bundle-nul", state(bundle="/run/b1\0/x"), ["'bundle'"]),
]


@pytest.mark.parametrize(
    ("data", "needles"), [c[1:] for c in STATE_ERRORS], ids=[c[0] for c in STATE_ERRORS]
)
def test_state_refused(data: bytes, needles: list[str]) -> None:
    with pytest.raises(HookError) as exc:
        oci.parse_state(data)
    message = str(exc.value)
    for needle in needles:
        assert needle in message, message
    assert "\n" not in message


# --- parse_config -------------------------------------------------------------------------


def config(
    *,
    root: Any = None,
    env: Any = None,
    bounding: Any = None,
    capabilities: Any = None,
    process: Any = None,
    linux: Any = None,
) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs"} if root is None else root,
        "process": {
            "args": ["sh"],
            "env": ["PATH=/bin"] if env is None else env,
            "capabilities": {"bounding": ["CAP_KILL"] if bounding is None else bounding},
        },
        "linux": {"resources": {"devices": [{"allow": False, "access": "rwm"}]}},
    }
    if capabilities is not None:
        cfg["process"]["capabilities"] = capabilities
    if process is not None:
        cfg["process"] = process
    if linux is not None:
        cfg["linux"] = linux
    return cfg


def parse(cfg: dict[str, Any]) -> oci.Container:
    return oci.parse_config(json.dumps(cfg).encode(), BUNDLE, f"{BUNDLE}/config.json")


@pytest.mark.parametrize(
    ("path", "want"),
    [
        ("rootfs", f"{BUNDLE}/rootfs"),
        ("sub/dir/rootfs", f"{BUNDLE}/sub/dir/rootfs"),
        ("/var/lib/ctr/rootfs", "/var/lib/ctr/rootfs"),
    ],
    ids=["relative", "relative-nested", "absolute"],
)
def test_config_rootfs(path: str, want: str) -> None:
    assert parse(config(root={"path": path, "readonly": True})).rootfs == want


def test_config_rootfs_bundle_with_trailing_slash() -> None:
    cfg = json.dumps(config()).encode()
    assert oci.parse_config(cfg, BUNDLE + "/").rootfs == f"{BUNDLE}/rootfs"


def test_config_env_picks_only_nvidia_request_vars() -> None:
    ctr = parse(
        config(
            env=[
                "PATH=/bin",
                "NVIDIA_VISIBLE_DEVICES=MIG-1,0:1",
                "NVIDIA_MIG_CONFIG_DEVICES=all",
                "NVIDIA_MIG_MONITOR_DEVICES=all",
                "NVIDIA_DRIVER_CAPABILITIES=all",
                "LD_PRELOAD=/x.so",
                "nvidia_visible_devices=all",
                "NVIDIA_VISIBLE_DEVICES",  # no '=': not a variable, ignored
                "=NVIDIA_VISIBLE_DEVICES=all",
            ]
        )
    )
    assert dict(ctr.env) == {
        "NVIDIA_VISIBLE_DEVICES": "MIG-1,0:1",
        "NVIDIA_MIG_CONFIG_DEVICES": "all",
        "NVIDIA_MIG_MONITOR_DEVICES": "all",
    }


@pytest.mark.parametrize(
    ("env", "want"),
    [
        ([], {}),
        (["NVIDIA_VISIBLE_DEVICES="], {"NVIDIA_VISIBLE_DEVICES": ""}),
        (["NVIDIA_VISIBLE_DEVICES=a=b"], {"NVIDIA_VISIBLE_DEVICES": "a=b"}),
        (
            ["NVIDIA_VISIBLE_DEVICES=0:1", "X=1", "NVIDIA_VISIBLE_DEVICES=0:1"],
            {"NVIDIA_VISIBLE_DEVICES": "0:1"},
        ),
    ],
    ids=["empty-list", "empty-value", "value-with-equals", "duplicate-same-value"],
)
def test_config_env_accepted(env: list[str], want: dict[str, str]) -> None:
    assert dict(parse(config(env=env)).env) == want


def test_config_env_absent() -> None:
    assert dict(parse(config(process={"args": ["sh"]})).env) == {}


@pytest.mark.parametrize(
    ("bounding", "want"),
    [(["CAP_KILL", "CAP_SYS_ADMIN"], True), (["CAP_KILL"], False), ([], False)],
    ids=["with-sys-admin", "without", "empty"],
)
def test_config_bounding_set(bounding: list[str], want: bool) -> None:
    assert parse(config(bounding=bounding)).sys_admin is want


def test_config_sys_admin_only_in_effective_is_not_enough() -> None:
    caps = {"effective": ["CAP_SYS_ADMIN"], "permitted": ["CAP_SYS_ADMIN"]}
    assert parse(config(capabilities=caps)).sys_admin is False


def test_config_spec_rules() -> None:
    rules = parse(config()).spec_rules
    assert rules is not None
    assert not rules[0].allow and rules[0].type is DeviceType.ALL


CONFIG_ERRORS: list[tuple[str, bytes, list[str]]] = [
    ("not-json", b"{", ["config.json", "not valid JSON"]),
    ("not-object", b"[]", ["config.json", "JSON object"]),
    (
        "oversized",
        json.dumps({"pad": "x" * (oci.MAX_CONFIG + 1)}).encode(),
        ["config.json", f"larger than {oci.MAX_CONFIG} bytes"],
    ),
    ("root-missing", json.dumps({"process": {}}).encode(), ["'root'"]),
    ("root-not-object", json.dumps(config(root="rootfs")).encode(), ["'root'"]),
    ("root-path-missing", json.dumps(config(root={})).encode(), ["root", "'path'"]),
    ("root-path-empty", json.dumps(config(root={"path": ""})).encode(), ["root", "'path'"]),
    ("root-path-nul", json.dumps(config(root={"path": "r\0"})).encode(), ["root", "'path'"]),
    ("process-not-object", json.dumps(config(process=[])).encode(), ["'process'"]),
    (
        "env-not-list",
        json.dumps(config(env="NVIDIA_VISIBLE_DEVICES=all")).encode(),
        ["process.env"],
    ),
    ("env-dict", json.dumps(config(env={"A": "1"})).encode(), ["process.env"]),
    ("env-entry-int", json.dumps(config(env=["PATH=/bin", 7])).encode(), ["process.env[1]"]),
    ("env-entry-null", json.dumps(config(env=[None])).encode(), ["process.env[0]"]),
    (
        "env-duplicate-different",
        json.dumps(
            config(env=["NVIDIA_VISIBLE_DEVICES=0:0", "NVIDIA_VISIBLE_DEVICES=0:1"])
        ).encode(),
        ["NVIDIA_VISIBLE_DEVICES", "twice"],
    ),
    (
        "env-duplicate-mig-config",
        json.dumps(
            config(env=["NVIDIA_MIG_CONFIG_DEVICES=all", "NVIDIA_MIG_CONFIG_DEVICES="])
        ).encode(),
        ["NVIDIA_MIG_CONFIG_DEVICES", "twice"],
    ),
    (
        "capabilities-not-object",
        json.dumps(config(capabilities=["CAP_SYS_ADMIN"])).encode(),
        ["process.capabilities"],
    ),
    (
        "bounding-not-list",
        json.dumps(config(bounding="CAP_SYS_ADMIN")).encode(),
        ["process.capabilities.bounding"],
    ),
    (
        "bounding-non-string",
        json.dumps(config(bounding=["CAP_KILL", 21])).encode(),
        ["process.capabilities.bounding"],
    ),
    ("linux-not-object", json.dumps(config(linux=[])).encode(), ["linux"]),
    (
        "resources-not-object",
        json.dumps(config(linux={"resources": "x"})).encode(),
        ["linux.resources"],
    ),
    (
        "devices-not-list",
        json.dumps(config(linux={"resources": {"devices": {"allow": True}}})).encode(),
        ["linux.resources.devices"],
    ),
    (
        "devices-entry-not-object",
        json.dumps(config(linux={"resources": {"devices": ["a *:* rwm"]}})).encode(),
        ["linux.resources.devices"],
    ),
    (
        "devices-allow-missing",
        json.dumps(config(linux={"resources": {"devices": [{"access": "rwm"}]}})).encode(),
        ["linux.resources.devices[0]", "allow"],
    ),
    (
        "devices-bad-type",
        json.dumps(
            config(linux={"resources": {"devices": [{"allow": True, "type": "x", "access": "rwm"}]}})
        ).encode(),
        ["linux.resources.devices[0]"],
    ),
    (
        "devices-major-string",
        json.dumps(
            config(
                linux={"resources": {"devices": [
                    {"allow": False, "access": "rwm"},
                    {"allow": True, "major": "1", "access": "rwm"},
                ]}}
            )
        ).encode(),
        ["linux.resources.devices[1]", "major"],
    ),
    (
        "devices-bad-access",
        json.dumps(
            config(linux={"resources": {"devices": [{"allow": True, "access": "rwx"}]}})
        ).encode(),
        ["linux.resources.devices[0]"],
    ),
    (
        "linux-devices-bad-type",
        json.dumps(
            config(linux={"devices": [{"path": "/dev/x", "type": "s", "major": 1, "minor": 3}]})
        ).encode(),
        ["linux.devices[0]", "type"],
    ),
]


@pytest.mark.parametrize(
    ("data", "needles"), [c[1:] for c in CONFIG_ERRORS], ids=[c[0] for c in CONFIG_ERRORS]
)
def test_config_refused(data: bytes, needles: list[str]) -> None:
    with pytest.raises(HookError) as exc:
        oci.parse_config(data, BUNDLE, f"{BUNDLE}/config.json")
    message = str(exc.value)
    for needle in needles:
        assert needle in message, message
    assert "\n" not in message


# --- strict JSON ----------------------------------------------------------------------------
# The runtime's own parser (Go's encoding/json in runc; yajl in crun) may read a repeated key,
# a NaN or a UTF-16 document differently or not at all: capctl refuses them.

GOOD_STATE_TEXT = json.dumps(GOOD_STATE)

STRICT_JSON: list[tuple[str, bytes, str]] = [
    ("duplicate-id", GOOD_STATE_TEXT.replace('"id": ', '"id": "other", "id": ').encode(),
     "duplicate key 'id'"),
    ("duplicate-pid-same-value", GOOD_STATE_TEXT.replace('"pid": ', '"pid": 4242, "pid": ')
     .encode(), "duplicate key 'pid'"),
    ("duplicate-annotation", GOOD_STATE_TEXT.replace('"io.example/x": "y"',
                                                     '"a": "1", "a": "2"').encode(),
     "duplicate key 'a'"),
    ("nan", GOOD_STATE_TEXT.replace('"y"', "NaN").encode(), "NaN is not JSON"),
    ("infinity", GOOD_STATE_TEXT.replace('"y"', "-Infinity").encode(), "Infinity is not JSON"),
    ("utf8-bom", b"\xef\xbb\xbf" + GOOD_STATE_TEXT.encode(), "BOM"),
    ("utf16", GOOD_STATE_TEXT.encode("utf-16"), "not UTF-8"),
    # Valid UTF-8 as bytes (ASCII and NULs): refused as JSON, as Go's decoder refuses it.
    ("utf32-le", GOOD_STATE_TEXT.encode("utf-32-le"), "(char 1)"),
    ("encoded-surrogate", GOOD_STATE_TEXT.replace('"y"', '"\\ud800"').encode()
     .replace(b"\\ud800", b"\xed\xa0\x80"), "not UTF-8"),
    ("trailing-data", GOOD_STATE_TEXT.encode() + b" {}", "Extra data"),
    ("too-deep", GOOD_STATE_TEXT.replace('"y"', "[" * 30_000 + "]" * 30_000).encode(),
     "nested too deeply"),
]


@pytest.mark.parametrize(("data", "needle"), [c[1:] for c in STRICT_JSON],
                         ids=[c[0] for c in STRICT_JSON])
def test_state_strict_json(data: bytes, needle: str) -> None:
    with pytest.raises(HookError) as exc:
        oci.parse_state(data)
    message = str(exc.value)
    assert message.startswith("container state (stdin): not valid JSON ("), message
    assert needle in message, message
    assert "\n" not in message


def test_state_whitespace_around_is_json() -> None:
    assert oci.parse_state(b" \r\n\t" + state() + b"\n").id == GOOD_STATE["id"]


def test_config_duplicate_key_refused() -> None:
    # Which env would the runtime give the container, the first or the second?
    text = json.dumps(config(env=["NVIDIA_VISIBLE_DEVICES=0"]))
    text = text.replace('"env": ', '"env": ["NVIDIA_VISIBLE_DEVICES=all"], "env": ')
    with pytest.raises(HookError, match=r"not valid JSON.*duplicate key 'env'"):
        oci.parse_config(text.encode(), BUNDLE, f"{BUNDLE}/config.json")


# --- the container id check against the regular expression it replaced ----------------------

ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+:-]{0,1023}")

#: Superscript two, Arabic-Indic three, full-width three and A, a long s, a dotted capital I,
#: a Kelvin sign, control characters and blanks: none is in an ASCII class.
ODD = "\u00b2\u0663\uff13\uff21\u017f\u0130\u212aé\x00\n\t \x7f"

IDS = [
    "", "a", "Z", "0", "ctr-1_a.b+c:d", "a" * 1023, "a" * 1024, "a" * 1025, "0" + "-" * 1023,
    "-x", "_x", ".x", "+x", ":x", "../etc", "a/b", "a\\b", "a b", "a\n", "\na", "a\0", "a,b",
    "a;b", "a@b", "a=b", "a~b", "a*b", "\u00b2", "\u0663", "\uff13", "\uff21", "a\u017f", "\u212a", "é", "a" * 64 + "é",
    "4f1c2d" * 10 + "ab12",
]


#: The edits of the mutation corpus: delete, insert, replace, repeat a character up to 599
#: more times (past the 1024-character limit).
EDITS: tuple[Op, ...] = ("delete", "insert", "replace", "repeat_char")


def test_container_id_is_the_regular_expression() -> None:
    ids = IDS + mutants(IDS, "aZ09_.+:-/\\,@" + ODD, 4000, seed=23, ops=EDITS, max_repeat=599)
    accepted = 0
    for cid in ids:
        want = ID_RE.fullmatch(cid) is not None
        assert oci.is_container_id(cid) is want, (cid[:80], len(cid))
        accepted += want
    assert 500 < accepted < len(ids) - 500


@pytest.mark.parametrize("cid", ["a" * 1024, "ctr-1_a.b+c:d", "Z", "9"])
def test_container_id_accepted(cid: str) -> None:
    assert oci.parse_state(state(id=cid)).id == cid


@pytest.mark.parametrize("cid", ["\u00b2", "\u0663x", "a\uff13", "\uff21", "a\u017f", "\u212a", "a" * 1025, "a\u200b"])
def test_container_id_refused(cid: str) -> None:
    with pytest.raises(HookError, match="not a container id"):
        oci.parse_state(state(id=cid))

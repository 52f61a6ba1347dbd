"""The independent CDI checker (:mod:`tests.support.cdi_check`) against hand-written specs.

Every bad spec must be refused for the reason the CDI reference library gives, and every good
one accepted.  The ``podman-4.3`` rows record what the real podman 4.3.1 (Debian 12) did with
the same documents in /var/run/cdi: it accepted cdiVersion 0.1.0..0.5.0 and a device named
``0:1``, and refused ``v0.5.0``, 0.6.0 and later, ``annotations``, unknown fields and
``"none"`` permissions.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.cdi_check import (
    PODMAN_43,
    check_spec,
    check_spec_file,
    effective_nodes,
    minimum_version,
    validate_class_name,
    validate_device_name,
    validate_vendor_name,
)

MIG_UUID = "MIG-0b3a6d2e-5f1c-5a1b-9c7d-2e4f6a8b0c1d"
GPU_UUID = "GPU-4d3c2b1a-0f9e-8d7c-6b5a-493827161504"


def node(path: str = "/dev/nvidia-caps/nvidia-cap21", **over: Any) -> dict[str, Any]:
    """A fully specified MIG capability device node."""
    n: dict[str, Any] = {
        "path": path,
        "hostPath": path,
        "type": "c",
        "major": 508,
        "minor": 21,
        "fileMode": 0o444,
        "permissions": "r",
    }
    n.update(over)
    return n


def mig_spec(*names: str, version: str = "0.5.0") -> dict[str, Any]:
    """A spec in the shape capctl will write: one device per name, nodes for GPU 0 + a MIG."""
    devices = [
        {
            "name": name,
            "containerEdits": {
                "deviceNodes": [
                    node("/dev/nvidia0", major=195, minor=0, fileMode=0o666, permissions="rw"),
                    node("/dev/nvidia-caps/nvidia-cap21", minor=21),
                    node("/dev/nvidia-caps/nvidia-cap22", minor=22),
                ]
            },
        }
        for name in (names or ("0:1",))
    ]
    return {
        "cdiVersion": version,
        "kind": "capctl.io/mig",
        "devices": devices,
        "containerEdits": {
            "deviceNodes": [
                node("/dev/nvidiactl", major=195, minor=255, fileMode=0o666, permissions="rw")
            ]
        },
    }


def edit(
    fn: Callable[[dict[str, Any]], object], base: dict[str, Any] | None = None
) -> dict[str, Any]:
    doc = copy.deepcopy(base if base is not None else mig_spec())
    fn(doc)
    return doc


def dev0(doc: dict[str, Any]) -> dict[str, Any]:
    d: dict[str, Any] = doc["devices"][0]
    return d


def node0(doc: dict[str, Any]) -> dict[str, Any]:
    n: dict[str, Any] = dev0(doc)["containerEdits"]["deviceNodes"][0]
    return n


# --- accepted ---------------------------------------------------------------------------------

GOOD: list[tuple[str, dict[str, Any]]] = [
    ("mig-colon-name", mig_spec("0:1")),
    ("mig-uuid-name", mig_spec(MIG_UUID)),
    ("gpu-uuid-name", mig_spec(GPU_UUID)),
    ("all", mig_spec("all")),
    ("several", mig_spec("0:1", "0:2", "1:0", "all", MIG_UUID, GPU_UUID)),
    ("single-char-name", mig_spec("0")),
    ("name-with-dot-underscore", mig_spec("mig_0.1-a")),
    ("v-prefix-version", mig_spec("0:1", version="v0.5.0")),
    ("newer-version", mig_spec("0:1", version="1.1.0")),
    ("version-0.6.0", mig_spec("0:1", version="0.6.0")),
    ("no-spec-edits", edit(lambda d: d.pop("containerEdits"))),
    ("perm-rw", edit(lambda d: node0(d).update(permissions="rw"))),
    ("perm-rwm-repeat", edit(lambda d: node0(d).update(permissions="rrwm"))),
    ("perm-none", edit(lambda d: node0(d).update(permissions="none"))),
    ("perm-empty", edit(lambda d: node0(d).update(permissions=""))),
    ("type-b", edit(lambda d: node0(d).update(type="b"))),
    ("type-u", edit(lambda d: node0(d).update(type="u"))),
    ("uid-gid", edit(lambda d: node0(d).update(uid=0, gid=44))),
    (
        "minimal-node",
        edit(lambda d: dev0(d)["containerEdits"].update(deviceNodes=[{"path": "/dev/nvidia0"}])),
    ),
    ("env-only-device", edit(lambda d: dev0(d).update(containerEdits={"env": ["A=1"]}))),
    ("vendor-dots-dashes", edit(lambda d: d.update(kind="capctl-x.example.io/mig"))),
    ("one-letter-vendor-class", edit(lambda d: d.update(kind="c/m"))),
    (
        "mount-hook",
        edit(
            lambda d: dev0(d)["containerEdits"].update(
                mounts=[
                    {
                        "hostPath": "/usr/lib/x",
                        "containerPath": "/usr/lib/x",
                        "options": ["ro", "bind"],
                    }
                ],
                hooks=[
                    {
                        "hookName": "createContainer",
                        "path": "/usr/bin/true",
                        "args": ["true"],
                        "env": ["A=b"],
                    }
                ],
            )
        ),
    ),
    # The reference does not check that paths are absolute (podman 4.3 accepted this too).
    ("relative-path-reference", edit(lambda d: node0(d).update(path="dev/nvidia0"))),
]


@pytest.mark.parametrize("doc", [d for _, d in GOOD], ids=[i for i, _ in GOOD])
def test_accepts_good_specs(doc: dict[str, Any]) -> None:
    assert check_spec(doc) == []


PODMAN_GOOD = ["mig-colon-name", "mig-uuid-name", "gpu-uuid-name", "all", "several", "perm-rw"]


@pytest.mark.parametrize("name", PODMAN_GOOD)
def test_capctl_shape_passes_every_profile(name: str) -> None:
    doc = dict(GOOD)[name]
    assert check_spec(doc, profile=PODMAN_43) == []
    assert check_spec(doc, capctl_policy=True) == []
    assert check_spec(doc, profile=PODMAN_43, capctl_policy=True) == []


# --- refused by the reference -------------------------------------------------------------------

BAD: list[tuple[str, dict[str, Any], str]] = [
    # specs-go/version.go ValidateVersion
    ("unknown-version", mig_spec(version="0.9.0"), "invalid version '0.9.0'"),
    ("version-2", mig_spec(version="2.0.0"), "invalid version"),
    ("version-short", mig_spec(version="0.5"), "invalid version"),
    ("version-empty", mig_spec(version=""), "invalid version ''"),
    ("version-missing", edit(lambda d: d.pop("cdiVersion")), "missing required field 'cdiVersion'"),
    (
        "version-number",
        edit(lambda d: d.update(cdiVersion=0.5)),
        "spec.cdiVersion: expected string",
    ),
    (
        "hostpath-needs-0.5.0",
        edit(lambda d: d.update(cdiVersion="0.4.0"), mig_spec("gpu0")),
        "must be at least v0.5.0",
    ),
    ("digit-name-needs-0.5.0", mig_spec("0:1", version="0.3.0"), "must be at least v0.5.0"),
    (
        "annotations-need-0.6.0",
        edit(lambda d: d.update(annotations={"capctl.io/x": "y"})),
        "must be at least v0.6.0",
    ),
    (
        "dot-class-needs-0.6.0",
        edit(lambda d: d.update(kind="capctl.io/mig.v1")),
        "must be at least v0.6.0",
    ),
    (
        "gids-need-0.7.0",
        edit(lambda d: dev0(d)["containerEdits"].update(additionalGids=[44])),
        "must be at least v0.7.0",
    ),
    (
        "intelrdt-needs-0.7.0",
        edit(lambda d: d["containerEdits"].update(intelRdt={"closID": "c1"})),
        "must be at least v0.7.0",
    ),
    (
        "netdevices-need-1.1.0",
        edit(
            lambda d: dev0(d)["containerEdits"].update(
                netDevices=[{"hostInterfaceName": "eth1", "name": "e1"}]
            )
        ),
        "must be at least v1.1.0",
    ),
    # pkg/parser ParseQualifier / ValidateVendorName / ValidateClassName
    ("kind-no-slash", edit(lambda d: d.update(kind="capctl.io")), "invalid vendor. empty name"),
    ("kind-empty", edit(lambda d: d.update(kind="")), "invalid vendor. empty name"),
    ("kind-missing", edit(lambda d: d.pop("kind")), "missing required field 'kind'"),
    ("kind-empty-class", edit(lambda d: d.update(kind="capctl.io/")), "invalid vendor. empty name"),
    (
        "kind-two-slashes",
        edit(lambda d: d.update(kind="capctl.io/mig/x")),
        "invalid class. invalid character '/'",
    ),
    (
        "vendor-digit-first",
        edit(lambda d: d.update(kind="1capctl.io/mig")),
        "should start with letter",
    ),
    (
        "vendor-bad-char",
        edit(lambda d: d.update(kind="capctl:io/mig")),
        "invalid vendor. invalid character ':'",
    ),
    (
        "vendor-ends-dot",
        edit(lambda d: d.update(kind="capctl.io./mig")),
        "should end with a letter or digit",
    ),
    (
        "vendor-space",
        edit(lambda d: d.update(kind="cap ctl/mig")),
        "invalid vendor. invalid character ' '",
    ),
    (
        "class-bad-char",
        edit(lambda d: d.update(kind="capctl.io/mi:g")),
        "invalid class. invalid character ':'",
    ),
    (
        "class-ends-dash",
        edit(lambda d: d.update(kind="capctl.io/mig-")),
        "should end with a letter or digit",
    ),
    (
        "class-underscore-first",
        edit(lambda d: d.update(kind="capctl.io/_mig")),
        "should start with letter",
    ),
    (
        "class-non-ascii",
        edit(lambda d: d.update(kind="capctl.io/mïg")),
        "invalid class. invalid character",
    ),
    # pkg/parser ValidateDeviceName
    ("name-empty", mig_spec(""), "invalid (empty) device name"),
    ("name-missing", edit(lambda d: dev0(d).pop("name")), "missing required field 'name'"),
    ("name-slash", mig_spec("0/1"), "invalid character '/'"),
    ("name-equals", mig_spec("0=1"), "invalid character '='"),
    ("name-space", mig_spec("mig 1"), "invalid character ' '"),
    ("name-colon-first", mig_spec(":1"), "should start with a letter or digit"),
    ("name-colon-last", mig_spec("0:"), "should end with a letter or digit"),
    ("name-dash-first", mig_spec("-gpu"), "should start with a letter or digit"),
    ("name-non-ascii", mig_spec("gpü0"), "invalid character 'ü'"),
    ("name-number", edit(lambda d: dev0(d).update(name=1)), "expected string"),
    # spec.go (*Spec).validate
    ("duplicate-names", mig_spec("0:1", "0:2", "0:1"), "invalid spec, multiple device '0:1'"),
    ("no-devices", edit(lambda d: d.update(devices=[])), "invalid spec, no devices"),
    ("devices-missing", edit(lambda d: d.pop("devices")), "invalid spec, no devices"),
    ("devices-not-list", edit(lambda d: d.update(devices={"name": "0:1"})), "expected a list"),
    # device.go (*Device).validate
    ("device-empty-edits", edit(lambda d: dev0(d).update(containerEdits={})), "empty device edits"),
    (
        "device-no-edits",
        edit(lambda d: dev0(d).pop("containerEdits")),
        "missing required field 'containerEdits'",
    ),
    (
        "device-empty-nodes",
        edit(lambda d: dev0(d).update(containerEdits={"deviceNodes": []})),
        "empty device edits",
    ),
    # container-edits.go (*DeviceNode).Validate
    ("node-no-path", edit(lambda d: node0(d).pop("path")), "invalid (empty) device path"),
    ("node-empty-path", edit(lambda d: node0(d).update(path="")), "invalid (empty) device path"),
    ("node-type-x", edit(lambda d: node0(d).update(type="x")), "invalid type 'x'"),
    ("node-type-char", edit(lambda d: node0(d).update(type="char")), "invalid type 'char'"),
    ("node-type-upper", edit(lambda d: node0(d).update(type="C")), "invalid type 'C'"),
    ("node-perm-x", edit(lambda d: node0(d).update(permissions="rx")), "invalid permissions 'rx'"),
    (
        "node-perm-upper",
        edit(lambda d: node0(d).update(permissions="RW")),
        "invalid permissions 'RW'",
    ),
    ("node-perm-space", edit(lambda d: node0(d).update(permissions="r w")), "invalid permissions"),
    (
        "node-perm-none-mixed",
        edit(lambda d: node0(d).update(permissions="none,r")),
        "invalid permissions",
    ),
    # specs-go/config.go types (ParseSpec strict unmarshal)
    ("node-major-string", edit(lambda d: node0(d).update(major="195")), "major: expected int"),
    ("node-minor-float", edit(lambda d: node0(d).update(minor=1.0)), "minor: expected int"),
    (
        "node-filemode-negative",
        edit(lambda d: node0(d).update(fileMode=-1)),
        "fileMode: expected int",
    ),
    (
        "node-filemode-string",
        edit(lambda d: node0(d).update(fileMode="0666")),
        "fileMode: expected int",
    ),
    ("node-uid-big", edit(lambda d: node0(d).update(uid=2**32)), "uid: expected int"),
    ("node-gid-bool", edit(lambda d: node0(d).update(gid=True)), "gid: expected int"),
    ("node-path-null", edit(lambda d: node0(d).update(path=None)), "null is not allowed"),
    ("node-unknown-field", edit(lambda d: node0(d).update(mode=0o666)), "unknown field 'mode'"),
    (
        "node-wrong-case-field",
        edit(lambda d: node0(d).update(hostpath="/dev/x")),
        "unknown field 'hostpath'",
    ),
    ("device-unknown-field", edit(lambda d: dev0(d).update(uuid=MIG_UUID)), "unknown field 'uuid'"),
    ("spec-unknown-field", edit(lambda d: d.update(version="0.5.0")), "unknown field 'version'"),
    (
        "nodes-not-list",
        edit(lambda d: dev0(d)["containerEdits"].update(deviceNodes=node())),
        "expected a list",
    ),
    (
        "node-not-object",
        edit(lambda d: dev0(d)["containerEdits"].update(deviceNodes=["/dev/x"])),
        "expected an object",
    ),
    (
        "annotation-not-string",
        edit(lambda d: d.update(cdiVersion="0.6.0", annotations={"a": 1})),
        "expected string",
    ),
    # container-edits.go ValidateEnv / Hook / Mount / IntelRdt / netDevices
    (
        "env-no-equals",
        edit(lambda d: dev0(d)["containerEdits"].update(env=["CAPCTL"])),
        "invalid environment variable",
    ),
    (
        "env-empty-name",
        edit(lambda d: d["containerEdits"].update(env=["=1"])),
        "invalid environment variable '=1'",
    ),
    (
        "hook-bad-name",
        edit(
            lambda d: dev0(d)["containerEdits"].update(
                hooks=[{"hookName": "preStart", "path": "/bin/true"}]
            )
        ),
        "invalid hook name 'preStart'",
    ),
    (
        "hook-no-path",
        edit(
            lambda d: dev0(d)["containerEdits"].update(hooks=[{"hookName": "prestart", "path": ""}])
        ),
        "with empty path",
    ),
    (
        "mount-no-container-path",
        edit(
            lambda d: dev0(d)["containerEdits"].update(
                mounts=[{"hostPath": "/a", "containerPath": ""}]
            )
        ),
        "empty container path",
    ),
    (
        "mount-no-host-path",
        edit(lambda d: dev0(d)["containerEdits"].update(mounts=[{"containerPath": "/a"}])),
        "missing required field 'hostPath'",
    ),
    (
        "intelrdt-bad-closid",
        edit(
            lambda d: d.update(cdiVersion="0.7.0", containerEdits={"intelRdt": {"closID": "a/b"}})
        ),
        "invalid ClosID",
    ),
    (
        "netdevice-duplicate",
        edit(
            lambda d: d.update(
                cdiVersion="1.1.0",
                containerEdits={
                    "netDevices": [
                        {"hostInterfaceName": "eth1", "name": "e1"},
                        {"hostInterfaceName": "eth1", "name": "e2"},
                    ]
                },
            )
        ),
        "duplicate HostInterfaceName 'eth1'",
    ),
    (
        "spec-edits-bad-node",
        edit(lambda d: d["containerEdits"]["deviceNodes"][0].update(type="d")),
        "spec.containerEdits.deviceNodes[0]: device '/dev/nvidiactl': invalid type 'd'",
    ),
]


@pytest.mark.parametrize(
    ("doc", "expected"), [(d, e) for _, d, e in BAD], ids=[i for i, _, _ in BAD]
)
def test_rejects_bad_specs(doc: dict[str, Any], expected: str) -> None:
    errors = check_spec(doc)
    assert any(expected in e for e in errors), errors


def test_reports_every_violation() -> None:
    doc = edit(
        lambda d: (d.update(kind="capctl.io/m:g"), node0(d).update(type="x", permissions="q")),
        mig_spec("0:1", ":bad", "0:1"),
    )
    errors = check_spec(doc)
    for expected in (
        "invalid class",
        "invalid type 'x'",
        "invalid permissions 'q'",
        "should start with a letter",
        "multiple device '0:1'",
    ):
        assert any(expected in e for e in errors), (expected, errors)


def test_not_an_object() -> None:
    assert check_spec([mig_spec()]) == ["spec: expected a JSON object, got list"]


# --- the podman 4.3 profile (v0.5.2 library, as podman 4.3.1 behaved) ---------------------------

PODMAN_BAD: list[tuple[str, dict[str, Any], str]] = [
    ("v-prefix", mig_spec(version="v0.5.0"), "invalid version 'v0.5.0'"),
    ("version-0.6.0", mig_spec(version="0.6.0"), "invalid version '0.6.0'"),
    ("version-1.0.0", mig_spec(version="1.0.0"), "invalid version '1.0.0'"),
    ("class-dot", edit(lambda d: d.update(kind="capctl.io/mig.v1")), "invalid class"),
    ("one-letter-class", edit(lambda d: d.update(kind="capctl.io/m")), "panics podman 4.3"),
    ("one-letter-vendor", edit(lambda d: d.update(kind="c/mig")), "panics podman 4.3"),
    (
        "annotations",
        edit(lambda d: d.update(annotations={"a": "b"})),
        "unknown field 'annotations'",
    ),
    (
        "device-annotations",
        edit(lambda d: dev0(d).update(annotations={"a": "b"})),
        "unknown field 'annotations'",
    ),
    (
        "gids",
        edit(lambda d: dev0(d)["containerEdits"].update(additionalGids=[44])),
        "unknown field 'additionalGids'",
    ),
    (
        "perm-none",
        edit(lambda d: node0(d).update(permissions="none")),
        "invalid permissions 'none'",
    ),
    ("colon-first", mig_spec(":1"), "should start with a letter or digit"),
]


@pytest.mark.parametrize(
    ("doc", "expected"), [(d, e) for _, d, e in PODMAN_BAD], ids=[i for i, _, _ in PODMAN_BAD]
)
def test_podman_43_rejects(doc: dict[str, Any], expected: str) -> None:
    errors = check_spec(doc, profile=PODMAN_43)
    assert any(expected in e for e in errors), errors


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0", "0.3.0", "0.4.0", "0.5.0"])
def test_podman_43_versions_without_minimum_check(version: str) -> None:
    # podman 4.3.1 loaded a spec with hostPath and a device "0:1" at 0.3.0: no minimum check.
    assert check_spec(mig_spec("0:1", version=version), profile=PODMAN_43) == []


def test_podman_43_allows_no_devices() -> None:
    assert check_spec(edit(lambda d: d.update(devices=[])), profile=PODMAN_43) == []


def test_unknown_profile() -> None:
    with pytest.raises(ValueError, match="unknown profile"):
        check_spec(mig_spec(), profile="docker")


# --- capctl policy (not CDI rules) ----------------------------------------------------------------

POLICY_BAD: list[tuple[str, dict[str, Any], str]] = [
    (
        "relative-path",
        edit(lambda d: node0(d).update(path="dev/nvidia0")),
        "path 'dev/nvidia0' is not absolute",
    ),
    (
        "relative-hostpath",
        edit(lambda d: node0(d).update(hostPath="nvidia0")),
        "hostPath 'nvidia0' is not absolute",
    ),
    (
        "relative-mount",
        edit(
            lambda d: dev0(d)["containerEdits"].update(
                mounts=[{"hostPath": "a", "containerPath": "/a"}]
            )
        ),
        "hostPath 'a' is not absolute",
    ),
    ("no-type", edit(lambda d: node0(d).pop("type")), "not fully specified"),
    ("no-major", edit(lambda d: node0(d).pop("major")), "not fully specified"),
]


@pytest.mark.parametrize(
    ("doc", "expected"), [(d, e) for _, d, e in POLICY_BAD], ids=[i for i, _, _ in POLICY_BAD]
)
def test_capctl_policy(doc: dict[str, Any], expected: str) -> None:
    assert check_spec(doc) == []  # the reference library accepts these
    errors = check_spec(doc, capctl_policy=True)
    assert any(expected in e for e in errors), errors


def test_policy_fifo_needs_no_major() -> None:
    doc = edit(
        lambda d: dev0(d)["containerEdits"].update(deviceNodes=[{"path": "/dev/fifo", "type": "p"}])
    )
    assert check_spec(doc, capctl_policy=True) == []


# --- minimum_version (specs-go/version.go MinimumRequiredVersion) -------------------------------

MIN_VERSIONS: list[tuple[str, dict[str, Any], str]] = [
    (
        "earliest",
        {
            "kind": "capctl.io/mig",
            "devices": [{"name": "gpu0", "containerEdits": {"env": ["A=1"]}}],
        },
        "0.3.0",
    ),
    ("mig-nodes-letter-name", mig_spec("gpu0"), "0.5.0"),  # hostPath
    (
        "nodes-without-hostpath-letter-name",
        edit(
            lambda d: [
                n.pop("hostPath")
                for e in [d["containerEdits"], dev0(d)["containerEdits"]]
                for n in e["deviceNodes"]
            ],
            mig_spec("gpu0"),
        ),
        "0.3.0",
    ),
    (
        "nodes-without-hostpath-digit-name",
        edit(
            lambda d: [
                n.pop("hostPath")
                for e in [d["containerEdits"], dev0(d)["containerEdits"]]
                for n in e["deviceNodes"]
            ],
            mig_spec("0:1"),
        ),
        "0.5.0",
    ),
    (
        "mount-type",
        edit(
            lambda d: dev0(d).update(
                containerEdits={
                    "mounts": [{"hostPath": "/a", "containerPath": "/a", "type": "bind"}]
                }
            ),
            mig_spec("gpu0", "x"),
        ),
        "0.5.0",
    ),
    (
        "mount-type-only",
        {
            "kind": "a/b",
            "devices": [
                {
                    "name": "x",
                    "containerEdits": {
                        "mounts": [{"hostPath": "/a", "containerPath": "/a", "type": "bind"}]
                    },
                }
            ],
        },
        "0.4.0",
    ),
    ("device-annotations", edit(lambda d: dev0(d).update(annotations={"a": "b"})), "0.6.0"),
    ("empty-annotations", edit(lambda d: d.update(annotations={})), "0.5.0"),
    ("class-dot", edit(lambda d: d.update(kind="capctl.io/mig.v1")), "0.6.0"),
    ("vendor-dot-only", edit(lambda d: d.update(kind="capctl.io/mig")), "0.5.0"),
    ("spec-gids", edit(lambda d: d["containerEdits"].update(additionalGids=[44])), "0.7.0"),
    ("empty-intelrdt", edit(lambda d: d["containerEdits"].update(intelRdt={})), "0.7.0"),
    (
        "intelrdt-schemata-empty",
        edit(lambda d: dev0(d)["containerEdits"].update(intelRdt={"schemata": []})),
        "1.1.0",
    ),
    (
        "intelrdt-monitoring",
        edit(lambda d: d["containerEdits"].update(intelRdt={"enableMonitoring": True})),
        "1.1.0",
    ),
    (
        "intelrdt-monitoring-false",
        edit(lambda d: d["containerEdits"].update(intelRdt={"enableMonitoring": False})),
        "0.7.0",
    ),
]


@pytest.mark.parametrize(
    ("doc", "expected"), [(d, e) for _, d, e in MIN_VERSIONS], ids=[i for i, _, _ in MIN_VERSIONS]
)
def test_minimum_version(doc: dict[str, Any], expected: str) -> None:
    assert minimum_version(doc) == expected


def test_minimum_for_capctl_mig_nodes() -> None:
    # deviceNodes with path/type/major/minor/fileMode/permissions/hostPath: hostPath needs 0.5.0.
    assert minimum_version(mig_spec(MIG_UUID)) == "0.5.0"
    assert check_spec(mig_spec(MIG_UUID, version="0.4.0")) == [
        "the spec version must be at least v0.5.0 (cdiVersion is '0.4.0')"
    ]


# --- name rules in isolation (pkg/parser) ---------------------------------------------------------

NAME_CASES: list[tuple[str, bool]] = [
    ("0:1", True),
    ("12:7", True),
    ("0", True),
    ("all", True),
    (MIG_UUID, True),
    (GPU_UUID, True),
    ("MIG-GPU-4d3c2b1a/1/0", False),  # the old MIG-GPU-<uuid>/<gi>/<ci> form
    ("a::b", True),
    ("a..b", True),
    ("0:1:2", True),
    ("_0", False),
    ("0_", False),
    ("", False),
]


@pytest.mark.parametrize(("name", "ok"), NAME_CASES, ids=[n or "empty" for n, _ in NAME_CASES])
def test_device_name_rule(name: str, ok: bool) -> None:
    assert (validate_device_name(name) is None) is ok


@pytest.mark.parametrize(
    ("name", "vendor_ok", "class_ok", "vendor_ok_podman", "class_ok_podman"),
    [
        ("capctl.io", True, True, True, False),
        ("mig", True, True, True, True),
        ("m", True, True, False, False),  # podman 4.3 panics on it
        ("mi", True, True, True, True),
        ("mig_x-1", True, True, True, True),
        ("9mig", False, False, False, False),
        ("mig:1", False, False, False, False),
        ("mig.", False, False, False, False),
    ],
)
def test_vendor_class_rules(
    name: str, vendor_ok: bool, class_ok: bool, vendor_ok_podman: bool, class_ok_podman: bool
) -> None:
    assert (validate_vendor_name(name) is None) is vendor_ok
    assert (validate_class_name(name) is None) is class_ok
    assert (validate_vendor_name(name, PODMAN_43) is None) is vendor_ok_podman
    assert (validate_class_name(name, PODMAN_43) is None) is class_ok_podman


# --- files ----------------------------------------------------------------------------------------


def test_file_good(tmp_path: Path) -> None:
    p = tmp_path / "capctl.io-mig.json"
    p.write_text(json.dumps(mig_spec("0:1", MIG_UUID)))
    assert check_spec_file(p) == []
    assert check_spec_file(p, profile=PODMAN_43, capctl_policy=True) == []


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        (
            "dup.json",
            '{"cdiVersion": "0.5.0", "cdiVersion": "0.5.0", "kind": "a/b", "devices": []}',
            "repeated key 'cdiVersion'",
        ),
        (
            "nan.json",
            '{"cdiVersion": "0.5.0", "kind": "a/b", "devices": [{"name": "x", "containerEdits": {"deviceNodes": [{"path": "/x", "major": NaN}]}}]}',
            "NaN is not JSON",
        ),
        ("null.json", "null", "no Spec data"),
        ("trunc.json", '{"cdiVersion": "0.5.0"', "failed to parse CDI Spec"),
        ("spec.txt", json.dumps(mig_spec()), "must end in .json"),
    ],
    ids=["repeated-key", "nan", "null", "truncated", "extension"],
)
def test_file_bad(tmp_path: Path, name: str, text: str, expected: str) -> None:
    p = tmp_path / name
    p.write_text(text)
    errors = check_spec_file(p)
    assert any(expected in e for e in errors), errors


def test_file_missing(tmp_path: Path) -> None:
    errors = check_spec_file(tmp_path / "absent.json")
    assert len(errors) == 1 and "failed to parse CDI Spec" in errors[0]




# --- effective_nodes: what a runtime gives for one device -------------------------------------

_SPEC_WIDE = {"cdiVersion": "0.5.0", "kind": "v.example/c",
              "containerEdits": {"deviceNodes": [{"path": "/dev/ctl", "major": 1}]},
              "devices": [
                  {"name": "a", "containerEdits": {"deviceNodes": [
                      {"path": "/dev/a", "hostPath": "/r/dev/a"}]}},
                  {"name": "b", "containerEdits": {"deviceNodes": [
                      {"path": "/dev/ctl", "major": 2}, {"path": "/dev/b"}]}}]}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a", [{"path": "/dev/ctl", "hostPath": "/dev/ctl", "major": 1},
               {"path": "/dev/a", "hostPath": "/r/dev/a"}]),
        ("b", [{"path": "/dev/ctl", "hostPath": "/dev/ctl", "major": 2},
               {"path": "/dev/b", "hostPath": "/dev/b"}]),
    ],
    ids=["spec-wide-then-own", "own-replaces-same-path"],
)
def test_effective_nodes(name: str, expected: list[dict[str, Any]]) -> None:
    assert check_spec(_SPEC_WIDE) == []
    assert effective_nodes(_SPEC_WIDE, name) == expected


def test_effective_nodes_unknown_device() -> None:
    with pytest.raises(KeyError):
        effective_nodes(_SPEC_WIDE, "c")

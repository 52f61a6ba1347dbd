"""An independent checker for CDI (Container Device Interface) spec documents.

It re-implements, in standard-library Python, the checks the CDI reference library applies
when it loads a spec file (``ReadSpec`` -> ``ParseSpec`` -> ``newSpec`` -> ``Spec.validate``).
It does not use capctl: tests hold capctl's CDI writer to this checker.

Source read: github.com/cncf-tags/container-device-interface (formerly
container-orchestrated-devices/container-device-interface), commit
``05ae4b5bb730a036cb3f79477bd6676eea4a8c83`` (``specs-go/v1.1.0-69-g05ae4b5``; spec version
1.1.0), plus tag ``v0.5.2`` for the ``podman-4.3`` profile.  Files mirrored:

* ``pkg/parser/parser.go``: ParseQualifier, ValidateVendorName, ValidateClassName,
  validateVendorOrClassName, ValidateDeviceName, IsLetter / IsAlphaNumeric.
* ``pkg/cdi/spec.go``: ParseSpec (``yaml.UnmarshalStrict``: unknown and repeated keys and
  wrongly typed values are errors), ``(*Spec).validate``.
* ``pkg/cdi/device.go``: ``(*Device).validate``.
* ``pkg/cdi/container-edits.go``: ``(*ContainerEdits).Validate`` / ``isEmpty``, ValidateEnv,
  ``(*DeviceNode).Validate``, ``(*Hook).Validate``, ``(*Mount).Validate``,
  ``(*IntelRdt).Validate``, ValidateNetDevices.
* ``specs-go/config.go``: field names and Go types (``Spec``, ``Device``, ``ContainerEdits``,
  ``DeviceNode``, ``Mount``, ``Hook``, ``IntelRdt``, ``LinuxNetDevice``).
* ``specs-go/version.go``: validSpecVersions, ValidateVersion, MinimumRequiredVersion and the
  ``requiresVxyz`` functions.
* ``schema/schema.json`` and ``schema/defs.json``: the ``required`` keys.
* ``pkg/cdi/cache.go`` ``InjectDevices`` and ``pkg/cdi/container-edits.go`` ``Apply``, for
  :func:`effective_nodes`: what a container gets for one device (same at ``v0.5.2``).

Profiles (``profile=``):

* ``"reference"`` (default): the rules of the commit above.
* ``"podman-4.3"``: the rules of the CDI library that Debian's podman 4.3.1 vendors (the
  ``v0.5.0``..``v0.5.2`` code, read at tag ``v0.5.2``; checked against the real podman): the
  version must be exactly one of ``0.1.0``..``0.5.0`` (no ``v`` prefix), no minimum-version
  check, no ``.`` in the class, no one-character vendor or class (the library panics), no ``annotations`` / ``intelRdt`` / ``additionalGids`` /
  ``netDevices`` fields (the v0.5.2 structs lack them, so strict parsing refuses them), no
  ``"none"`` permissions, and an empty ``devices`` list is not an error.

A spec capctl writes for podman 4.3 and for current runtimes must pass both profiles.

``capctl_policy=True`` adds checks that are NOT CDI rules (the reference accepts their
violations; podman 4.3 accepted a relative ``path``): every ``path`` / ``hostPath`` of a
device node and mount, and every hook ``path``, is absolute, and every device node is fully
specified (``type`` set and ``major`` non-zero, unless ``type`` is ``p``) so that injection
never needs to ``stat`` the host node (``fillMissingInfo`` in ``container-edits_unix.go``).

Deliberate differences from Go: a JSON ``null`` is reported (Go's decoder would read it as
the zero value; the schema's types refuse it), and keys are matched case-sensitively (Go's
decoder also matches ``"Path"`` to ``path``).  Annotation keys are not validated: the
reference calls ``validation.ValidateSpecAnnotations`` with a ``map[string]string``, which
its ``map[string]any`` type switch never matches, so that check never runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

__all__ = [
    "PODMAN_43",
    "REFERENCE",
    "REFERENCE_COMMIT",
    "check_spec",
    "check_spec_file",
    "effective_nodes",
    "load_spec_file",
    "minimum_version",
]

REFERENCE_COMMIT: Final = "05ae4b5bb730a036cb3f79477bd6676eea4a8c83"
REFERENCE: Final = "reference"
PODMAN_43: Final = "podman-4.3"

# specs-go/version.go validSpecVersions, newest to oldest.
_VERSIONS: Final[tuple[str, ...]] = (
    "1.1.0",
    "1.0.0",
    "0.8.0",
    "0.7.0",
    "0.6.0",
    "0.5.0",
    "0.4.0",
    "0.3.0",
    "0.2.0",
    "0.1.0",
)
# specs-go/version.go vEarliest.
_EARLIEST: Final = "0.3.0"
# v0.5.2 pkg/cdi/spec.go validSpecVersions (a plain map lookup, no "v" prefix).
_PODMAN_43_VERSIONS: Final = frozenset({"0.1.0", "0.2.0", "0.3.0", "0.4.0", "0.5.0"})

# pkg/cdi/container-edits.go validHookNames (same set at v0.5.2).
_HOOK_NAMES: Final = frozenset(
    {"prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"}
)
# pkg/cdi/container-edits.go (*DeviceNode).Validate validTypes.
_NODE_TYPES: Final = frozenset({"", "b", "c", "u", "p"})
# pkg/cdi/container-edits.go NoPermissions (added after v1.1.0; absent at v0.5.2).
_NO_PERMISSIONS: Final = "none"

_INT64: Final = (-(2**63), 2**63 - 1)
_UINT32: Final = (0, 2**32 - 1)

# --- Go types of specs-go/config.go ------------------------------------------------------------
# A field type is one of: "string", "bool", ("int", lo, hi), ("list", item), ("map", value)
# (map[string]string), or ("struct", name).
_Type = Any
_STR: Final = "string"
_BOOL: Final = "bool"


def _int(bounds: tuple[int, int]) -> tuple[str, int, int]:
    return ("int", bounds[0], bounds[1])


_STRUCTS: Final[dict[str, dict[str, _Type]]] = {
    # specs-go/config.go Spec
    "Spec": {
        "cdiVersion": _STR,
        "kind": _STR,
        "annotations": ("map", _STR),  # Added in v0.6.0.
        "devices": ("list", ("struct", "Device")),
        "containerEdits": ("struct", "ContainerEdits"),
    },
    # specs-go/config.go Device
    "Device": {
        "name": _STR,
        "annotations": ("map", _STR),  # Added in v0.6.0.
        "containerEdits": ("struct", "ContainerEdits"),
    },
    # specs-go/config.go ContainerEdits
    "ContainerEdits": {
        "env": ("list", _STR),
        "deviceNodes": ("list", ("struct", "DeviceNode")),
        "netDevices": ("list", ("struct", "LinuxNetDevice")),  # Added in v1.1.0
        "hooks": ("list", ("struct", "Hook")),
        "mounts": ("list", ("struct", "Mount")),
        "intelRdt": ("struct", "IntelRdt"),  # Added in v0.7.0
        "additionalGids": ("list", _int(_UINT32)),  # Added in v0.7.0
    },
    # specs-go/config.go DeviceNode
    "DeviceNode": {
        "path": _STR,
        "hostPath": _STR,  # Added in v0.5.0
        "type": _STR,
        "major": _int(_INT64),
        "minor": _int(_INT64),
        "fileMode": _int(_UINT32),  # *os.FileMode (uint32)
        "permissions": _STR,
        "uid": _int(_UINT32),
        "gid": _int(_UINT32),
    },
    # specs-go/config.go Mount
    "Mount": {
        "hostPath": _STR,
        "containerPath": _STR,
        "options": ("list", _STR),
        "type": _STR,  # Added in v0.4.0
    },
    # specs-go/config.go Hook
    "Hook": {
        "hookName": _STR,
        "path": _STR,
        "args": ("list", _STR),
        "env": ("list", _STR),
        "timeout": _int(_INT64),  # *int (64-bit)
    },
    # specs-go/config.go IntelRdt
    "IntelRdt": {
        "closID": _STR,
        "l3CacheSchema": _STR,
        "memBwSchema": _STR,
        "schemata": ("list", _STR),  # Added in v1.1.0.
        "enableMonitoring": _BOOL,  # Added in v1.1.0.
    },
    # specs-go/config.go LinuxNetDevice
    "LinuxNetDevice": {"hostInterfaceName": _STR, "name": _STR},
}

# Fields the v0.5.2 specs-go/config.go structs do not have (strict parsing refuses them).
_PODMAN_43_MISSING: Final[dict[str, frozenset[str]]] = {
    "Spec": frozenset({"annotations"}),
    "Device": frozenset({"annotations"}),
    "ContainerEdits": frozenset({"netDevices", "intelRdt", "additionalGids"}),
}

# schema/schema.json and schema/defs.json "required".
_REQUIRED: Final[dict[str, tuple[str, ...]]] = {
    "Spec": ("cdiVersion", "kind", "devices"),
    "Device": ("name", "containerEdits"),
    "DeviceNode": ("path",),
    "Mount": ("hostPath", "containerPath"),
    "Hook": ("hookName", "path"),
    "LinuxNetDevice": ("hostInterfaceName", "name"),
}


# --- pkg/parser/parser.go ---------------------------------------------------------------------


def _is_letter(c: str) -> bool:
    # parser.go IsLetter: ASCII letters only.
    return ("A" <= c <= "Z") or ("a" <= c <= "z")


def _is_alnum(c: str) -> bool:
    # parser.go IsAlphaNumeric = IsLetter || IsDigit ('0'-'9').
    return _is_letter(c) or ("0" <= c <= "9")


def parse_qualifier(kind: str) -> tuple[str, str]:
    """parser.go ParseQualifier: cut at the first ``/``; ``("", kind)`` if a part is empty."""
    vendor, sep, cls = kind.partition("/")
    if not sep or not vendor or not cls:
        return "", kind
    return vendor, cls


def _vendor_or_class_error(name: str, middle: str, profile: str) -> str | None:
    # parser.go validateVendorOrClassName (v0.5.2 ValidateClassName: middle "_-" only).
    if name == "":
        return "empty name"
    if not _is_letter(name[0]):
        return f"{name!r}, should start with letter"
    if len(name) == 1:
        # v0.5.2 pkg/cdi/qualified-device.go ValidateVendorName / ValidateClassName range over
        # name[1:len(name)-1] with no length check: a one-character name panics podman 4.3
        # ("slice bounds out of range [1:0]", seen with Debian's podman 4.3.1).
        return f"{name!r}: one character panics podman 4.3" if profile == PODMAN_43 else None
    for c in name[1:-1]:
        if not (_is_alnum(c) or c in middle):
            return f"invalid character {c!r} in name {name!r}"
    if not _is_alnum(name[-1]):
        return f"{name!r}, should end with a letter or digit"
    return None


def validate_vendor_name(vendor: str, profile: str = REFERENCE) -> str | None:
    """parser.go ValidateVendorName: letter first, then ``[A-Za-z0-9_.-]``, alnum last
    (v0.5.2: at least two characters)."""
    err = _vendor_or_class_error(vendor, "_-.", profile)
    return None if err is None else f"invalid vendor. {err}"


def validate_class_name(cls: str, profile: str = REFERENCE) -> str | None:
    """parser.go ValidateClassName (v0.5.2: no ``.`` in a class, at least two characters)."""
    err = _vendor_or_class_error(cls, "_-" if profile == PODMAN_43 else "_-.", profile)
    return None if err is None else f"invalid class. {err}"


def validate_device_name(name: str) -> str | None:
    """parser.go ValidateDeviceName: alnum first and last, ``[A-Za-z0-9_.:-]`` between."""
    if name == "":
        return "invalid (empty) device name"
    if not _is_alnum(name[0]):
        return f"invalid device name {name!r}, should start with a letter or digit"
    if len(name) == 1:
        return None
    for c in name[1:-1]:
        if not (_is_alnum(c) or c in "_-.:"):
            return f"invalid character {c!r} in device name {name!r}"
    if not _is_alnum(name[-1]):
        return f"invalid name {name!r}, should end with a letter or digit"
    return None


# --- specs-go/version.go ----------------------------------------------------------------------


def _dicts(value: object) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def _get(obj: object, key: str) -> Any:
    return obj.get(key) if isinstance(obj, Mapping) else None


def _all_edits(doc: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Every device's containerEdits, then the spec's (the order requiresV0x0 use)."""
    edits = [_get(d, "containerEdits") for d in _dicts(doc.get("devices"))]
    edits.append(doc.get("containerEdits"))
    return [e for e in edits if isinstance(e, Mapping)]


def _requires_v110(doc: Mapping[str, Any]) -> bool:
    # version.go requiresV110: intelRdt.schemata non-nil or enableMonitoring, or any netDevices.
    for e in _all_edits(doc):
        rdt = e.get("intelRdt")
        if isinstance(rdt, Mapping) and (
            rdt.get("schemata") is not None or rdt.get("enableMonitoring") is True
        ):
            return True
        if _get(e, "netDevices"):
            return True
    return False


def _requires_v070(doc: Mapping[str, Any]) -> bool:
    # version.go requiresV070: intelRdt non-nil or additionalGids non-empty (spec or device).
    return any(
        e.get("intelRdt") is not None or bool(e.get("additionalGids")) for e in _all_edits(doc)
    )


def _requires_v060(doc: Mapping[str, Any]) -> bool:
    # version.go requiresV060: annotations (spec or device), or "." in the class of kind.
    if doc.get("annotations"):
        return True
    if any(d.get("annotations") for d in _dicts(doc.get("devices"))):
        return True
    kind = doc.get("kind")
    if not isinstance(kind, str):
        return False
    _, sep, cls = kind.partition("/")
    return bool(sep) and "." in cls


def _requires_v050(doc: Mapping[str, Any]) -> bool:
    # version.go requiresV050: a device name starting with '0'-'9', or any deviceNodes hostPath.
    for d in _dicts(doc.get("devices")):
        name = d.get("name")
        if isinstance(name, str) and name and "0" <= name[0] <= "9":
            return True
    return any(n.get("hostPath") for e in _all_edits(doc) for n in _dicts(e.get("deviceNodes")))


def _requires_v040(doc: Mapping[str, Any]) -> bool:
    # version.go requiresV040: any mount with a type.
    return any(m.get("type") for e in _all_edits(doc) for m in _dicts(e.get("mounts")))


def _never(doc: Mapping[str, Any]) -> bool:
    # version.go requiresV100 / requiresV080: no spec changes.
    return False


_REQUIRED_FUNCS: Final[tuple[tuple[str, Callable[[Mapping[str, Any]], bool]], ...]] = (
    ("1.1.0", _requires_v110),
    ("1.0.0", _never),
    ("0.8.0", _never),
    ("0.7.0", _requires_v070),
    ("0.6.0", _requires_v060),
    ("0.5.0", _requires_v050),
    ("0.4.0", _requires_v040),
)


def minimum_version(doc: Mapping[str, Any]) -> str:
    """version.go MinimumRequiredVersion / requiredVersion: the newest version whose
    ``requiresVxyz`` matches, else vEarliest ``0.3.0``."""
    for version, required in _REQUIRED_FUNCS:
        if required(doc):
            return version
    return _EARLIEST


def _version_errors(doc: Mapping[str, Any], profile: str) -> list[str]:
    raw = doc.get("cdiVersion", "")  # a missing field is Go's zero value ""
    if not isinstance(raw, str):
        return []  # reported by the structural check
    if profile == PODMAN_43:
        # v0.5.2 spec.go validateVersion: exact map lookup; no minimum-version check.
        return [] if raw in _PODMAN_43_VERSIONS else [f"invalid version {raw!r}"]
    # version.go ValidateVersion: newVersion strips one leading "v"; must be a known version.
    version = raw.removeprefix("v")
    if version not in _VERSIONS:
        return [f"invalid version {raw!r}"]
    # version.go ValidateVersion: versionIndex(min) < versionIndex(spec) => too low.
    need = minimum_version(doc)
    if _VERSIONS.index(need) < _VERSIONS.index(version):
        return [f"the spec version must be at least v{need} (cdiVersion is {raw!r})"]
    return []


# --- spec.go ParseSpec (strict unmarshal into specs-go/config.go types) ---------------------


def _check_value(value: object, typ: _Type, where: str, profile: str, out: list[str]) -> bool:
    """Report values Go's strict unmarshal would refuse; True if ``value`` fits ``typ``."""
    if value is None:
        out.append(f"{where}: null is not allowed")
        return False
    if typ == _STR:
        ok = isinstance(value, str)
    elif typ == _BOOL:
        ok = isinstance(value, bool)
    elif typ[0] == "int":
        ok = isinstance(value, int) and not isinstance(value, bool) and typ[1] <= value <= typ[2]
    elif typ[0] == "list":
        if not isinstance(value, list):
            out.append(f"{where}: expected a list, got {type(value).__name__}")
            return False
        good = True
        for i, item in enumerate(value):
            good &= _check_value(item, typ[1], f"{where}[{i}]", profile, out)
        return good
    elif typ[0] == "map":
        if not isinstance(value, Mapping):
            out.append(f"{where}: expected an object, got {type(value).__name__}")
            return False
        good = True
        for k, v in value.items():
            good &= _check_value(v, typ[1], f"{where}[{k!r}]", profile, out)
        return good
    else:
        return _check_struct(value, typ[1], where, profile, out)
    if not ok:
        want = typ if isinstance(typ, str) else f"int in [{typ[1]}, {typ[2]}]"
        out.append(f"{where}: expected {want}, got {value!r}")
    return ok


def _check_struct(value: object, name: str, where: str, profile: str, out: list[str]) -> bool:
    if not isinstance(value, Mapping):
        out.append(f"{where}: expected an object ({name}), got {type(value).__name__}")
        return False
    fields = _STRUCTS[name]
    missing_in_old = (
        _PODMAN_43_MISSING.get(name, frozenset()) if profile == PODMAN_43 else frozenset()
    )
    good = True
    for key, v in value.items():
        # spec.go ParseSpec: yaml.UnmarshalStrict refuses unknown fields.
        if key not in fields or key in missing_in_old:
            out.append(f"{where}: unknown field {key!r} in {name}")
            good = False
            continue
        good &= _check_value(v, fields[key], f"{where}.{key}", profile, out)
    # schema/schema.json, schema/defs.json "required".
    for key in _REQUIRED.get(name, ()):
        if key not in value:
            out.append(f"{where}: missing required field {key!r} in {name}")
    return good


# --- pkg/cdi/container-edits.go ---------------------------------------------------------------


def _env_errors(env: object, where: str) -> list[str]:
    # container-edits.go ValidateEnv: strings.IndexByte(v, '=') <= 0 is invalid.
    return [
        f"{where}: invalid environment variable {v!r}"
        for v in (env if isinstance(env, list) else [])
        if isinstance(v, str) and v.find("=") <= 0
    ]


def _absolute_errors(node: Mapping[str, Any], keys: tuple[str, ...], where: str) -> list[str]:
    # capctl policy, not a CDI rule.
    return [
        f"{where}: {key} {node[key]!r} is not absolute (capctl policy)"
        for key in keys
        if isinstance(node.get(key), str) and node[key] and not node[key].startswith("/")
    ]


def _device_node_errors(
    node: Mapping[str, Any], where: str, profile: str, policy: bool
) -> list[str]:
    out: list[str] = []
    path = node.get("path", "")
    ntype = node.get("type", "")
    perms = node.get("permissions", "")
    # container-edits.go (*DeviceNode).Validate: path required.
    if path == "":
        out.append(f"{where}: invalid (empty) device path")
    # container-edits.go (*DeviceNode).Validate: type in {"", b, c, u, p}.
    if isinstance(ntype, str) and ntype not in _NODE_TYPES:
        out.append(f"{where}: device {path!r}: invalid type {ntype!r}")
    # container-edits.go (*DeviceNode).Validate: "", "none" (not at v0.5.2), or only r/w/m.
    none_ok = perms == _NO_PERMISSIONS and profile == REFERENCE
    if isinstance(perms, str) and perms != "" and not none_ok and perms.strip("rwm") != "":
        out.append(f"{where}: device {path!r}: invalid permissions {perms!r}")
    if policy:
        out += _absolute_errors(node, ("path", "hostPath"), where)
        # container-edits_unix.go fillMissingInfo hasMinimalSpecification, else host stat.
        major = node.get("major", 0)
        if not (ntype and (major != 0 or ntype == "p")):
            out.append(
                f"{where}: device {path!r} is not fully specified (type and major; capctl policy)"
            )
    return out


def _edits_errors(edits: Mapping[str, Any], where: str, profile: str, policy: bool) -> list[str]:
    """container-edits.go (*ContainerEdits).Validate."""
    out = _env_errors(edits.get("env"), f"{where}.env")
    for i, node in enumerate(_dicts(edits.get("deviceNodes"))):
        out += _device_node_errors(node, f"{where}.deviceNodes[{i}]", profile, policy)
    for i, hook in enumerate(_dicts(edits.get("hooks"))):
        w = f"{where}.hooks[{i}]"
        name = hook.get("hookName", "")
        # container-edits.go (*Hook).Validate: known hook name, path required, valid env.
        if isinstance(name, str) and name not in _HOOK_NAMES:
            out.append(f"{w}: invalid hook name {name!r}")
        if hook.get("path", "") == "":
            out.append(f"{w}: invalid hook {name!r} with empty path")
        out += _env_errors(hook.get("env"), f"{w}.env")
        if policy:
            out += _absolute_errors(hook, ("path",), w)
    for i, mount in enumerate(_dicts(edits.get("mounts"))):
        w = f"{where}.mounts[{i}]"
        # container-edits.go (*Mount).Validate: hostPath and containerPath required.
        if mount.get("hostPath", "") == "":
            out.append(f"{w}: invalid mount, empty host path")
        if mount.get("containerPath", "") == "":
            out.append(f"{w}: invalid mount, empty container path")
        if policy:
            out += _absolute_errors(mount, ("hostPath", "containerPath"), w)
    rdt = edits.get("intelRdt")
    if isinstance(rdt, Mapping):
        # container-edits.go (*IntelRdt).Validate: closID must be a valid file name or "/".
        clos = rdt.get("closID", "")
        if (
            isinstance(clos, str)
            and clos != "/"
            and (len(clos.encode()) >= 4096 or clos in (".", "..") or "/" in clos or "\n" in clos)
        ):
            out.append(f"{where}.intelRdt: invalid ClosID {clos!r}")
    # container-edits.go ValidateNetDevices: names required, no duplicate host/container names.
    host_seen: set[str] = set()
    name_seen: set[str] = set()
    for i, dev in enumerate(_dicts(edits.get("netDevices"))):
        w = f"{where}.netDevices[{i}]"
        host, name = dev.get("hostInterfaceName", ""), dev.get("name", "")
        if host == "":
            out.append(f"{w}: invalid linux net device, empty HostInterfaceName")
        if name == "":
            out.append(f"{w}: invalid linux net device, empty Name")
        if isinstance(host, str) and host in host_seen:
            out.append(f"{w}: invalid linux net device, duplicate HostInterfaceName {host!r}")
        if isinstance(name, str) and name in name_seen:
            out.append(f"{w}: invalid linux net device, duplicate Name {name!r}")
        if isinstance(host, str):
            host_seen.add(host)
        if isinstance(name, str):
            name_seen.add(name)
    return out


def _edits_empty(edits: object, profile: str) -> bool:
    """container-edits.go (*ContainerEdits).isEmpty (v0.5.2: env/deviceNodes/hooks/mounts)."""
    if not isinstance(edits, Mapping):
        return True
    keys = ["env", "deviceNodes", "hooks", "mounts"]
    if profile == REFERENCE:
        keys += ["additionalGids", "netDevices"]
        if edits.get("intelRdt") is not None:
            return False
    return not any(edits.get(k) for k in keys)


# --- public API -------------------------------------------------------------------------------


def check_spec(doc: object, *, profile: str = REFERENCE, capctl_policy: bool = False) -> list[str]:
    """Every reason the CDI library would refuse ``doc`` (a decoded JSON spec); [] if valid."""
    if profile not in (REFERENCE, PODMAN_43):
        raise ValueError(f"unknown profile {profile!r}")
    out: list[str] = []
    # spec.go ReadSpec: "no Spec data" / ParseSpec strict unmarshal into specs-go Spec.
    if not isinstance(doc, Mapping):
        return [f"spec: expected a JSON object, got {type(doc).__name__}"]
    _check_struct(doc, "Spec", "spec", profile, out)

    # spec.go (*Spec).validate, in its order.
    # 1. specs-go/version.go ValidateVersion (v0.5.2: validateVersion).
    out += _version_errors(doc, profile)
    # 2./3. spec.go newSpec: vendor, class = parser.ParseQualifier(Kind); Validate{Vendor,Class}Name.
    kind = doc.get("kind", "")  # a missing field is Go's zero value ""
    if isinstance(kind, str):
        vendor, cls = parse_qualifier(kind)
        for err in (validate_vendor_name(vendor, profile), validate_class_name(cls, profile)):
            if err is not None:
                out.append(f"spec.kind {kind!r}: {err}")
    # 4. spec.go: s.edits().Validate() for the spec-wide containerEdits (may be empty).
    edits = doc.get("containerEdits")
    if isinstance(edits, Mapping):
        out += _edits_errors(edits, "spec.containerEdits", profile, capctl_policy)

    # 5. spec.go: newDevice -> device.go (*Device).validate for each device.
    devices = doc.get("devices")
    seen: set[str] = set()
    for i, dev in enumerate(devices if isinstance(devices, list) else []):
        if not isinstance(dev, Mapping):
            continue  # reported by the structural check
        name = dev.get("name", "")
        where = f"spec.devices[{i}] ({name!r})"
        if isinstance(name, str):
            # device.go: parser.ValidateDeviceName(d.Name).
            err = validate_device_name(name)
            if err is not None:
                out.append(f"{where}: {err}")
            # spec.go: "invalid spec, multiple device %q".
            if name in seen:
                out.append(f"{where}: invalid spec, multiple device {name!r}")
            seen.add(name)
        dedits = dev.get("containerEdits")
        # device.go: edits.isEmpty() -> "invalid device, empty device edits".
        if _edits_empty(dedits, profile):
            out.append(f"{where}: invalid device, empty device edits")
        if isinstance(dedits, Mapping):
            out += _edits_errors(dedits, f"{where}.containerEdits", profile, capctl_policy)
    # 6. spec.go: len(devices) == 0 -> "invalid spec, no devices" (not at v0.5.2).
    if profile == REFERENCE and (devices is None or devices == []):
        out.append("spec: invalid spec, no devices")
    return out


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # spec.go ParseSpec: yaml.UnmarshalStrict refuses repeated mapping keys.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"repeated key {key!r}")
        result[key] = value
    return result


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def load_spec_file(path: str | Path) -> object:
    """Decode a JSON spec file as strictly as ParseSpec (repeated keys, NaN: ValueError)."""
    text = Path(path).read_bytes().decode("utf-8")
    return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)


def check_spec_file(
    path: str | Path, *, profile: str = REFERENCE, capctl_policy: bool = False
) -> list[str]:
    """:func:`check_spec` on a spec file, plus the file-level rules of ReadSpec / the cache."""
    p = Path(path)
    out: list[str] = []
    # spec-dirs.go scanSpecDirs: only *.json and *.yaml files are read (JSON only here).
    if p.suffix != ".json":
        out.append(f"{p.name}: a JSON spec file must end in .json")
    try:
        doc = load_spec_file(p)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return [*out, f"failed to parse CDI Spec {str(p)!r}: {exc}"]
    # spec.go ReadSpec: raw == nil -> "no Spec data".
    if doc is None:
        return [*out, f"failed to parse CDI Spec {str(p)!r}, no Spec data"]
    return out + check_spec(doc, profile=profile, capctl_policy=capctl_policy)


def effective_nodes(doc: Mapping[str, Any], name: str) -> list[dict[str, Any]]:
    """The device nodes a container gets when it asks for device ``name`` of the spec ``doc``.

    cache.go InjectDevices: the spec-wide ``containerEdits`` (once per spec), then the device's
    own.  container-edits.go Apply: each node replaces an earlier one at the same ``path``
    (``RemoveDevice`` then ``AddDevice``).  container-edits_unix.go fillMissingInfo: an empty
    ``hostPath`` is ``path``.  A name the spec does not have: ``KeyError``.
    """
    devices = {d.get("name"): d for d in _dicts(doc.get("devices"))}
    device = devices[name]
    out: dict[str, dict[str, Any]] = {}
    for edits in (doc.get("containerEdits"), device.get("containerEdits")):
        for node in _dicts(_get(edits, "deviceNodes")):
            filled = dict(node)
            if not filled.get("hostPath"):
                filled["hostPath"] = filled.get("path")
            out.pop(str(node.get("path")), None)
            out[str(node.get("path"))] = filled
    return list(out.values())

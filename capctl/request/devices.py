"""Pure grammar of ``NVIDIA_VISIBLE_DEVICES``: text -> a :class:`Request` of device references.

The syntax is capctl's contract (docs/contract.md) (the container toolkit's): a comma-separated list of

=================================  =========================================================
``MIG-<uuid>``                     one MIG device by its UUID (R470+ drivers)
``MIG-GPU-<gpu uuid>/<gi>/<ci>``   one MIG device by parent UUID, GPU and compute instance
``<gpu index>:<mig index>``        one MIG device by NVML indices
``GPU-<uuid>``                     one whole GPU by UUID
``<gpu index>``                    one whole GPU by NVML index
``<domain>:<bus>:<dev>.<fn>``      one whole GPU by PCI bus id (``0000:07:00.0``, or NVML's
                                   8-digit domain), as libnvidia-container accepts it
``all``                            every device (in any case: ``ALL``)
=================================  =========================================================

and ``none``, ``void`` or an empty value mean "no devices".  Each item may be surrounded by
blanks; empty items (``a,,b``, ``a,``) are skipped, as the container toolkit skips them;
repeated items are dropped (the first one keeps its place).

Strictness is on purpose: this text comes from a container image or a user, and capctl grants
device access from it, so anything else is an error that quotes the offending token.  A token
is matched against one small exact parser per form (ASCII only: ``str.isdigit`` would take
``'²'``) and is never used to build a path; ``all``, ``none`` and ``void`` must stand alone
(``all,0`` is ambiguous, so it is refused).  The parsers are plain string code, not regular
expressions: ``re`` costs about 5 ms of every hook start (docs/hook-startup.md).

Nothing here knows about GPUs that exist: that is :mod:`capctl.request.resolve`'s job.
"""

from __future__ import annotations

from capctl._lite.litenum import Enum
from capctl._lite.record import Record
from capctl.errors import DeviceError

#: Longest token accepted (``MIG-GPU-<36>/<gi>/<ci>`` is at most 52 characters).
MAX_TOKEN = 64
#: Longest value accepted; a real request is a few hundred characters at most.
MAX_VALUE = 4096

_DIGITS = frozenset("0123456789")
HEX = frozenset("0123456789abcdefABCDEF")
LOWER_HEX = frozenset("0123456789abcdef")
#: Where a UUID's dashes are: 8-4-4-4-12 hex digits, 36 characters.
_UUID_DASHES = (8, 13, 18, 23)
_UUID_LENGTH = 36

_ALL = "all"
_NOTHING = ("none", "void")
# Blanks around an item: spaces and tabs (an env value never holds newlines in practice;
# one that does is refused, not split).
_BLANKS = " \t"


def is_uuid(text: str, digits: frozenset[str] = HEX) -> bool:
    """``[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}``, with
    ``digits`` (e.g. :data:`LOWER_HEX`) as the hex digits allowed."""
    if len(text) != _UUID_LENGTH or text.count("-") != len(_UUID_DASHES):
        return False
    return all(text[i] == "-" for i in _UUID_DASHES) and digits.issuperset(text.replace("-", ""))


def _index(text: str) -> int | None:
    """``0|[1-9][0-9]{0,2}`` as an int, else None: no sign, no blanks, and no leading zero
    (``01`` is refused rather than guessed at)."""
    if text == "0":
        return 0
    if not 0 < len(text) <= 3 or text[0] == "0" or not _DIGITS.issuperset(text):
        return None
    return int(text)


class MigByUuid(Record):
    """``MIG-<uuid>``; ``uuid`` is the full token, lower-cased (``MIG-...``)."""

    uuid: str


class MigByInstance(Record):
    """``MIG-GPU-<gpu uuid>/<gi>/<ci>``; ``gpu_uuid`` is ``GPU-...`` lower-cased."""

    gpu_uuid: str
    gi: int
    ci: int


class MigByIndex(Record):
    """``<gpu index>:<mig index>`` (NVML indices, as ``nvidia-smi -L`` shows them)."""

    gpu: int
    mig: int


class GpuByUuid(Record):
    """``GPU-<uuid>``: a whole GPU; ``uuid`` is the full token, lower-cased."""

    uuid: str


class GpuByPciBusId(Record):
    """``<domain>:<bus>:<device>.<function>``: a whole GPU; ``bus_id`` is normalised by
    :func:`normal_pci_bus_id` (the form the topology's ids are compared in)."""

    bus_id: str


class GpuByIndex(Record):
    """``<gpu index>``: a whole GPU by NVML index (not its device minor)."""

    index: int


DeviceRef = MigByUuid | MigByInstance | MigByIndex | GpuByUuid | GpuByIndex | GpuByPciBusId


class Ref(Record):
    """One parsed item and the token it came from (for error messages)."""

    token: str
    device: DeviceRef


class Request(Record):
    """A parsed ``NVIDIA_VISIBLE_DEVICES``: ``all``, nothing, or a list of references."""

    refs: tuple[Ref, ...] = ()
    all: bool = False

    @property
    def empty(self) -> bool:
        return not self.all and not self.refs


def _lower_uuid(prefix: str, uuid: str) -> str:
    # NVML prints UUIDs in lower case; compare case-insensitively by normalising here.
    return prefix + uuid.lower()


def normal_pci_bus_id(text: str) -> str | None:
    """``[0-9a-fA-F]{4}([0-9a-fA-F]{4})?:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\\.[0-7]`` as NVML's
    lower-case 8-digit-domain form (``00000000:07:00.0``), else None.

    sysfs and ``lspci -D`` print a 4-digit domain, NVML (``nvmlPciInfo_t.busId``) 8 digits:
    both name the same GPU, so ids are compared in this one form.
    """
    parts = text.split(":")
    if len(parts) != 3:
        return None
    domain, bus, slot = parts
    if not (
        len(domain) in (4, 8)
        and len(bus) == 2
        and len(slot) == 4
        and slot[2] == "."
        and slot[3] in "01234567"
        and HEX.issuperset(domain + bus + slot[:2])
    ):
        return None
    return f"{domain.lower():0>8}:{bus.lower()}:{slot.lower()}"


def parse_token(token: str) -> DeviceRef:
    """Parse one stripped item that names a device (not ``all``/``none``/``void``)."""
    if len(token) > MAX_TOKEN:
        raise DeviceError(token[:MAX_TOKEN] + "...", f"longer than {MAX_TOKEN} characters")
    device = _device(token)
    if device is not None:
        return device
    if token.lower() in (_ALL, *_NOTHING):
        raise DeviceError(token, f"{token!r} must be the whole value, not one item of a list")
    if "/" in token or token.startswith("."):
        raise DeviceError(token, "looks like a path; give a device UUID or index, not a path")
    raise DeviceError(
        token,
        "not a device (want MIG-<uuid>, MIG-GPU-<uuid>/<gi>/<ci>, <gpu>:<mig>, GPU-<uuid>, "
        "<gpu index>, a PCI bus id, all or none)",
    )


def _device(token: str) -> DeviceRef | None:
    """The device ``token`` names in one of the five forms, or None."""
    if token.startswith("MIG-GPU-"):  # MIG-GPU-<uuid>/<gi>/<ci>
        uuid, _, rest = token.removeprefix("MIG-GPU-").partition("/")
        gi, _, ci = rest.partition("/")  # a missing part is "", which is no index
        gi_id, ci_id = _index(gi), _index(ci)
        if gi_id is None or ci_id is None or not is_uuid(uuid):
            return None
        return MigByInstance(_lower_uuid("GPU-", uuid), gi_id, ci_id)
    if token.startswith("MIG-"):  # MIG-<uuid>
        uuid = token.removeprefix("MIG-")
        return MigByUuid(_lower_uuid("MIG-", uuid)) if is_uuid(uuid) else None
    if token.startswith("GPU-"):  # GPU-<uuid>
        uuid = token.removeprefix("GPU-")
        return GpuByUuid(_lower_uuid("GPU-", uuid)) if is_uuid(uuid) else None
    bus_id = normal_pci_bus_id(token)
    if bus_id is not None:  # 0000:07:00.0
        return GpuByPciBusId(bus_id)
    gpu, sep, mig = token.partition(":")
    gpu_index = _index(gpu)
    if gpu_index is None:
        return None
    if not sep:  # <gpu index>
        return GpuByIndex(gpu_index)
    mig_index = _index(mig)  # <gpu index>:<mig index>
    return None if mig_index is None else MigByIndex(gpu_index, mig_index)


def parse_request(value: str | None) -> Request:
    """Parse an ``NVIDIA_VISIBLE_DEVICES`` value (None: the variable is unset: no devices).

    Raises :class:`DeviceError` quoting the first bad token: an unknown form, a path-like or
    overlong token, a malformed UUID.  Empty items are skipped; a list of nothing but empty
    items (``,``) asks for nothing.
    """
    if value is None:
        return Request()
    if len(value) > MAX_VALUE:
        raise DeviceError(value[:40] + "...", f"value longer than {MAX_VALUE} characters")
    whole = value.strip(_BLANKS)
    if whole == "" or whole in _NOTHING:
        return Request()
    if whole.lower() == _ALL:
        return Request(all=True)
    refs: list[Ref] = []
    seen: set[DeviceRef] = set()
    for raw in whole.split(","):
        token = raw.strip(_BLANKS)
        if token == "":  # "a,,b": the toolkit skips empty items, and so does capctl
            continue
        device = parse_token(token)
        if device in seen:
            continue
        seen.add(device)
        refs.append(Ref(token, device))
    return Request(tuple(refs))


class MigAdmin(Enum):
    """The two MIG administration capabilities a container may ask for with ``=all``."""

    CONFIG = "config"  # NVIDIA_MIG_CONFIG_DEVICES
    MONITOR = "monitor"  # NVIDIA_MIG_MONITOR_DEVICES

    @property
    def variable(self) -> str:
        return f"NVIDIA_MIG_{self.name}_DEVICES"


def parse_mig_admin(which: MigAdmin, value: str | None) -> bool:
    """True if ``NVIDIA_MIG_{CONFIG,MONITOR}_DEVICES`` asks for it.

    Unset or empty: no.  ``all``: yes.  Anything else is refused (the toolkit supports only
    ``all``; guessing at per-device meanings would grant the wrong thing).
    """
    if value is None:
        return False
    text = value.strip(" \t")
    if text == "":
        return False
    if text == "all":
        return True
    raise DeviceError(text[:MAX_TOKEN], f"{which.variable} accepts only 'all'")

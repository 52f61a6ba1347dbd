"""Capability names and where their files are: ``gpu0/gi2/access`` <-> proc file <-> node.

Pure.  The grammar of MIG capability names (``config``, ``monitor``,
``gpu<N>/gi<G>[/ci<C>]/access``) and of nvlink/sys names, the root-relative paths of the
capability files and nodes, and the driver's default modes (``docs/driver.md``).
"""

from __future__ import annotations

from capctl._lite.litenum import Enum
from capctl._lite.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    pass

#: The node directory and name pattern of a capability (root-relative, no leading slash).
CAPS_DEV_DIR = "dev/nvidia-caps"
#: Where the driver publishes the minors files.
MINORS_DIR = "proc/driver/nvidia-caps"
#: Where the driver publishes one file per existing MIG (and sys) capability.
CAPABILITIES_DIR = "proc/driver/nvidia/capabilities"
#: nvlink capabilities live under the nvlink module's own proc directory.
NVLINK_CAPABILITIES_DIR = "proc/driver/nvidia-nvlink/capabilities"

#: The driver's default ``DeviceFileMode`` of the ``mig-minors`` capabilities, used by
#: ``sync --all`` for those with no capability file yet (``docs/driver.md``, "Default modes"):
#: 256 (0400) for ``config``, 292 (0444) for ``monitor`` and every GI/CI capability.  The
#: nvlink and sys capabilities (``fabric-mgmt``, ``fabric-imex-mgmt``) are 0400 too, but capctl
#: never makes their nodes without the driver's file to say so.
CONFIG_MODE = 0o400
DEFAULT_MODE = 0o444


class Kind(Enum):
    """What a capability guards."""

    CONFIG = "config"  # MIG management (create/destroy instances)
    MONITOR = "monitor"  # MIG monitoring of all instances
    GI = "gi"  # access to one GPU instance
    CI = "ci"  # access to one compute instance
    OTHER = "other"  # nvlink / sys capabilities (fabric management, imex)


class Source(Enum):
    """Which ``*-minors`` file a capability comes from."""

    MIG = "mig-minors"
    NVLINK = "nvlink-minors"
    SYS = "sys-minors"


# --- line grammars ----------------------------------------------------------------------------
#
# One small parser per line kind, with str methods instead of regular expressions: the OCI hook
# imports this module on every container start, and ``import re`` alone costs it about 5 ms
# (docs/hook-startup.md).  Each parser accepts exactly what its grammar (a regex in its docstring) does;
# the tests hold them to those regexes.  Numbers are ASCII digits only: ``str.isdigit`` alone
# takes '²' and ``int`` takes '٣'.

_LOWER_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"


def _number(text: str, width: int) -> int:
    """``0|[1-9][0-9]{0,width-1}`` as an int (no leading zero, at most ``width`` digits);
    -1 if ``text`` is not one."""
    if (
        0 < len(text) <= width
        and text.isascii()
        and text.isdigit()
        and (text[0] != "0" or len(text) == 1)
    ):
        return int(text)
    return -1


def _digits(text: str) -> int:
    """``[0-9]+`` (leading zeros allowed, any length) as an int; -1 if ``text`` is not one."""
    return int(text) if text.isascii() and text.isdigit() else -1


def _is_word(text: str) -> bool:
    r"""``\S+``: not empty, and no character that ``re`` (and ``str.split``) calls white space."""
    return text.split() == [text]


def _is_other_segment(segment: str) -> bool:
    """``[a-z][a-z0-9]*(?:-[a-z0-9]+)*``: lower-case words joined by single '-'."""
    return "a" <= segment[:1] <= "z" and all(
        part and not part.strip(_LOWER_ALNUM) for part in segment.split("-")
    )


def _is_other_name(name: str) -> bool:
    """``S(?:/S)*`` with ``S`` = ``[a-z][a-z0-9]*(?:-[a-z0-9]+)*``: an nvlink/sys capability
    name (``fabric-mgmt``).

    The driver prints these names with ``%s`` and makes their proc files under the name as a
    path (``docs/driver.md``, "Minors files"), so a '/' is allowed between segments; each
    segment starts with a letter, so no name climbs out of its directory (``..``) or is
    absolute.
    """
    return all(_is_other_segment(segment) for segment in name.split("/"))


def _is_name_of(name: str, source: Source) -> bool:
    """True if ``name`` may appear in ``source``'s minors file (a MIG name only in
    ``mig-minors``: one table holds every name)."""
    if source is Source.MIG:
        return _mig_name(name) is not None
    return _is_other_name(name) and _mig_name(name) is None


class MigRef(Record):
    """The parsed parts of a MIG capability name."""

    kind: Kind
    gpu: int | None = None
    gi: int | None = None
    ci: int | None = None


def parse_mig_name(name: str) -> MigRef | None:
    """Return the parts of a MIG capability name, or None if *name* is not one."""
    fields = _mig_name(name)
    return None if fields is None else MigRef(*fields)


def _mig_name(name: str) -> tuple[Kind, int | None, int | None, int | None] | None:
    """:func:`parse_mig_name` as a tuple (no record built: the line parser asks 4322 times).

    The grammar: ``config|monitor|gpu<N>/gi<N>(/ci<N>)?/access``, each ``<N>`` being
    ``0|[1-9][0-9]{0,3}``.
    """
    if name == "config":
        return Kind.CONFIG, None, None, None
    if name == "monitor":
        return Kind.MONITOR, None, None, None
    parts = name.split("/")
    n = len(parts)
    if not 3 <= n <= 4 or parts[-1] != "access" or parts[0][:3] != "gpu" or parts[1][:2] != "gi":
        return None
    gpu, gi = _number(parts[0][3:], 4), _number(parts[1][2:], 4)
    if gpu < 0 or gi < 0:
        return None
    if n == 3:
        return Kind.GI, gpu, gi, None
    ci = _number(parts[2][2:], 4) if parts[2][:2] == "ci" else -1
    return None if ci < 0 else (Kind.CI, gpu, gi, ci)


def gi_name(gpu_minor: int, gi: int) -> str:
    """``gpu<N>/gi<G>/access``: N is the GPU's *device minor*, not its index."""
    return f"gpu{gpu_minor}/gi{gi}/access"


def ci_name(gpu_minor: int, gi: int, ci: int) -> str:
    """``gpu<N>/gi<G>/ci<C>/access``."""
    return f"gpu{gpu_minor}/gi{gi}/ci{ci}/access"


def is_valid_name(name: str) -> bool:
    """True for a MIG capability name or an nvlink/sys one."""
    return _mig_name(name) is not None or _is_other_name(name)


def proc_relpath(name: str, source: Source) -> str:
    """The capability's proc file, root-relative.

    ``config`` -> ``proc/driver/nvidia/capabilities/mig/config``;
    ``gpu0/gi2/access`` -> ``.../capabilities/gpu0/mig/gi2/access``;
    ``gpu0/gi2/ci0/access`` -> ``.../capabilities/gpu0/mig/gi2/ci0/access``.
    """
    if source is Source.NVLINK:
        return f"{NVLINK_CAPABILITIES_DIR}/{name}"
    ref = parse_mig_name(name)
    if ref is None:
        return f"{CAPABILITIES_DIR}/{name}"
    if ref.kind in (Kind.CONFIG, Kind.MONITOR):
        return f"{CAPABILITIES_DIR}/mig/{name}"
    rest = f"gi{ref.gi}/access" if ref.kind is Kind.GI else f"gi{ref.gi}/ci{ref.ci}/access"
    return f"{CAPABILITIES_DIR}/gpu{ref.gpu}/mig/{rest}"


def ci_name_in_gi(gi_access: str, entry: str) -> str | None:
    """``name_from_proc_relpath(f"{gi_dir}/{entry}/access")`` for the entry ``entry`` of a GI's
    proc directory whose own name is ``gi_access`` (``name_from_proc_relpath`` of that
    directory's ``access``: ``gpu<N>/gi<G>/access``), without parsing the whole path again:
    ``sync`` asks once per compute instance, up to 3840 times."""
    ci = _digits(entry[2:]) if entry[:2] == "ci" else -1
    return None if ci < 0 else f"{gi_access[:-6]}ci{ci}/access"


def name_from_proc_relpath(relpath: str) -> str | None:
    """Inverse of :func:`proc_relpath` for MIG capabilities under ``CAPABILITIES_DIR``.

    Below that directory: ``mig/(config|monitor)`` or
    ``gpu<N>/mig/gi<N>(/ci<N>)?/access``, each ``<N>`` being ``[0-9]+`` (any number of
    digits, leading zeros too: the name built from it is the canonical one).
    """
    prefix = CAPABILITIES_DIR + "/"
    if not relpath.startswith(prefix):
        return None
    rest = relpath[len(prefix) :]
    if rest == "mig/config" or rest == "mig/monitor":
        return rest[4:]
    parts = rest.split("/")
    n = len(parts)
    if (
        not 4 <= n <= 5
        or parts[1] != "mig"
        or parts[-1] != "access"
        or parts[0][:3] != "gpu"
        or parts[2][:2] != "gi"
    ):
        return None
    gpu, gi = _digits(parts[0][3:]), _digits(parts[2][2:])
    if gpu < 0 or gi < 0:
        return None
    if n == 4:
        return gi_name(gpu, gi)
    ci = _digits(parts[3][2:]) if parts[3][:2] == "ci" else -1
    return None if ci < 0 else ci_name(gpu, gi, ci)


def node_name(minor: int) -> str:
    """Basename of the node: ``nvidia-cap<minor>``."""
    return f"nvidia-cap{minor}"


def node_relpath(minor: int) -> str:
    """``dev/nvidia-caps/nvidia-cap<minor>`` (root-relative)."""
    return f"{CAPS_DEV_DIR}/{node_name(minor)}"


def default_mode(name: str) -> int:
    """The driver's mode for a ``mig-minors`` capability with no proc file to ask."""
    return CONFIG_MODE if name == "config" else DEFAULT_MODE


def minor_of_node_name(name: str) -> int:
    """``N`` of a node named ``nvidia-cap<N>`` (N canonical: no leading zero); -1 otherwise."""
    return _number(name[10:], 7) if name[:10] == "nvidia-cap" else -1


def stray_reason(name: str, major: int, minor: int, caps_major: int) -> str | None:
    """Why a char node ``name`` -> ``major:minor`` in ``/dev/nvidia-caps`` is a stray, or None.

    The driver checks a capability by whether the caller can open *a* node of its number
    (``docs/driver.md``, "Nodes"), so any other node of the caps major, under any name, opens
    the capability past every grant on ``nvidia-cap<minor>``; and a node named for one minor
    that opens another device lies to every tool that goes by names.  Pure.
    """
    named = minor_of_node_name(name)
    if major == caps_major and named != minor:
        return f"opens capability {major}:{minor} under another name than {node_name(minor)}"
    if named >= 0 and (major, minor) != (caps_major, named):
        return f"named for capability {named} but is {major}:{minor}"
    return None

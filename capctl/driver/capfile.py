"""Parse and print a capability's proc file (``DeviceFileMinor/Mode/Modify``).  Pure.

Format: ``docs/driver.md``, "Capability files".
"""

from __future__ import annotations

from capctl._lite.record import Record, set_field
from capctl.devnum import MAX_MINOR
from capctl.driver.capnames import _digits
from capctl.errors import ParseError

TYPE_CHECKING = False
if TYPE_CHECKING:
    pass


_CAPFILE_KEYS = ("DeviceFileMinor", "DeviceFileMode", "DeviceFileModify")


def _capfile_line(line: str) -> tuple[str, int] | None:
    """``(DeviceFileMinor|DeviceFileMode): ([0-9]{1,7})|DeviceFileModify: (-?[0-9]{1,10})``:
    a capability file line's key and value, None if malformed.

    ``DeviceFileModify`` is whatever integer was last written to the file: the driver stores
    and prints any ``int`` (``docs/driver.md``, "DeviceFileModify").
    """
    key, _, value_text = line.partition(": ")
    if key == "DeviceFileModify":
        negative = value_text[:1] == "-"
        digits = value_text[1:] if negative else value_text
        if len(digits) > 10:
            return None
        value = _digits(digits)
        return None if value < 0 else (key, -value if negative else value)
    if key not in _CAPFILE_KEYS or len(value_text) > 7:
        return None
    value = _digits(value_text)
    return None if value < 0 else (key, value)


class CapabilityFile(Record):
    """The three fields of a capability's proc file."""

    minor: int
    mode: int
    #: Whether the driver's helper (nvidia-modprobe) manages the node: ``DeviceFileModify``
    #: is exactly 1.  Any other value, 0 or not, means "leave it alone", as nvidia-modprobe
    #: reads it (``docs/driver.md``, "DeviceFileModify").
    modify: bool

    def __init__(self, minor: int, mode: int, modify: bool) -> None:
        # Positional, like minorsfile.Capability: sync builds one per existing capability.
        set_field(self, "minor", minor)
        set_field(self, "mode", mode)
        set_field(self, "modify", modify)


def parse_capability_file(text: str, path: str) -> CapabilityFile:
    """Parse a capability proc file: ``DeviceFileMinor``, ``DeviceFileMode`` (decimal),
    ``DeviceFileModify`` (any integer; only 1 means managed), each exactly once."""
    fast = _parse_as_printed(text)
    if fast is not None:
        return fast
    fields: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parsed = _capfile_line(line.strip())
        if parsed is None:
            raise ParseError(path, f"malformed line {line[:80]!r}", lineno)
        key, value = parsed
        if key in fields:
            raise ParseError(path, f"{key} repeated", lineno)
        fields[key] = value
    missing = [k for k in _CAPFILE_KEYS if k not in fields]
    if missing:
        raise ParseError(path, f"missing {', '.join(missing)}")
    minor, mode, modify = (
        fields["DeviceFileMinor"],
        fields["DeviceFileMode"],
        fields["DeviceFileModify"],
    )
    if minor > MAX_MINOR:
        raise ParseError(path, f"DeviceFileMinor {minor} out of range")
    if mode > 0o777:
        raise ParseError(path, f"DeviceFileMode {mode} is not a permission mode (want <= 511)")
    return CapabilityFile(minor, mode, modify == 1)


_MINOR_KEY, _MODE_KEY, _MODIFY_KEY = (f"{k}: " for k in _CAPFILE_KEYS)


def _parse_as_printed(text: str) -> CapabilityFile | None:
    """:func:`parse_capability_file` for a file exactly as the driver prints it (the three
    lines in order, ``DeviceFileModify`` 0 or 1), in a few C-level calls; None if in doubt.

    ``sync`` reads one file per existing capability, up to 4324; anything else (another
    order, blank lines, other values, an error) is left to the line parser.
    """
    lines = text.split("\n")
    if len(lines) != 4 or lines[3]:
        return None
    minor_line, mode_line, modify_line = lines[0], lines[1], lines[2]
    if (
        minor_line[:17] != _MINOR_KEY
        or mode_line[:16] != _MODE_KEY
        or modify_line not in ("DeviceFileModify: 0", "DeviceFileModify: 1")
    ):
        return None
    minor_text, mode_text = minor_line[17:], mode_line[16:]
    if not (
        0 < len(minor_text) <= 7
        and 0 < len(mode_text) <= 3
        and minor_text.isascii()
        and minor_text.isdigit()
        and mode_text.isascii()
        and mode_text.isdigit()
    ):
        return None
    mode = int(mode_text)
    if mode > 0o777:
        return None
    return CapabilityFile(int(minor_text), mode, modify_line[18] == "1")


def format_capability_file(cf: CapabilityFile) -> str:
    """The proc file's text, as the driver prints it."""
    return (
        f"DeviceFileMinor: {cf.minor}\nDeviceFileMode: {cf.mode}\n"
        f"DeviceFileModify: {int(cf.modify)}\n"
    )

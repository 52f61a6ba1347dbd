"""Parse ``/proc/devices`` and pick the NVIDIA character majors out of it.  Pure.

Names: ``docs/driver.md``, "/proc/devices".
"""

from __future__ import annotations

from capctl._lite.record import Record
from capctl.devnum import MAX_MAJOR
from capctl.driver.capnames import _digits, _is_word
from capctl.errors import ParseError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

CAPS_MAJOR_NAME = "nvidia-caps"
#: The GPU nodes' major (195): drivers from 545 on register it as ``nvidia`` and
#: ``nvidiactl``, older ones as ``nvidia-frontend`` (``docs/driver.md``, "/proc/devices").
FRONTEND_MAJOR_NAMES = ("nvidia", "nvidiactl", "nvidia-frontend")
UVM_MAJOR_NAME = "nvidia-uvm"


def _devices_entry(line: str) -> tuple[int, str] | None:
    r"""`` *([0-9]{1,4}) (\S+)``: a ``/proc/devices`` entry's major and name (leading blanks
    and zeros allowed), None if malformed."""
    major_text, _, name = line.lstrip(" ").partition(" ")
    if len(major_text) > 4 or not _is_word(name):
        return None
    major = _digits(major_text)
    return None if major < 0 else (major, name)


class Majors(Record):
    """The character majors of the NVIDIA drivers, from ``/proc/devices``."""

    caps: int | None
    frontend: int | None
    uvm: int | None


def parse_proc_devices(text: str, path: str) -> dict[str, int]:
    """Parse the "Character devices:" section of ``/proc/devices`` into name -> major.

    The "Block devices:" section is ignored (block majors share numbers with char majors).
    A malformed line in the character section, or text without that section, is an error.
    """
    chars: dict[str, int] = {}
    section: str | None = None
    saw_char = False
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if line == "Character devices:":
            section, saw_char = "char", True
            continue
        if line == "Block devices:":
            section = "block"
            continue
        if section != "char":
            if section is None:
                raise ParseError(path, f"unexpected line before a section {line[:80]!r}", lineno)
            continue
        entry = _devices_entry(line)
        if entry is None:
            raise ParseError(path, f"malformed line {line[:80]!r} (want '<major> <name>')", lineno)
        major, name = entry
        if major > MAX_MAJOR:
            raise ParseError(path, f"major {major} out of range", lineno)
        chars.setdefault(name, major)
    if not saw_char:
        raise ParseError(path, "no 'Character devices:' section")
    return chars


def nvidia_majors(chars: Mapping[str, int]) -> Majors:
    """Pick the NVIDIA majors out of a parsed ``/proc/devices``."""
    frontend = next((chars[n] for n in FRONTEND_MAJOR_NAMES if n in chars), None)
    return Majors(chars.get(CAPS_MAJOR_NAME), frontend, chars.get(UVM_MAJOR_NAME))

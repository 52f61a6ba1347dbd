"""The udev rules and systemd units in ``udev/``: syntax, and that they run ``capctl sync``.

``udevadm verify`` (systemd >= 254) checks rules files; on older udev the test falls back to a
structural check of every rule line (``KEY[{attr}] OP "value"`` pairs, known keys, match keys
with ``==``/``!=``, assignments with ``=``/``+=``/``:=``), so a typo still fails here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

UDEV = Path(__file__).resolve().parents[1] / "udev"
RULES = UDEV / "70-capctl.rules"
UNITS = [UDEV / "capctl-sync.service", UDEV / "capctl-watch.service"]

_PAIR = re.compile(r'\s*(?P<key>[A-Z_]+)(?:\{(?P<attr>[^}]+)\})?\s*(?P<op>==|!=|\+=|-=|:=|=)\s*'
                   r'"(?P<value>[^"]*)"\s*(?:,|$)')
_MATCH_KEYS = {"ACTION", "DEVPATH", "KERNEL", "KERNELS", "NAME", "SUBSYSTEM", "SUBSYSTEMS",
               "DRIVER", "DRIVERS", "ATTR", "ATTRS", "ENV", "TAG", "TEST", "PROGRAM", "RESULT"}
_ASSIGN_KEYS = {"RUN", "ENV", "TAG", "OWNER", "GROUP", "MODE", "OPTIONS", "SYMLINK", "NAME"}


def _udevadm_has_verify() -> bool:
    if shutil.which("udevadm") is None:
        return False
    res = subprocess.run(["udevadm", "verify", "--help"], capture_output=True, text=True)
    return res.returncode == 0


def rule_lines() -> list[str]:
    lines = []
    for raw in RULES.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            assert not line.endswith("\\"), "no continuation lines"
            lines.append(line)
    return lines


@pytest.mark.skipif(not _udevadm_has_verify(), reason="udevadm verify needs systemd >= 254")
def test_udevadm_verify() -> None:
    res = subprocess.run(["udevadm", "verify", "--resolve-names=never", str(RULES)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_rules_structure() -> None:
    lines = rule_lines()
    assert len(lines) == 2  # module load, GPU bind (capctl manages no IMEX channel nodes)
    for line in lines:
        pos, pairs = 0, []
        while pos < len(line):
            m = _PAIR.match(line, pos)
            assert m is not None, f"cannot parse rule at {line[pos:]!r}"
            pairs.append(m)
            pos = m.end()
        for m in pairs:
            if m["op"] in ("==", "!="):
                assert m["key"] in _MATCH_KEYS, line
            else:
                assert m["key"] in _ASSIGN_KEYS, line
        assert any(m["key"] == "RUN" and m["op"] == "+=" and m["value"].endswith("capctl sync")
                   for m in pairs), line
        assert any(m["key"] == "ACTION" for m in pairs), line


def test_rules_cover_driver_load() -> None:
    text = "\n".join(rule_lines())
    assert 'ACTION=="add", SUBSYSTEM=="module", KERNEL=="nvidia"' in text
    assert 'ACTION=="bind", SUBSYSTEM=="pci", DRIVER=="nvidia"' in text


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_units_verify(unit: Path) -> None:
    res = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    problems = [
        line for line in (res.stdout + res.stderr).splitlines()
        # capctl need not be installed where the tests run.
        if line.strip() and "/usr/local/bin/capctl is not executable" not in line
    ]
    assert problems == [], problems


def test_sync_unit_is_oneshot_after_driver() -> None:
    text = (UDEV / "capctl-sync.service").read_text()
    assert "Type=oneshot" in text and "ExecStart=/usr/local/bin/capctl sync" in text
    assert re.search(r"^After=.*systemd-modules-load\.service", text, re.M)
    assert re.search(r"^After=.*nvidia-persistenced\.service", text, re.M)
    assert "WantedBy=multi-user.target" in text

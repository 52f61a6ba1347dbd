"""The udev rules and systemd units in ``udev/``: syntax, and that they run ``capctl sync``
through the fast launcher ``capctl install`` writes (``/usr/local/bin/capctl`` links to it).

``udevadm verify`` (systemd >= 254) checks rules files; on older udev the test falls back to a
structural check of every rule line (``KEY[{attr}] OP "value"`` pairs, known keys, match keys
with ``==``/``!=``, assignments with ``=``/``+=``/``:=``), so a typo still fails here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from capctl import install
from capctl.main import fast_command

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


def shipped_sync_commands() -> list[list[str]]:
    """Every ``capctl sync`` command line the rules and the sync unit run, split as udev and
    systemd split them (words; neither file quotes anything)."""
    cmds = [m["value"].split() for line in rule_lines() for m in _PAIR.finditer(line)
            if m["key"] == "RUN"]
    unit = (UDEV / "capctl-sync.service").read_text()
    cmds += [line.split("=", 1)[1].split() for line in unit.splitlines()
             if line.startswith("ExecStart=")]
    return cmds


@pytest.mark.parametrize("argv", shipped_sync_commands(), ids=" ".join)
def test_shipped_command_runs_the_launcher_fast_path(argv: list[str], sim_root: Path,
                                                     tmp_path: Path) -> None:
    """The rules and units run ``/usr/local/bin/capctl``, which the README links to the
    launcher ``capctl install`` writes (``python -I -S``, no ``site``, no ``re``): run each
    shipped command with that program, on a simulated root (``CAPCTL_ROOT``, as an admin
    would set ``[host]``), and see it create the nodes."""
    assert argv[0] == "/usr/local/bin/capctl"
    assert fast_command(argv[1:], "sync") is not None  # past click (capctl.commands.fast)
    inst = install.Installation(sys.executable, str(Path(sys.executable).parent),
                                launcher_dir=str(tmp_path / "libexec"),
                                paths=install.import_paths())
    pack, launcher = install.plan(inst, hooks_dir=None)
    install.write_atomic(pack)
    install.write_atomic(launcher)
    assert launcher.text.startswith(f"#!{sys.executable} -IS\n")
    res = subprocess.run([launcher.path, *argv[1:]], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "CAPCTL_ROOT": str(sim_root),
                              "CAPCTL_CONFIG": str(tmp_path / "none.toml")})
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[-1].endswith("skipped")  # the summary line
    assert (sim_root / "dev/nvidia-caps").is_dir()

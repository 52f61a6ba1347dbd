"""pyproject.toml's bounds, constraints.txt's tested set, and the lowest-bound pins
(scripts/lowest_constraints.py) stay in step."""

from __future__ import annotations

import importlib.util
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parent.parent


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lowest = _load("lowest_constraints")
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def _pins(text: str) -> dict[str, str]:
    pins = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _sep, version = line.partition("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


@pytest.mark.parametrize(("requirement", "pin"), [
    ("click>=8.2.0", "click==8.2.0"),
    ("tomlkit>=0.11.6,!=0.15.0,!=0.15.1", "tomlkit==0.11.6"),
    ("tomlkit!=0.15.0, >= 0.11.6", "tomlkit==0.11.6"),
    ("mypy==2.4.1", "mypy==2.4.1"),
    ("nvidia-ml-py >= 11.450.51", "nvidia-ml-py==11.450.51"),
])
def test_lowest_pin(requirement: str, pin: str) -> None:
    assert lowest.lowest(requirement) == pin


@pytest.mark.parametrize("requirement", ["click", "click<9", "click>8.1", "click>=8; os_name=='nt'"])
def test_a_requirement_without_a_lower_bound_is_refused(requirement: str) -> None:
    with pytest.raises(ValueError):
        lowest.lowest(requirement)


def test_every_requirement_has_a_lower_bound() -> None:
    pins = lowest.constraints(PYPROJECT)
    assert {p.split("==")[0] for p in pins} >= {"click", "jeepney", "nvidia-ml-py", "pyroute2",
                                                "tomlkit", "pytest", "mypy", "ruff"}


def test_the_tested_set_is_inside_the_declared_ranges() -> None:
    """constraints.txt pins every requirement, at a version its range allows (compared as
    version tuples: every version here is plain numbers and dots)."""
    tested = _pins((REPO / "constraints.txt").read_text())
    project = PYPROJECT["project"]
    reqs = [*project["dependencies"], *project["optional-dependencies"]["test"]]
    for req in reqs:
        name = lowest.lowest(req).split("==")[0]
        assert name in tested, f"constraints.txt does not pin {name}"
        have = tuple(int(x) for x in tested[name].split("."))
        for spec in req[len(name):].replace(" ", "").split(","):
            op, version = spec[:2], tuple(int(x) for x in spec[2:].split("."))
            assert {">=": have >= version, "==": have == version, "!=": have != version}[op], (
                f"constraints.txt's {name}=={tested[name]} is outside {req}")


def test_the_tested_set_is_installed() -> None:
    """./test.sh runs at the tested set (scripts/setup.sh installs with constraints.txt);
    other runs (scripts/matrix.sh newest/lowest) say so and are exempt."""
    from importlib.metadata import version

    if sys.prefix != str(REPO / ".venv"):
        pytest.skip("not the checkout's .venv: a scripts/matrix.sh run, at other versions")
    tested = _pins((REPO / "constraints.txt").read_text())
    for name in ("click", "jeepney", "nvidia-ml-py", "pyroute2", "tomlkit", "pytest", "mypy",
                 "ruff"):
        assert version(name) == tested[name], name

"""Print pip constraints pinning every dependency of pyproject.toml at its declared lower bound.

    python scripts/lowest_constraints.py pyproject.toml > lowest.txt

Each requirement of ``[project] dependencies`` and of every optional-dependency group must
name a lower bound (``>=X``) or an exact version (``==X``); that version is pinned.  A
requirement with neither is an error: its lowest release would be untested.  Exclusions
(``!=``) and upper bounds are left to pyproject.toml itself.  scripts/matrix.sh's ``lowest``
job installs with this file.
"""

from __future__ import annotations

import re
import sys
import tomllib

#: ``name[extras] specifier, specifier ; marker``: markers are not used by capctl.
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*)$")


def lowest(requirement: str) -> str:
    """``name==X`` for one requirement string, X its ``>=`` or ``==`` version."""
    m = _REQUIREMENT.match(requirement)
    if m is None or ";" in requirement:
        raise ValueError(f"cannot read the requirement {requirement!r}")
    name, specs = m.group(1), [s.strip() for s in m.group(3).split(",") if s.strip()]
    for spec in specs:
        for op in (">=", "=="):
            if spec.startswith(op):
                return f"{name}=={spec[len(op):].strip()}"
    raise ValueError(f"{requirement!r} declares no lower bound (>=) or exact version (==)")


def constraints(pyproject: dict[str, object]) -> list[str]:
    project = pyproject.get("project")
    if not isinstance(project, dict):
        raise ValueError("no [project] table")
    reqs = list(project.get("dependencies", []))
    for group in project.get("optional-dependencies", {}).values():
        reqs.extend(group)
    return [lowest(r) for r in reqs]


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: lowest_constraints.py PYPROJECT\n")
        return 2
    try:
        with open(argv[1], "rb") as f:
            lines = constraints(tomllib.load(f))
    except (OSError, ValueError, tomllib.TOMLDecodeError) as err:
        sys.stderr.write(f"lowest_constraints: {argv[1]}: {err}\n")
        return 1
    sys.stdout.write("".join(line + "\n" for line in lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

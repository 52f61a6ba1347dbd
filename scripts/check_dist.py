"""Check a built wheel and sdist hold what users need (scripts/matrix.sh dist).

    python scripts/check_dist.py DIST_DIR

- the wheel has every module of the checkout's ``capctl`` package, its data files
  (``py.typed``, the simulated host's JSON), the three console scripts, the license file, and
  metadata whose license and requirements are pyproject.toml's;
- the sdist has the sources, pyproject.toml, README.md and LICENSE.

One line per finding on stderr, exit 1 on any.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tomllib
import zipfile
from email.parser import HeaderParser
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = ("capctl", "capctl-runtime", "capctl-docker-hook")


def package_files() -> set[str]:
    """The checkout's tracked files of the capctl package (modules and data)."""
    out = subprocess.run(["git", "-C", str(REPO), "ls-files", "--cached", "--others",
                          "--exclude-standard", "capctl"], check=True,
                         capture_output=True, text=True).stdout
    return {line for line in out.splitlines() if line}


def _requirement(text: str) -> tuple[str, frozenset[str]]:
    """A requirement as (name, its specifiers), whatever their order and spacing."""
    flat = text.replace(" ", "")
    i = next((k for k, c in enumerate(flat) if c in "<>=!~"), len(flat))
    return flat[:i].lower(), frozenset(s for s in flat[i:].split(",") if s)


def check_wheel(wheel: Path, pyproject: dict[str, object]) -> list[str]:
    problems: list[str] = []
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        info = next((n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA")), None)
        if info is None:
            return [f"{wheel.name}: no METADATA"]
        meta = HeaderParser().parsestr(z.read(f"{info}/METADATA").decode())
        entry_points = z.read(f"{info}/entry_points.txt").decode()
    problems += [f"{wheel.name}: lacks {f}" for f in sorted(package_files() - names)]
    if f"{info}/licenses/LICENSE" not in names:
        problems.append(f"{wheel.name}: lacks the license file")
    project = pyproject["project"]
    assert isinstance(project, dict)
    if meta.get("License-Expression") != project["license"]:
        problems.append(f"{wheel.name}: License-Expression is {meta.get('License-Expression')!r}")
    got = {_requirement(r) for r in meta.get_all("Requires-Dist", []) if "extra ==" not in r}
    problems += [f"{wheel.name}: Requires-Dist lacks {r}" for r in project["dependencies"]
                 if _requirement(r) not in got]
    problems += [f"{wheel.name}: no console script {s}" for s in SCRIPTS
                 if f"\n{s} = " not in "\n" + entry_points]
    return problems


def check_sdist(sdist: Path) -> list[str]:
    with tarfile.open(sdist) as t:
        top = sdist.name.removesuffix(".tar.gz")
        names = {n.removeprefix(top + "/") for n in t.getnames()}
    need = {"pyproject.toml", "README.md", "LICENSE"} | package_files()
    return [f"{sdist.name}: lacks {f}" for f in sorted(need - names)]


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: check_dist.py DIST_DIR\n")
        return 2
    dist = Path(argv[1])
    wheels, sdists = sorted(dist.glob("capctl-*.whl")), sorted(dist.glob("capctl-*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        sys.stderr.write(f"check_dist: want one wheel and one sdist in {dist}\n")
        return 1
    with open(REPO / "pyproject.toml", "rb") as f:
        pyproject = tomllib.load(f)
    problems = check_wheel(wheels[0], pyproject) + check_sdist(sdists[0])
    for p in problems:
        sys.stderr.write(f"check_dist: {p}\n")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

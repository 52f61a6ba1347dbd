"""The shipped hook definitions: what ``capctl install`` writes for the documented install
(valid JSON, ``python -I -S`` with the installation's paths, explicit minimal env) and,
started exactly as the definition starts it, capctl's hook."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from capctl import install
from tests.support.source import SHIPPED_PATHS, SHIPPED_PREFIX, moved_here

HOOKS = Path(__file__).resolve().parent.parent / "hooks"
PREFIX, PATHS = SHIPPED_PREFIX, SHIPPED_PATHS
SHIPPED = install.Installation(f"{PREFIX}/bin/python3", f"{PREFIX}/bin", paths=PATHS)


def _hook_entries() -> list[tuple[str, dict[str, object]]]:
    out: list[tuple[str, dict[str, object]]] = []
    for path in sorted(HOOKS.glob("*.json")):
        doc = json.loads(path.read_text())
        if "hook" in doc:  # hooks.d schema 1.0.0
            assert doc["version"] == "1.0.0"
            assert set(doc["stages"]) <= {"prestart", "createRuntime"}
            assert doc["when"]
            out.append((path.name, doc["hook"]))
        else:  # a config.json snippet
            for stage, hooks in doc["hooks"].items():
                assert stage in ("prestart", "createRuntime")
                out += [(f"{path.name}:{stage}", h) for h in hooks]
    return out


ENTRIES = _hook_entries()


here = moved_here


def test_there_are_hook_files() -> None:
    assert len(ENTRIES) >= 3


@pytest.mark.parametrize(("name", "hook"), ENTRIES, ids=[n for n, _ in ENTRIES])
def test_hook_is_isolated_with_explicit_env(name: str, hook: dict[str, object]) -> None:
    args = hook["args"]
    assert isinstance(args, list) and str(hook["path"]).startswith("/")
    assert args[1:] == [*install.interpreter_args(PATHS), "hook"], (
        "isolated interpreter without site, the installation's paths, options as arguments")
    env = hook["env"]
    assert isinstance(env, list) and env and all(str(e).startswith("PATH=") for e in env)


@pytest.mark.parametrize("always", [False, True], ids=["annotated", "always"])
def test_hooks_d_files_are_what_install_writes(always: bool) -> None:
    """Byte for byte, what ``capctl install`` writes for the documented installation."""
    name = "oci-capctl-always.json" if always else "oci-capctl.json"
    text = install.plan_hook(str(HOOKS / "none" / name), SHIPPED, always=always).text
    assert (HOOKS / name).read_text() == text


def test_runc_snippet_runs_what_install_writes() -> None:
    doc = json.loads((HOOKS / "runc-config-snippet.json").read_text())
    assert doc == {"hooks": {"createRuntime": [install.hook_command(SHIPPED)]}}


@pytest.mark.parametrize(("name", "hook"), ENTRIES, ids=[n for n, _ in ENTRIES])
def test_argv0_is_the_interpreter_path(name: str, hook: dict[str, object]) -> None:
    # Python finds its venv from argv[0]: a bare "python3" resolves on PATH and loses capctl.
    args = hook["args"]
    assert isinstance(args, list) and args[0] == hook["path"]


@pytest.mark.parametrize(("name", "hook"), ENTRIES, ids=[n for n, _ in ENTRIES])
def test_shipped_definition_runs_the_hook(name: str, hook: dict[str, object]) -> None:
    """Run the definition exactly: its program, its own argv (argv[0] included) and its env,
    only the install prefix moved.  A state that is not JSON gets capctl's own one-line error,
    which only capctl's hook code writes: the definition reaches it."""
    args = [here(str(a)) for a in hook["args"]]  # type: ignore[attr-defined]
    env = dict(str(e).split("=", 1) for e in hook["env"])  # type: ignore[attr-defined]
    res = subprocess.run(args, executable=here(str(hook["path"])), env=env, input="not json",
                         capture_output=True, text=True)
    assert res.returncode == 1, res.stderr
    assert res.stderr == ("capctl: error: container state (stdin): not valid JSON (Expecting "
                          "value: line 1 column 1 (char 0))\n")


def test_bare_python3_argv0_loses_the_venv() -> None:
    """The failure the full path avoids: the same venv interpreter, argv[0] = "python3"."""
    res = subprocess.run(
        ["python3", "-I", "-c", "import sys; print(sys.prefix)"],
        executable=here(f"{PREFIX}/bin/python3"),
        env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
        capture_output=True, text=True, check=True,
    )
    assert res.stdout.strip() != sys.prefix

"""The shipped hook definitions: valid JSON, isolated interpreter, explicit minimal env."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from capctl.main import HOOK_INTERPRETER_ARGS

HOOKS = Path(__file__).resolve().parent.parent / "hooks"


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


def test_there_are_hook_files() -> None:
    assert len(ENTRIES) >= 3


@pytest.mark.parametrize(("name", "hook"), ENTRIES, ids=[n for n, _ in ENTRIES])
def test_hook_is_isolated_with_explicit_env(name: str, hook: dict[str, object]) -> None:
    args = hook["args"]
    assert isinstance(args, list) and str(hook["path"]).startswith("/")
    assert args[1:] == [*HOOK_INTERPRETER_ARGS, "hook"], "isolated interpreter, options as arguments"
    env = hook["env"]
    assert isinstance(env, list) and env and all(str(e).startswith("PATH=") for e in env)

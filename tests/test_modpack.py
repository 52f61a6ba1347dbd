"""The start-up pack: ``capctl install`` builds it (:mod:`capctl.modpack`), the entry points
load capctl's modules from it (:mod:`capctl.modpack`), and anything that does not fit
leaves the usual imports in charge.

Each case runs a fresh ``python -I -S`` (as the installed entry points do) on a copy of the
capctl tree under test, so that a source can be changed under a pack built from it.
"""

from __future__ import annotations

import json
import marshal
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from capctl import install, modpack
from tests.support.source import CAPCTL_PATH

from .conftest import needs_root

#: Imports every packed module, then prints, for each capctl module, how it was loaded and
#: from where, and what ``use`` answered.
PROBE = """
import importlib, json, sys
sys.path[:0] = [ROOT]
from capctl.modpack import use
used = use(PACK)
for name in MODULES:
    importlib.import_module(name)
out = {n: [type(m.__spec__.loader).__name__, m.__file__] for n, m in sys.modules.items()
       if n.split(".")[0] == "capctl"}
print(json.dumps({"used": used, "modules": out, "finders": len(sys.meta_path)}))
"""


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the capctl package under test (sources only), and a pack built from it."""
    root = tmp_path / "tree"
    shutil.copytree(Path(CAPCTL_PATH) / "capctl", root / "capctl",
                    ignore=shutil.ignore_patterns("__pycache__"))
    pack = tmp_path / install.PACK
    pack.write_bytes(modpack.build(str(root)))
    pack.chmod(0o644)
    return root


def probe(root: Path, pack: Path) -> dict[str, object]:
    code = (PROBE.replace("ROOT", repr(str(root))).replace("PACK", repr(str(pack)))
            .replace("MODULES", repr(modpack.MODULES)))
    res = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True,
                         text=True, env={"PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr
    out: dict[str, object] = json.loads(res.stdout)
    return out


def loaders(found: dict[str, object]) -> dict[str, str]:
    modules = found["modules"]
    assert isinstance(modules, dict)
    return {name: loader for name, (loader, _file) in modules.items()}


def test_every_packed_module_is_served_from_the_pack(tree: Path) -> None:
    found = probe(tree, tree.parent / install.PACK)
    assert found["used"] is True
    served = loaders(found)
    # The two imported before the pack is in use come from their files; all else from it.
    assert {n for n, loader in served.items() if loader != "PackFinder"} == {
        "capctl", "capctl.modpack"}
    assert set(served) - {"capctl", "capctl.modpack"} == set(modpack.MODULES)
    modules = found["modules"]
    assert isinstance(modules, dict)
    # __file__ is the source's: tracebacks show its lines.
    assert modules["capctl.deliver.hook"][1] == str(tree / "capctl/deliver/hook.py")
    assert modules["capctl.cgroup"][1] == str(tree / "capctl/cgroup/__init__.py")


def test_a_pack_without_a_module_leaves_it_to_its_file(tmp_path: Path, tree: Path) -> None:
    pack = tmp_path / "small.pack"
    pack.write_bytes(modpack.build(str(tree), ("capctl.errors",)))
    pack.chmod(0o644)
    served = loaders(probe(tree, pack))
    assert served["capctl.errors"] == "PackFinder"
    assert served["capctl.deliver.hook"] == "SourceFileLoader"


@pytest.mark.parametrize("change", ["content", "mtime"])
def test_a_changed_source_is_imported_from_its_file(tree: Path, change: str) -> None:
    """An upgrade in place (new content, or the same size with a new time) is never served
    stale code: that module loads from its file, the others still from the pack."""
    source = tree / "capctl/devnum.py"
    if change == "content":
        source.write_text(source.read_text() + "\nCHANGED = 1\n")
    else:
        st = source.stat()
        os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    found = probe(tree, tree.parent / install.PACK)
    served = loaders(found)
    assert served["capctl.devnum"] == "SourceFileLoader"
    assert served["capctl.errors"] == "PackFinder"
    if change == "content":
        res = subprocess.run(
            [sys.executable, "-I", "-S", "-c",
             f"import sys; sys.path[:0] = [{str(tree)!r}]; from capctl.modpack import use; "
             f"assert use({str(tree.parent / install.PACK)!r}); import capctl.devnum as d; "
             "print(d.CHANGED)"],
            capture_output=True, text=True)
        assert res.stdout.strip() == "1", res.stderr


def test_a_removed_source_is_not_served(tree: Path) -> None:
    (tree / "capctl/watch/heartbeat.py").unlink()
    res = subprocess.run(
        [sys.executable, "-I", "-S", "-c",
         f"import sys; sys.path[:0] = [{str(tree)!r}]; from capctl.modpack import use; "
         f"assert use({str(tree.parent / install.PACK)!r}); import capctl.watch.heartbeat"],
        capture_output=True, text=True)
    assert res.returncode == 1 and "ModuleNotFoundError" in res.stderr


def _head(data: bytes) -> tuple[str, str, dict[str, tuple[str, bool, int, int, int, int]], int]:
    """A pack's head as :func:`capctl.modpack.build` lays it out: (interpreter version, capctl
    root, index, where the code starts)."""
    n = len(modpack.HEADER)
    length = int.from_bytes(data[n:n + 8], "little")
    version, root, index = marshal.loads(data[n + 8:n + 8 + length])
    return version, root, index, n + 8 + length


def _corrupt_module(pack: Path, name: str, data: bytes) -> None:
    """Overwrite the start of ``name``'s code in ``pack`` with ``data``."""
    _v, _r, index, base = _head(pack.read_bytes())
    fd = os.open(pack, os.O_WRONLY)
    try:
        os.pwrite(fd, data, base + index[name][4])
    finally:
        os.close(fd)


@pytest.mark.parametrize("data", [b"\xff\xff\xff\xff", b"i\x07\x00\x00\x00"],
                         ids=["garbage", "an int, not code"])
def test_a_module_whose_code_cannot_be_read_loads_from_its_file(tree: Path, data: bytes) -> None:
    pack = tree.parent / install.PACK
    _corrupt_module(pack, "capctl.errors", data)
    served = loaders(probe(tree, pack))
    assert served["capctl.errors"] == "SourceFileLoader"
    assert served["capctl.host"] == "PackFinder"


def _refused(tree: Path, pack: Path) -> None:
    found = probe(tree, pack)
    assert found["used"] is False
    assert set(loaders(found).values()) == {"SourceFileLoader"}


def _rebuilt(path: Path, data: bytes, mode: int = 0o644) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


def test_no_pack_leaves_the_usual_imports(tree: Path, tmp_path: Path) -> None:
    _refused(tree, tmp_path / "absent.pack")


@pytest.mark.parametrize("mode", [0o664, 0o646, 0o666])
def test_a_pack_others_may_write_is_not_used(tree: Path, mode: int) -> None:
    pack = tree.parent / install.PACK
    pack.chmod(mode)
    _refused(tree, pack)


@needs_root
def test_a_pack_of_another_user_is_not_used(tree: Path) -> None:
    pack = tree.parent / install.PACK
    os.chown(pack, 65534, 65534)
    _refused(tree, pack)


def test_a_symlink_to_a_pack_is_not_followed(tree: Path, tmp_path: Path) -> None:
    link = tmp_path / "link.pack"
    link.symlink_to(tree.parent / install.PACK)
    _refused(tree, link)


def test_a_fifo_or_directory_is_not_read(tree: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.pack"
    os.mkfifo(fifo, 0o644)
    _refused(tree, fifo)  # O_NONBLOCK: the open does not wait for a writer
    _refused(tree, tmp_path)


@pytest.mark.parametrize("damage", ["header", "length", "head", "truncated", "not-a-tuple"])
def test_a_malformed_pack_is_not_used(tree: Path, tmp_path: Path, damage: str) -> None:
    good = (tree.parent / install.PACK).read_bytes()
    n = len(modpack.HEADER)
    data = {
        "header": b"capctl module pack 2\n" + good[n:],
        "length": good[:n] + (1 << 40).to_bytes(8, "little") + good[n + 8:],
        "head": good[:n + 8] + b"\x00" * 64 + good[n + 72:],
        "truncated": good[:n + 20],
        "not-a-tuple": good[:n] + (2).to_bytes(8, "little") + b"N0",
    }[damage]
    _refused(tree, _rebuilt(tmp_path / "bad.pack", data))


def test_a_pack_for_another_interpreter_is_not_used(tree: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Built by another Python build (another ``sys.version``): its bytecode may not run here."""
    monkeypatch.setattr(sys, "version", sys.version + " (another build)")
    _refused(tree, _rebuilt(tmp_path / "other.pack", modpack.build(str(tree))))


def test_a_pack_of_another_capctl_tree_is_not_used(tree: Path, tmp_path: Path) -> None:
    """A pack built from the tree under test serves nothing to a copy imported elsewhere."""
    other = tmp_path / "other"
    shutil.copytree(tree / "capctl", other / "capctl")
    _refused(other, tree.parent / install.PACK)


def test_build_covers_the_whole_list_and_says_so() -> None:
    data = modpack.build()
    assert modpack.is_pack(data) and not modpack.is_pack(b"#!/bin/sh\n")
    version, root, index, _base = _head(data)
    assert version == sys.version and root == modpack.capctl_root()
    assert isinstance(index, dict) and sorted(index) == sorted(modpack.MODULES)
    assert len(set(modpack.MODULES)) == len(modpack.MODULES)


def test_problem_says_why_a_pack_is_not_used_in_full(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``capctl doctor`` reports, run by the definition's own interpreter."""
    pack = _rebuilt(tmp_path / install.PACK, modpack.build())
    assert modpack.problem(str(pack)) is None
    assert modpack.problem(str(tmp_path / "absent.pack")) == "absent"
    pack.chmod(0o664)
    assert modpack.problem(str(pack)) == "writable by group or others"
    pack.chmod(0o644)
    assert modpack.problem(str(tmp_path)) == "not a regular file"
    other = _rebuilt(tmp_path / "other.pack", b"#!/bin/sh\n")
    assert modpack.problem(str(other)) == "not a start-up pack, or damaged"
    built_by = sys.version.split()[0]
    monkeypatch.setattr(sys, "version", "3.99.0 (another build)")
    assert modpack.problem(str(pack)) == f"built by another Python ({built_by}), not 3.99.0"


def test_problem_names_the_changed_modules(tree: Path) -> None:
    for name in ("devnum.py", "errors.py"):
        source = tree / "capctl" / name
        source.write_text(source.read_text() + "\n")
    res = subprocess.run(
        [sys.executable, "-I", "-S", "-c",
         f"import sys; sys.path[:0] = [{str(tree)!r}]; from capctl.modpack import problem; "
         f"print(problem({str(tree.parent / install.PACK)!r}))"],
        capture_output=True, text=True)
    assert res.stdout.strip() == (
        f"2 of its {len(modpack.MODULES)} modules changed since it was built "
        "(capctl.devnum, capctl.errors)"), res.stderr


def test_packed_code_has_no_docstrings_and_the_source_lines(tree: Path) -> None:
    """Docstrings are left out of the pack (asserts are not); every line number stays the
    source's, so a traceback shows the line that raised."""
    code = (
        f"import sys, traceback; sys.path[:0] = [{str(tree)!r}]\n"
        "from capctl.modpack import use\n"
        f"assert use({str(tree.parent / install.PACK)!r})\n"
        "from capctl.request import devices\n"
        "print(devices.parse_request.__doc__, devices.__doc__, devices.Request.__doc__)\n"
        "try:\n"
        "    devices.parse_request('MIG-not-a-uuid')\n"
        "except Exception as err:\n"
        "    frame = traceback.extract_tb(err.__traceback__)[-1]\n"
        "    print(frame.filename, frame.lineno, frame.line)\n"
    )
    res = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    docs, where = res.stdout.splitlines()
    assert docs == "None None None"
    filename, lineno, line = where.split(" ", 2)
    assert filename == str(tree / "capctl/request/devices.py") and line.startswith("raise ")
    assert (tree / "capctl/request/devices.py").read_text().splitlines()[int(lineno) - 1].strip() \
        == line


def test_without_docstrings_keeps_asserts_and_bodies() -> None:
    source = (b'"""module"""\nclass A:\n    """only a docstring"""\n'
              b'def f(x):\n    """doc"""\n    assert x, "no"\n    return x\n')
    namespace: dict[str, object] = {}
    exec(compile(modpack.without_docstrings(source, "m.py"), "m.py", "exec"), namespace)
    f = namespace["f"]
    assert callable(f) and f.__doc__ is None and f(1) == 1
    with pytest.raises(AssertionError, match="no"):
        f(0)
    assert namespace.get("__doc__") is None and getattr(namespace["A"], "__doc__", 1) is None

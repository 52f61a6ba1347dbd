"""The one rule for a program run as root for others (capctl/trustedpath.py), on real files:
absolute, every directory met while resolving it root-owned and not writable by group or
others, symlinks followed through directories of the same kind, the file an executable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from capctl import trustedpath
from capctl.trustedpath import UnsafePath, resolve

from .conftest import IS_ROOT

needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root (chown to another user)")
NOBODY = 65534


def program(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_a_safe_program_resolves_to_itself(trusted_dir: Path) -> None:
    runc = program(trusted_dir / "sbin/runc")
    assert resolve(str(runc)) == str(runc)


def test_symlinks_resolve_through_safe_directories(trusted_dir: Path) -> None:
    runc = program(trusted_dir / "sbin/runc")
    (trusted_dir / "bin").mkdir()
    (trusted_dir / "bin/runc").symlink_to("../sbin/runc")
    (trusted_dir / "link").symlink_to(trusted_dir / "bin")
    assert resolve(str(trusted_dir / "link/runc")) == str(runc)
    assert resolve(str(trusted_dir / "bin/../sbin/./runc")) == str(runc)


@pytest.mark.parametrize(("path", "why"), [
    ("runc", "is not an absolute path"),
    ("", "is not an absolute path"),
])
def test_relative_paths_are_refused(path: str, why: str) -> None:
    with pytest.raises(UnsafePath, match=why):
        resolve(path)


def test_a_directory_others_may_write_is_refused(trusted_dir: Path) -> None:
    runc = program(trusted_dir / "open/runc")
    (trusted_dir / "open").chmod(0o777)
    with pytest.raises(UnsafePath, match=r"open is writable by group and others \(mode 0777\)"):
        resolve(str(runc))
    (trusted_dir / "open").chmod(0o757)
    with pytest.raises(UnsafePath, match=r"open is writable by others \(mode 0757\)"):
        resolve(str(runc))


def test_the_sticky_tmp_is_refused(tmp_path: Path) -> None:
    """tmp_path is under /tmp (1777): anyone may put things there."""
    with pytest.raises(UnsafePath, match=r"/tmp is writable"):
        resolve(str(program(tmp_path / "runc")))


def test_a_file_others_may_write_is_refused(trusted_dir: Path) -> None:
    runc = program(trusted_dir / "runc")
    runc.chmod(0o775)
    with pytest.raises(UnsafePath, match="runc is writable by group"):
        resolve(str(runc))


@pytest.mark.parametrize("make", ["missing", "directory", "not executable", "loop"])
def test_what_is_no_executable_is_refused(trusted_dir: Path, make: str) -> None:
    target = trusted_dir / "x"
    if make == "directory":
        target.mkdir()
    elif make == "not executable":
        target.write_text("data")
        target.chmod(0o644)
    elif make == "loop":
        target.symlink_to(trusted_dir / "y")
        (trusted_dir / "y").symlink_to(target)
    match = {"missing": "No such file", "directory": "not an executable file",
             "not executable": "not an executable file", "loop": "too many levels"}[make]
    with pytest.raises(UnsafePath, match=match):
        resolve(str(target))


def test_a_file_used_as_a_directory_is_refused(trusted_dir: Path) -> None:
    runc = program(trusted_dir / "runc")
    with pytest.raises(UnsafePath, match="is not a directory"):
        resolve(f"{runc}/x")


@needs_root
def test_the_reported_attack_is_refused(trusted_dir: Path) -> None:
    """The review's reproduction: a root-owned copy of runc in a directory owned by nobody,
    reached through a root-owned link.  nobody could replace the file and run as root."""
    d = trusted_dir / "nobodys"
    runc = program(d / "runc")
    os.chown(d, NOBODY, NOBODY)
    (trusted_dir / "runc").symlink_to(runc)
    with pytest.raises(UnsafePath, match=rf"{d} is owned by uid {NOBODY}, not root"):
        resolve(str(trusted_dir / "runc"))


@needs_root
def test_a_link_target_owned_by_another_user_is_refused(trusted_dir: Path) -> None:
    runc = program(trusted_dir / "runc")
    os.chown(runc, NOBODY, 0)
    with pytest.raises(UnsafePath, match="not root"):
        resolve(str(runc))


def test_the_rule_imports_nothing_heavy() -> None:
    """capctl-runtime runs it before every exec."""
    import ast

    tree = ast.parse(Path(trustedpath.__file__).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= {"__future__", "os", "stat"}, imported


# --- a root-owned sticky directory on the way (install's own paths: a checkout under /tmp) ---


@needs_root
def test_sticky_directory_on_the_way(trusted_dir: Path) -> None:
    sticky = trusted_dir / "tmp"
    sticky.mkdir()
    sticky.chmod(0o1777)  # as /tmp
    mine = sticky / "checkout"
    mine.mkdir()
    python = program(mine / "bin/python3")
    # The runtime's rule (the contract's): no writable directory at all.
    with pytest.raises(UnsafePath, match=f"{sticky} is writable by group and others"):
        resolve(str(python))
    # install's: root's entries in a sticky directory only root can remove or rename.
    assert resolve(str(python), sticky_ok=True) == str(python)
    assert trustedpath.resolve_dir(str(mine), sticky_ok=True) == str(mine)
    # The sticky directory itself: anyone may add to it.
    with pytest.raises(UnsafePath, match="writable by group and others"):
        trustedpath.resolve_dir(str(sticky), sticky_ok=True)
    # Another user's entry there, or their link to root's files: they could swap it.
    theirs = sticky / "theirs"
    theirs.symlink_to(mine)
    os.lchown(theirs, NOBODY, NOBODY)
    with pytest.raises(UnsafePath, match=f"{theirs} is owned by uid {NOBODY}"):
        trustedpath.resolve_dir(str(theirs), sticky_ok=True)
    with pytest.raises(UnsafePath, match=f"{theirs} is owned by uid {NOBODY}"):
        trustedpath.resolve_dir(str(mine / ".." / "theirs"), sticky_ok=True)
    # Writable by others without the sticky bit: never.
    sticky.chmod(0o777)
    with pytest.raises(UnsafePath, match="writable by group and others"):
        trustedpath.resolve_dir(str(mine), sticky_ok=True)

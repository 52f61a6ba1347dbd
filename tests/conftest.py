"""Shared fixtures: simulated NVIDIA roots and the real-kernel gates."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from capctl import simulated
from capctl.host import Host

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root (mknod, cgroups)")
needs_runc = pytest.mark.skipif(
    not (IS_ROOT and shutil.which("runc") and Path("/bin/busybox").exists()),
    reason="needs root, runc and busybox-static",
)


@pytest.fixture
def sim_root(tmp_path: Path) -> Path:
    """A simulated 8-GPU host root (driver files; GPU nodes too when root)."""
    root = tmp_path / "root"
    simulated.build(root, dev_nodes=IS_ROOT)
    return root


@pytest.fixture
def sim_host(sim_root: Path, tmp_path: Path) -> Host:
    return Host(root=sim_root, config=tmp_path / "capctl.toml", topology=sim_root / "topology.json")

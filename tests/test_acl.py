"""The POSIX ACL xattr codec: pure cases, and byte-equality with what the kernel stores."""

from __future__ import annotations

import os
import shutil
import stat
import struct
import subprocess
from pathlib import Path

import pytest

from capctl.errors import ParseError
from capctl.policy import acl

from .conftest import needs_root

XATTR = "system.posix_acl_access"
U = acl.UNDEFINED_ID


def raw(*entries: tuple[int, int, int], version: int = 2) -> bytes:
    return struct.pack("<I", version) + b"".join(struct.pack("<HHI", *e) for e in entries)


GRANT = acl.read_only([1002, 1001], [50])
GRANT_BYTES = raw(
    (acl.USER_OBJ, 4, U), (acl.USER, 4, 1001), (acl.USER, 4, 1002), (acl.GROUP_OBJ, 0, U),
    (acl.GROUP, 4, 50), (acl.MASK, 4, U), (acl.OTHER, 0, U),
)


def test_read_only_encoding_is_canonical() -> None:
    assert GRANT.encode() == GRANT_BYTES
    assert GRANT.mode == 0o440
    assert acl.to_text(GRANT) == (
        "user::r--,user:1001:r--,user:1002:r--,group::---,group:50:r--,mask::r--,other::---"
    )


def test_roundtrip() -> None:
    assert acl.decode(GRANT_BYTES, "x") == GRANT
    minimal = acl.Acl(6, 4, 4)
    assert minimal.mode == 0o644
    assert acl.decode(minimal.encode(), "x") == minimal


def test_mode_without_mask_uses_group_obj() -> None:
    assert acl.Acl(4, 4, 0).mode == 0o440


@pytest.mark.parametrize(
    ("kwargs", "msg"),
    [
        ({"users": ((5, 4),)}, "needs a mask"),
        ({"mask": 4, "users": ((5, 4), (5, 4))}, "unique"),
        ({"mask": 4, "users": ((6, 4), (5, 4))}, "sorted"),
        ({"mask": 4, "groups": ((acl.UNDEFINED_ID, 4),)}, "out of range"),
        ({"mask": 0o10}, "beyond rwx"),
    ],
    ids=["named-without-mask", "duplicate-uid", "unsorted", "undefined-id", "bad-perm"],
)
def test_invalid_acl_refused(kwargs: dict[str, object], msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        acl.Acl(4, 0, 0, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "msg"),
    [
        (b"", "header"),
        (raw((acl.USER_OBJ, 4, U))[:-1], "8-byte entries"),
        (raw((acl.USER_OBJ, 4, U), (acl.GROUP_OBJ, 4, U), (acl.OTHER, 4, U), version=1),
         "version 1"),
        (raw((acl.USER_OBJ, 4, U), (0x40, 4, U)), "unknown ACL tag"),
        (raw((acl.GROUP_OBJ, 4, U), (acl.USER_OBJ, 4, U), (acl.OTHER, 4, U)), "canonical order"),
        (raw((acl.USER_OBJ, 4, U), (acl.USER_OBJ, 4, U), (acl.GROUP_OBJ, 4, U), (acl.OTHER, 4, U)),
         "canonical order"),
        (raw((acl.USER_OBJ, 4, U), (acl.GROUP_OBJ, 4, U)), "other::"),
        (raw((acl.USER_OBJ, 4, U), (acl.USER, 4, 7), (acl.GROUP_OBJ, 4, U), (acl.OTHER, 4, U)),
         "needs a mask"),
        (raw((acl.USER_OBJ, 0o17, U), (acl.GROUP_OBJ, 4, U), (acl.OTHER, 4, U)), "beyond rwx"),
    ],
    ids=["empty", "truncated", "version", "tag", "order", "repeated-obj", "no-other", "no-mask",
         "perm"],
)
def test_decode_rejects(data: bytes, msg: str) -> None:
    with pytest.raises(ParseError, match=msg) as info:
        acl.decode(data, "/dev/nvidia-caps/nvidia-cap1")
    assert "/dev/nvidia-caps/nvidia-cap1" in str(info.value)


@needs_root
def test_kernel_stores_exactly_our_bytes(tmp_path: Path) -> None:
    """setxattr then getxattr returns the same bytes, and the kernel sets mode 0440."""
    node = tmp_path / "node"
    os.mknod(node, stat.S_IFCHR | 0o444, os.makedev(238, 1))
    try:
        os.setxattr(node, XATTR, GRANT_BYTES)
    except OSError as err:  # pragma: no cover - depends on the filesystem under tmp_path
        pytest.skip(f"no POSIX ACLs on {tmp_path}: {err}")
    assert os.getxattr(node, XATTR) == GRANT_BYTES
    assert stat.S_IMODE(os.lstat(node).st_mode) == GRANT.mode == 0o440


@pytest.mark.skipif(shutil.which("setfacl") is None, reason="needs setfacl (acl package)")
def test_matches_setfacl(tmp_path: Path) -> None:
    """What setfacl writes for the same entries is what we encode."""
    f = tmp_path / "f"
    f.write_text("")
    os.chmod(f, 0o400)
    try:
        subprocess.run(
            ["setfacl", "-m", "u:1001:r,u:1002:r,g::-,g:50:r,m::r,o::-", str(f)],
            check=True, capture_output=True,
        )
    except subprocess.CalledProcessError as err:  # pragma: no cover
        pytest.skip(f"setfacl failed: {err.stderr!r}")
    assert os.getxattr(f, XATTR) == GRANT_BYTES

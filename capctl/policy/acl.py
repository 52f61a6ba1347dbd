"""Pure: the POSIX access ACL in its ``system.posix_acl_access`` xattr encoding.

Layout (linux ``include/uapi/linux/posix_acl_xattr.h``): a little-endian ``u32`` version (2),
then 8-byte entries ``(u16 e_tag, u16 e_perm, u32 e_id)``.  Tags and permission bits are those
of ``include/uapi/linux/posix_acl.h``.  ``e_id`` is the uid or gid for named entries and
``ACL_UNDEFINED_ID`` (``0xffffffff``) for the others; that is what ``posix_acl_to_xattr()``
returns on ``getxattr``, so encoding exactly like that makes what capctl writes byte-equal to
what it reads back (:func:`capctl.devfs.nodes.diagnose` compares bytes).

Entries are kept in the kernel's canonical order, which ``posix_acl_valid()`` enforces on
``setxattr`` (fs/posix_acl.c): USER_OBJ, USER by uid, GROUP_OBJ, GROUP by gid, MASK, OTHER,
ids unique within their tag, and a MASK whenever there are named entries.  The file's mode
group bits mirror the MASK (``posix_acl_equiv_mode``/``posix_acl_update_mode``), which
:attr:`Acl.mode` computes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from capctl.errors import ParseError

VERSION = 0x0002
UNDEFINED_ID = 0xFFFFFFFF

USER_OBJ = 0x01
USER = 0x02
GROUP_OBJ = 0x04
GROUP = 0x08
MASK = 0x10
OTHER = 0x20

READ = 0x04
WRITE = 0x02
EXECUTE = 0x01

_HEADER = struct.Struct("<I")
_ENTRY = struct.Struct("<HHI")
#: Largest valid id: ``(uid_t)-1`` is "no id" (the kernel refuses it in ``make_kuid``).
MAX_ID = 0xFFFFFFFE
#: Tag order of the canonical form.
_ORDER = (USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER)


def _check_perm(perm: int) -> int:
    if perm & ~(READ | WRITE | EXECUTE):
        raise ValueError(f"ACL permission {perm:#o} has bits beyond rwx")
    return perm


@dataclass(frozen=True, slots=True)
class Acl:
    """An access ACL.  ``users``/``groups`` are ``(id, perm)`` sorted by id."""

    user_obj: int
    group_obj: int
    other: int
    mask: int | None = None
    users: tuple[tuple[int, int], ...] = ()
    groups: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        for perm in (self.user_obj, self.group_obj, self.other, *(p for _i, p in self.users),
                     *(p for _i, p in self.groups)):
            _check_perm(perm)
        if self.mask is not None:
            _check_perm(self.mask)
        for what, named in (("uid", self.users), ("gid", self.groups)):
            ids = [i for i, _p in named]
            if ids != sorted(set(ids)):
                raise ValueError(f"named ACL {what}s must be unique and sorted: {ids}")
            if any(not 0 <= i <= MAX_ID for i in ids):
                raise ValueError(f"ACL {what} out of range: {ids}")
        if (self.users or self.groups) and self.mask is None:
            raise ValueError("an ACL with named entries needs a mask")

    @property
    def mode(self) -> int:
        """The permission bits the kernel gives the file: group bits show the mask if any."""
        group = self.mask if self.mask is not None else self.group_obj
        return (self.user_obj << 6) | (group << 3) | self.other

    def entries(self) -> list[tuple[int, int, int]]:
        """``(tag, perm, id)`` in canonical order."""
        out = [(USER_OBJ, self.user_obj, UNDEFINED_ID)]
        out += [(USER, perm, uid) for uid, perm in self.users]
        out.append((GROUP_OBJ, self.group_obj, UNDEFINED_ID))
        out += [(GROUP, perm, gid) for gid, perm in self.groups]
        if self.mask is not None:
            out.append((MASK, self.mask, UNDEFINED_ID))
        out.append((OTHER, self.other, UNDEFINED_ID))
        return out

    def encode(self) -> bytes:
        """The ``system.posix_acl_access`` xattr value."""
        return _HEADER.pack(VERSION) + b"".join(_ENTRY.pack(*e) for e in self.entries())


def read_only(uids: Iterable[int], gids: Iterable[int]) -> Acl:
    """Owner (root) and exactly the given users and groups may read; nobody else anything.

    ``user::r--, user:<uid>:r--..., group::---, group:<gid>:r--..., mask::r--, other::---``:
    mode 0440.  The owning group gets nothing so that membership in root's group grants
    nothing; the driver checks a capability by the caller opening its node for reading
    (default modes 0400/0444), so read is all a grantee needs.
    """
    return Acl(
        user_obj=READ,
        group_obj=0,
        other=0,
        mask=READ,
        users=tuple((uid, READ) for uid in sorted(set(uids))),
        groups=tuple((gid, READ) for gid in sorted(set(gids))),
    )


def decode(data: bytes, where: str) -> Acl:
    """Parse an xattr value; anything not canonical is a :class:`ParseError` naming ``where``."""
    if len(data) < _HEADER.size or (len(data) - _HEADER.size) % _ENTRY.size:
        raise ParseError(where, f"ACL xattr of {len(data)} bytes is not a header + 8-byte entries")
    (version,) = _HEADER.unpack_from(data)
    if version != VERSION:
        raise ParseError(where, f"ACL xattr version {version}, want {VERSION}")
    singles: dict[int, int] = {}
    users: list[tuple[int, int]] = []
    groups: list[tuple[int, int]] = []
    last = -1
    for off in range(_HEADER.size, len(data), _ENTRY.size):
        tag, perm, ident = _ENTRY.unpack_from(data, off)
        if tag not in _ORDER:
            raise ParseError(where, f"unknown ACL tag {tag:#x}")
        rank = _ORDER.index(tag)
        if rank < last or (rank == last and tag not in (USER, GROUP)):
            raise ParseError(where, f"ACL entries out of canonical order at tag {tag:#x}")
        last = rank
        if perm & ~(READ | WRITE | EXECUTE):
            raise ParseError(where, f"ACL permission {perm:#x} has bits beyond rwx")
        if tag == USER:
            users.append((ident, perm))
        elif tag == GROUP:
            groups.append((ident, perm))
        else:
            singles[tag] = perm
    for tag, name in ((USER_OBJ, "user::"), (GROUP_OBJ, "group::"), (OTHER, "other::")):
        if tag not in singles:
            raise ParseError(where, f"ACL lacks its {name} entry")
    try:
        return Acl(singles[USER_OBJ], singles[GROUP_OBJ], singles[OTHER], singles.get(MASK),
                   tuple(users), tuple(groups))
    except ValueError as err:
        raise ParseError(where, f"invalid ACL: {err}") from err


def _perm_text(perm: int) -> str:
    bits = (("r", READ), ("w", WRITE), ("x", EXECUTE))
    return "".join(c if perm & bit else "-" for c, bit in bits)


def to_text(acl: Acl) -> str:
    """``getfacl``-style short text (numeric ids), for messages and tests."""
    names = {USER_OBJ: "user:", USER: "user:", GROUP_OBJ: "group:", GROUP: "group:", MASK: "mask:",
             OTHER: "other:"}
    parts = []
    for tag, perm, ident in acl.entries():
        qualifier = str(ident) if tag in (USER, GROUP) else ""
        parts.append(f"{names[tag]}{qualifier}:{_perm_text(perm)}")
    return ",".join(parts)

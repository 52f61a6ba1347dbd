"""Pure: edit the ``[grants."<capability>"]`` tables in the config's text, and nothing else.

The config is the admin's file: ``[hook]``, ``[requests]``, other tools' tables, comments and
blank lines are theirs.  ``capctl grant``/``revoke`` change one capability's grants, so this
module parses the text with tomlkit (a TOML parser that keeps every byte of what it read,
https://tomlkit.readthedocs.io) and changes only the entries of capabilities whose grantees
change; the rest of the text is rendered as it was read.  What a change does to an entry:

- none yet: a ``[grants."<capability>"]`` table is added after the last grants table (or at
  the end), one grantee a line, with a blank line before it that goes with it;
- a ``[grants."<capability>"]`` table: the ``users``/``groups`` array that changes is
  replaced (comments inside that array go with it); comments above and between its keys
  and after its header stay;
- an inline table (``"<capability>" = { users = [...] }`` under ``[grants]``): replaced by
  one inline table on the same line;
- emptied by the last revoke: the table goes, from the blank lines right before its header
  to its last key; the comments and blank lines after its last key stay, since they usually
  describe what follows.  An inline entry goes with its line.  A ``[grants]``
  header the admin wrote stays, even when nothing is under it;
- written with dotted keys (``grants.config.users = ...``) or arrays of tables
  (``[[grants.config.users]]``): refused (:class:`EditError`), the file is left as it is.

Entries of capabilities that do not change are not touched, whatever their form.
"""

from __future__ import annotations

from collections.abc import Iterable

import tomlkit
from tomlkit.container import OutOfOrderTableProxy
from tomlkit.items import AoT, Array, InlineTable, Item, Table

from capctl.errors import ConfigError
from capctl.policy.grants import CapGrants, Principal, toml_key

#: Marks in the rendered text, taken out before it is returned: NUL is not allowed anywhere in
#: a TOML document, so they cannot occur in the admin's text.  _NOTHING is a new grants
#: super-table's indent: tomlkit would indent an empty one with a newline of its own.
_START, _END = "\x00capctl-cut-start-{}\x00", "\x00capctl-cut-end-{}\x00"
_NOTHING = "\x00capctl-nothing\x00"


class EditError(ConfigError):
    """A grants entry capctl will not rewrite (its form is not one this module edits)."""


def newline(text: str) -> str:
    """The file's line ending: CRLF when its first line ends so, else LF."""
    first = text.find("\n")
    return "\r\n" if first > 0 and text[first - 1] == "\r" else "\n"


def _string(s: str) -> str:
    return tomlkit.string(s).as_string()


def _principals(ps: Iterable[Principal]) -> list[str]:
    return [f"{{ name = {_string(p.name)}, {p.kind.id_key} = {p.id} }}" for p in ps]


def _array(ps: tuple[Principal, ...], nl: str) -> Array:
    """An array of grantees, one a line, in the file's line ending."""
    lines = "".join(f"  {x},{nl}" for x in _principals(ps))
    item = tomlkit.parse(f"a = [{nl}{lines}]{nl}").item("a")
    assert isinstance(item, Array)
    return item


def _inline(g: CapGrants) -> InlineTable:
    parts = [f"{k} = [{', '.join(_principals(ps))}]"
             for k, ps in (("users", g.users), ("groups", g.groups)) if ps]
    item = tomlkit.parse(f"a = {{ {', '.join(parts)} }}\n").item("a")
    assert isinstance(item, InlineTable)
    return item


def _table(g: CapGrants, nl: str, indent: str) -> Table:
    body = "".join(f"{k} = [{nl}" + "".join(f"  {x},{nl}" for x in _principals(ps)) + f"]{nl}"
                   for k, ps in (("users", g.users), ("groups", g.groups)) if ps)
    item = tomlkit.parse(f"[t]{nl}{body}").item("t")
    assert isinstance(item, Table)
    item.trivia.indent = indent
    return item


def _values(item: object) -> object:
    return item.unwrap() if isinstance(item, Array) else None


def _last_key_item(entry: Table) -> Item | None:
    """The value of the entry's last plain key (not a sub-table), or None when it has none."""
    last: Item | None = None
    for key, value in entry.value.body:
        if key is not None and not isinstance(value, Table | AoT):
            last = value
    return last


def _set_keys(entry: Table, g: CapGrants, nl: str) -> None:
    """Replace the arrays of a ``[grants."<capability>"]`` table that change.

    An array the table lacks goes right after its last key's line, before the comments that
    follow it (where tomlkit's ``append`` would put it).  tomlkit has no public insert, so
    the new line is rendered through that key's trivia (its ``trail``, the text after the
    value); :func:`edit`'s caller re-parses the result and checks it."""
    for k, ps in (("users", g.users), ("groups", g.groups)):
        want = [{"name": p.name, p.kind.id_key: p.id} for p in ps]
        have = entry.get(k)
        if not ps:
            if have is not None:
                del entry[k]
        elif have is None:
            last = _last_key_item(entry)
            if last is None:
                entry.append(k, _array(ps, nl))
            else:
                last.trivia.trail += f"{k} = {_array(ps, nl).as_string()}{nl}"
        elif _values(have) != want:
            entry[k] = _array(ps, nl)


def _mark_cut(entry: Table, n: int) -> None:
    """Mark an emptied table's text for :func:`_cut`: from its header's indent to its last key.

    Its trailing comments and blank lines are rendered after the end mark and so are kept."""
    entry.trivia.indent = _START.format(n) + entry.trivia.indent
    last = _last_key_item(entry)
    if last is None:  # a header alone: the end mark goes right after it
        entry.trivia.trail += _END.format(n)
    else:
        last.trivia.trail += _END.format(n)


def _cut(text: str, cuts: int, nl: str) -> str:
    """Take the marked tables out, each with the blank lines right before its header (the
    blank line capctl writes before a table it adds)."""
    for n in range(cuts):
        start, end = _START.format(n), _END.format(n)
        i = text.index(start)
        j = text.index(end, i)
        while text[:i].endswith(nl + nl):
            i -= len(nl)
        text = text[:i] + text[j + len(end):]
    return text.replace(_NOTHING, "")


def _refuse(name: str, how: str) -> EditError:
    return EditError(
        f"[grants.{toml_key(name)}] is written with {how}; capctl edits only "
        f"[grants.{toml_key(name)}] tables with users = [...] / groups = [...] arrays, or an "
        f"inline table; rewrite it so (the file is left unchanged)"
    )


def edit(text: str, changes: dict[str, CapGrants]) -> str:
    """``text`` with the grants of each capability in ``changes`` set as given (empty: removed).

    Pure; the caller checks the result means what it should (:mod:`capctl.policy.store`)."""
    nl = newline(text)
    if text and not text.endswith("\n") and any(changes.values()):
        text += nl  # a table can only start on a line of its own
    doc = tomlkit.parse(text)
    grants = doc.get("grants")
    if isinstance(grants, OutOfOrderTableProxy):
        raise EditError("[grants.*] tables are split by other tables; keep them together "
                        "(the file is left unchanged)")
    if grants is not None and not isinstance(grants, Table):
        raise EditError("'grants' must be a table of [grants.\"<capability>\"] tables")
    if grants is not None and any(k is not None and k.key == "grants" and k.is_dotted()
                                  for k, _v in doc.body):
        raise _refuse(next(iter(changes), "?"), "dotted keys")
    cuts = 0
    for name, g in changes.items():
        entry = grants.get(name) if grants is not None else None
        if entry is None:
            if g:
                if grants is None:
                    grants = tomlkit.table(is_super_table=True)
                    grants.trivia.indent = _NOTHING
                    doc.append("grants", grants)
                grants.append(name, _table(g, nl, nl if text.strip() else ""))
        elif isinstance(entry, InlineTable):
            assert grants is not None  # it holds the entry
            if g:
                grants[name] = _inline(g)
            else:
                del grants[name]
        elif isinstance(entry, Table) and not entry.is_super_table():
            if any(isinstance(entry.get(k), AoT) for k in ("users", "groups")):
                raise _refuse(name, "arrays of tables")
            if g:
                _set_keys(entry, g, nl)
            else:
                _mark_cut(entry, cuts)
                cuts += 1
        elif isinstance(entry, Table):
            how = "arrays of tables" if any(isinstance(v, AoT) for v in entry.value.values()) \
                else "dotted keys"
            raise _refuse(name, how)
        else:
            raise EditError(f"[grants.{toml_key(name)}] must be a table")
    return _cut(doc.as_string(), cuts, nl)

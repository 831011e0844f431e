"""Why a ``where`` filter matched no item: a metadata field that no item has, or a value of
another JSON type than the stored one (``"2020"`` where the items hold the number ``2020``).

:func:`explain_no_match` reads the store, never raises for a valid filter, and returns one
message, or ``None`` when nothing in the filter explains the empty result (each field exists
with a type the filter compares with, and no item happens to have the values asked for).

What it reads, per metadata field of the filter (at most :data:`MAX_FIELDS`):

* the JSON types the field has: ``SELECT DISTINCT json_type(...)`` (SQLite) or
  ``jsonb_typeof(...)`` (PostgreSQL) over the items, one scan of the metadata as the filter
  itself took, so "no item has" and "stored as" are exact;
* for a field no item has, the names that do exist at its level (the top-level metadata keys,
  or those under the deepest existing parent of a dotted path): ``json_each`` (SQLite) or
  ``jsonb_object_keys`` (PostgreSQL) over the first :data:`SAMPLE_ROWS` items in id order,
  at most :data:`MAX_KEYS` distinct names. The list is a sample: it names fields, it does not
  claim to be complete.

Built-in fields (``id``, ``key``, ``source``, ``modality``, ``document``, ``added_at``,
``cluster``) are columns with a fixed type: the filter compiler already checks them.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, func, select, true

from ..errors import InvalidInputError
from .filters import ORDERING, _Field, _json_kind, compile_where
from .models import Item

if TYPE_CHECKING:
    from .sql import SqlStore

SAMPLE_ROWS = 10_000  # items whose metadata keys are listed for a field that no item has
MAX_KEYS = 1000  # distinct key names read from that sample
MAX_LISTED = 40  # names a message lists
MAX_FIELDS = 16  # metadata fields of one filter that are checked

# SQLite's json_type() and PostgreSQL's jsonb_typeof() names -> one JSON kind.
_KINDS = {
    "integer": "number", "real": "number", "number": "number",
    "text": "string", "string": "string",
    "true": "boolean", "false": "boolean", "boolean": "boolean",
    "null": "null", "array": "array", "object": "object",
}
_ARTICLE = {"number": "a number", "string": "a string", "boolean": "a boolean", "null": "null",
            "array": "an array", "object": "an object"}


@dataclass
class _Use:
    """How the filter uses one metadata field."""

    key: str  # as the filter wrote it
    field: _Field
    required: bool = False  # some condition fails for an item that lacks the field
    compared: dict[str, Any] = field(default_factory=dict)  # kind -> first operand of that kind
    uncompared: bool = False  # some positive condition also matches null or a missing field
    empty_in: bool = False  # a positive {"$in": []}, which matches nothing


def explain_no_match(store: SqlStore, where: Mapping[str, Any] | None) -> str | None:
    """Why ``where`` matched no item of ``store``, or ``None`` when the filter gives no reason.

    Call it after a filter matched 0 items: it reads the store (see the module docstring for
    what), raises nothing for a valid filter and returns, for example::

        no item has the field 'yeer'; fields: topic, words, year. Did you mean 'year'?
        'year' is stored as a number, the filter compares it with a string ('2020'); write 2020 without quotes

    An invalid filter gives its error message; an empty collection says so.
    """
    dialect = store.engine.dialect.name
    try:
        compile_where(where, dialect)
        uses: dict[tuple[str, ...], _Use] = {}
        _walk(where or {}, False, uses, dialect)
    except InvalidInputError as exc:
        return str(exc)
    with store.engine.connect() as conn:
        if conn.execute(select(Item.id).limit(1)).first() is None:
            return "the collection has no items"
        messages = []
        for use in list(uses.values())[:MAX_FIELDS]:
            message = _diagnose(conn, use, dialect)
            if message:
                messages.append(message)
    return ". ".join(messages) or None


# -- what the filter asks of each field -------------------------------------------------------


def _walk(where: Mapping[str, Any], negated: bool, uses: dict[tuple[str, ...], _Use], dialect: str) -> None:
    """Record each metadata field's conditions; ``negated`` under an odd number of ``$not``."""
    for key, value in where.items():
        if key in ("$and", "$or"):
            for sub in value:
                _walk(sub, negated, uses, dialect)
        elif key == "$not":
            _walk(value, not negated, uses, dialect)
        else:
            parsed = _Field.parse(key, key, dialect)
            if parsed.builtin is None:
                use = uses.setdefault(parsed.path, _Use(key, parsed))
                _condition(use, value, negated)


def _condition(use: _Use, cond: Any, negated: bool) -> None:
    if not isinstance(cond, Mapping):
        _leaf(use, "$eq", cond, negated)
        return
    for op, operand in cond.items():
        if op == "$not":
            _condition(use, operand, not negated)
        else:
            _leaf(use, op, operand, negated)


def _leaf(use: _Use, op: str, operand: Any, negated: bool) -> None:
    """Note what one comparison needs. Its positive form (``$eq``, ``$in``, an ordering,
    ``$exists: true``) matches an item without the field only when null is among its values;
    a negated one (``$ne``, ``$nin``, under ``$not``) matches such an item unless it is about null."""
    if op in ("$eq", "$ne"):
        values, positive = [operand], op == "$eq"
    elif op in ("$in", "$nin"):
        values, positive = list(operand), op == "$in"
    elif op in ORDERING:
        values, positive = [operand], True
    else:  # $exists
        values, positive = [], bool(operand)
    positive = positive != negated
    has_null = any(v is None for v in values)
    if positive and op in ("$in", "$nin") and not values:
        use.empty_in = True
    elif positive and not has_null:
        use.required = True
        for v in values:
            use.compared.setdefault(_json_kind(v), v)
    elif positive:
        use.uncompared = True
    elif has_null:
        use.required = True  # "not null": the field must be there


# -- reading the store -------------------------------------------------------------------------


def _diagnose(conn: Connection, use: _Use, dialect: str) -> str | None:
    if use.empty_in:
        return f"{use.key!r} is compared with an empty $in list, which matches no item"
    stored = _stored_kinds(conn, use.field)
    if not stored:
        return _missing(conn, use, dialect) if use.required else None
    if use.compared and not use.uncompared and not stored & use.compared.keys():
        return _type_mismatch(use, stored)
    return None


def _stored_kinds(conn: Connection, at: _Field) -> set[str]:
    """The JSON kinds the field has on some item (empty: no item has it)."""
    kind = at._type()
    rows = conn.execute(select(kind).where(kind.is_not(None)).distinct())
    return {_KINDS.get(name, name) for (name,) in rows}


def _is_object(conn: Connection, at: _Field) -> bool:
    return conn.execute(select(Item.id).where(at._type() == "object").limit(1)).first() is not None


def _sample_keys(conn: Connection, parent: tuple[str, ...], dialect: str) -> tuple[list[str], bool]:
    """Sorted distinct keys of the objects at ``parent`` in the first items, and whether the
    listing stopped at :data:`MAX_KEYS`."""
    sample = select(Item.meta.label("m")).order_by(Item.id).limit(SAMPLE_ROWS).subquery("sample")
    if dialect == "sqlite":
        path = _Field("", None, parent, dialect)._path()
        each = func.json_each(sample.c.m, path).table_valued("key", name="each")
        stmt = (
            select(each.c.key)
            .select_from(sample.join(each, true()))
            .where(func.json_type(sample.c.m, path) == "object")
        )
    else:
        node = sample.c.m
        for segment in parent:
            node = node[segment]
        stmt = select(func.jsonb_object_keys(node)).where(func.jsonb_typeof(node) == "object")
    names = [str(k) for (k,) in conn.execute(stmt.distinct().limit(MAX_KEYS)) if k is not None]
    return sorted(names), len(names) >= MAX_KEYS


def _missing(conn: Connection, use: _Use, dialect: str) -> str:
    path = use.field.path
    parent: tuple[str, ...] = ()
    for n in range(len(path) - 1, 0, -1):  # the deepest parent that is an object on some item
        if _is_object(conn, _Field(".".join(path[:n]), None, path[:n], dialect)):
            parent = path[:n]
            break
    names, more = _sample_keys(conn, parent, dialect)
    message = f"no item has the field {use.key!r}"
    where = f" under {'.'.join(parent)!r}" if parent else ""
    if names:
        listed = ", ".join(names[:MAX_LISTED])
        rest = len(names) - MAX_LISTED
        if rest > 0 or more:
            listed += f", … ({'over ' if more else ''}{max(rest, 0)} more)"
        message += f"; fields{where}: {listed}"
    elif not parent:
        message += "; the items have no metadata fields"
    dotted = ".".join(path[len(parent):])
    if len(path) > len(parent) + 1 and dotted in names:
        message += (f". The items have a key {dotted!r} with a dot in its name, which a filter cannot reach "
                    "(dots in filter keys mean nested fields)")
    elif close := difflib.get_close_matches(path[len(parent)], names, n=1):
        message += f". Did you mean {'.'.join((*parent, close[0]))!r}?"
    return message


# -- messages ----------------------------------------------------------------------------------


def _type_mismatch(use: _Use, stored: set[str]) -> str:
    order = list(_ARTICLE)
    stored_text = " or ".join(_ARTICLE[k] for k in sorted(stored, key=order.index))
    compared = " and ".join(f"{_ARTICLE[k]} ({_show(v)})" for k, v in use.compared.items())
    message = f"{use.key!r} is stored as {stored_text}, the filter compares it with {compared}"
    return message + _type_hint(use, stored)


def _type_hint(use: _Use, stored: set[str]) -> str:
    text = use.compared.get("string")
    number = use.compared.get("number")
    if "number" in stored and isinstance(text, str) and (parsed := _as_number(text)) is not None:
        return f"; write {_show(parsed)} without quotes"
    if "string" in stored and number is not None:
        return f"; write {str(number)!r} in quotes"
    if "boolean" in stored and isinstance(text, str) and text.strip().lower() in ("true", "false"):
        return f"; write {text.strip().lower()} without quotes"
    if stored == {"array"}:
        return "; filters compare single values, not the elements of an array"
    if stored == {"object"}:
        return f"; filter its fields with dotted keys such as '{use.key}.name'"
    return ""


def _as_number(text: str) -> int | float | None:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, str) else str(value)

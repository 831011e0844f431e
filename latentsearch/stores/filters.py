"""``where`` filters: a Mongo/Chroma-style dict compiled to a SQL condition on the items table.

    {"topic": "space", "year": {"$gte": 2020}, "$or": [{"lang": "en"}, {"lang": {"$exists": False}}]}

A key is a built-in field (``id``, ``key``, ``source``, ``modality``, ``document``,
``added_at``, ``cluster``) or a metadata key, nested with dots (``"a.b"``); ``"metadata.source"`` reaches a
metadata key that shares a built-in's name. Operators: ``$eq $ne $gt $gte $lt $lte $in $nin
$exists $not`` on a key, ``$and $or $not`` around filters. A bare value means ``$eq``.

Metadata values match by JSON type: a number matches numbers (``3 == 3.0``), a string matches
strings, a boolean matches booleans; a value of another type simply does not match (``"3"``
is not ``3``). Numbers compare by their exact values on both databases: an operand is made the
number a store keeps (:func:`.jsonvalues.store_number`, as stored metadata is) and is bound as
an exact decimal on PostgreSQL (whose jsonb numbers are exact decimals) and as an integer or a
double on SQLite (whose JSON numbers are 64-bit integers and doubles, compared exactly with each
other), so ``{"v": 9007199254740992.0}`` matches ``2**53`` and not ``2**53 + 1`` on both.
``None`` matches JSON null and a missing key. ``$ne``, ``$nin`` and ``$not`` match whatever the
positive form does not, missing keys included (as in MongoDB).
Strings order by code point on every database.

``cluster`` is the id of the item's cluster in the stored corpus clustering
(:meth:`Collection.cluster`), compiled as ``items.id IN (SELECT item_id FROM assignments WHERE
cluster_id ...)``; ``{"cluster": None}`` matches items without a cluster.

Every value is a bound parameter, and keys reach SQL only as JSON path elements through
SQLAlchemy's JSON API, so the same filter means the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ColumnElement,
    Numeric,
    and_,
    bindparam,
    case,
    cast,
    false,
    func,
    not_,
    or_,
    select,
    true,
)

from ..errors import InvalidInputError
from .jsonvalues import bind_number, sqlite_path, store_number
from .models import Assignment, Item

COMPARISONS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists", "$not")
LOGICAL = ("$and", "$or", "$not")
ORDERING = {"$gt": "__gt__", "$gte": "__ge__", "$lt": "__lt__", "$lte": "__le__"}
BUILTINS: dict[str, type] = {
    "id": int,
    "key": str,
    "source": str,
    "modality": str,
    "document": str,
    "added_at": datetime,
    "cluster": int,
}
METADATA_PREFIX = "metadata."
MAX_IN = 10_000  # values in one $in/$nin: well under SQLite's and PostgreSQL's parameter limits
MAX_DEPTH = 32  # nesting of $and/$or/$not
MAX_KEY = 1024
DIALECTS = ("sqlite", "postgresql")
_BAD_KEY_CHARS = re.compile(r'["\\\x00-\x1f\x7f]')

# JSON type names per dialect: SQLite's json_type() and PostgreSQL's jsonb_typeof().
_JSON_TYPES = {
    "sqlite": {"number": ("integer", "real"), "string": ("text",), "boolean": ("true", "false"), "null": ("null",)},
    "postgresql": {"number": ("number",), "string": ("string",), "boolean": ("boolean",), "null": ("null",)},
}


def compile_where(where: Mapping[str, Any] | None, dialect: str) -> ColumnElement[bool]:
    """The SQL condition (on :class:`~latentsearch.stores.models.Item`) that ``where`` means.

    ``dialect`` is the SQLAlchemy dialect name (``sqlite`` or ``postgresql``). An invalid filter
    raises :class:`InvalidInputError` naming the part that is wrong. ``None`` or ``{}`` match all.
    """
    if dialect not in DIALECTS:
        raise InvalidInputError(f"where filters work on SQLite and PostgreSQL stores, not {dialect}")
    if where is None:
        return true()
    return _Compiler(dialect).filter(where, "where", 0)


def check_where(where: Mapping[str, Any] | None, dialect: str = "postgresql") -> None:
    """Raise :class:`InvalidInputError` if ``where`` is not a valid filter (no database needed)."""
    compile_where(where, dialect)


class _Compiler:
    def __init__(self, dialect: str):
        self.dialect = dialect

    # -- filters: {key: condition, "$and": [...], "$or": [...], "$not": {...}} ------------------

    def filter(self, where: Any, at: str, depth: int) -> ColumnElement[bool]:
        if not isinstance(where, Mapping):
            raise InvalidInputError(f"{at} must be a dict (a JSON object), not {_kind(where)}")
        if depth > MAX_DEPTH:
            raise InvalidInputError(f"{at} nests $and/$or/$not deeper than {MAX_DEPTH} levels")
        parts = []
        for key, value in where.items():
            if not isinstance(key, str):
                raise InvalidInputError(f"{at} has the key {key!r}; keys must be strings")
            here = f"{at}.{key}" if at != "where" else key
            if key in ("$and", "$or"):
                if not isinstance(value, (list, tuple)):
                    raise InvalidInputError(f"{here} takes a non-empty list of filters, not {_kind(value)}")
                if not value:
                    raise InvalidInputError(f"{here} is an empty list; it takes a non-empty list of filters")
                subs = [self.filter(v, f"{here}[{i}]", depth + 1) for i, v in enumerate(value)]
                parts.append(and_(*subs) if key == "$and" else or_(*subs))
            elif key == "$not":
                if isinstance(value, Mapping) and not value:
                    raise InvalidInputError(f"{here} is empty ({{}} matches every item, so its $not matches none)")
                parts.append(_negate(self.filter(value, here, depth + 1)))
            elif key.startswith("$"):
                hint = "or a field name (a metadata key starting with $ is metadata.$…)"
                raise _unknown("logical operator", key, LOGICAL, at, hint)
            else:
                parts.append(self.condition(_Field.parse(key, here, self.dialect), value, here))
        if not parts:
            return true()
        return parts[0] if len(parts) == 1 else and_(*parts)

    # -- conditions on one field: a value, or {"$op": operand, ...} -----------------------------

    def condition(self, field: _Field, cond: Any, at: str) -> ColumnElement[bool]:
        if isinstance(cond, Mapping):
            if not cond:
                raise InvalidInputError(f"{at} has an empty condition {{}}; give a value or an operator")
            plain = [k for k in cond if not (isinstance(k, str) and k.startswith("$"))]
            if plain:
                raise InvalidInputError(
                    f"{at} compares with an object ({plain[0]!r} is not an operator); filter nested "
                    f"fields with dotted keys such as {at.rsplit('.', 1)[-1]}.{plain[0]}, or use "
                    f"one of {', '.join(COMPARISONS)}"
                )
            parts = [self.operator(field, op, operand, f"{at}.{op}") for op, operand in cond.items()]
            return parts[0] if len(parts) == 1 else and_(*parts)
        return self.operator(field, "$eq", cond, at)

    def operator(self, field: _Field, op: str, operand: Any, at: str) -> ColumnElement[bool]:
        if op == "$eq":
            return field.equals(_scalar(operand, at, field))
        if op == "$ne":
            return _negate(field.equals(_scalar(operand, at, field)))
        if op in ORDERING:
            return field.compare(op, _scalar(operand, at, field), at)
        if op in ("$in", "$nin"):
            if not isinstance(operand, (list, tuple)):
                raise InvalidInputError(f"{at} takes a list of values, not {_kind(operand)}")
            if len(operand) > MAX_IN:
                raise InvalidInputError(f"{at} has {len(operand)} values; at most {MAX_IN} are allowed")
            values = [_scalar(v, f"{at}[{i}]", field) for i, v in enumerate(operand)]
            matched = field.one_of(values)
            return matched if op == "$in" else _negate(matched)
        if op == "$exists":
            if not isinstance(operand, bool):
                raise InvalidInputError(f"{at} takes true or false, not {_kind(operand)}")
            return field.exists() if operand else _negate(field.exists())
        if op == "$not":
            if not isinstance(operand, Mapping):
                raise InvalidInputError(f"{at} takes a condition such as {{\"$gt\": 5}}, not {_kind(operand)}")
            return _negate(self.condition(field, operand, at))
        raise _unknown("operator", op, COMPARISONS, at.rsplit(".", 1)[0])


class _Field:
    """A built-in column or a metadata JSON path, and the SQL for comparing it with values."""

    def __init__(self, name: str, builtin: type | None, path: tuple[str, ...], dialect: str):
        self.name, self.builtin, self.path, self.dialect = name, builtin, path, dialect

    @classmethod
    def parse(cls, key: str, at: str, dialect: str) -> _Field:
        if key in BUILTINS:
            return cls(key, BUILTINS[key], (), dialect)
        if len(key) > MAX_KEY:
            raise InvalidInputError(f"the key {key[:40]!r}… is longer than {MAX_KEY} characters")
        path = key.removeprefix(METADATA_PREFIX)
        if _BAD_KEY_CHARS.search(path):
            raise InvalidInputError(
                f"the key {key!r} contains a double quote, a backslash or a control character; "
                "such metadata keys cannot be filtered on"
            )
        segments = tuple(path.split("."))
        if not all(segments):
            raise InvalidInputError(f"the key {key!r} has an empty part; nest keys as 'a.b'")
        return cls(key, None, segments, dialect)

    # -- built-in columns ---------------------------------------------------------------------

    @property
    def column(self) -> Any:
        return getattr(Item, self.name)

    def _ordered(self, expr: Any) -> Any:
        """Strings compare by code point everywhere (PostgreSQL would use the database's locale)."""
        return expr.collate("C") if self.dialect == "postgresql" else expr

    # -- metadata JSON ------------------------------------------------------------------------

    def _node(self) -> Any:
        """The JSON value at the path. On SQLite one ``$."a"."b"`` path; on PostgreSQL one
        ``->`` step per key, each key its own bound parameter (PostgreSQL's ``#>`` path literal
        would split keys at commas)."""
        if self.dialect == "sqlite":
            return Item.meta[sqlite_path(self.path)]
        node = Item.meta
        for segment in self.path:
            node = node[segment]
        return node

    def _type(self) -> Any:
        """The JSON type name of the value at the path; NULL where the path does not exist."""
        if self.dialect == "sqlite":
            return func.json_type(Item.meta, self._path())
        return func.jsonb_typeof(self._node())

    def _is(self, kind: str) -> ColumnElement[bool]:
        names = _JSON_TYPES[self.dialect][kind]
        return self._type() == names[0] if len(names) == 1 else self._type().in_(names)

    def _path(self) -> Any:
        return bindparam(None, sqlite_path(self.path), type_=JSON.JSONPathType())

    def _typed(self, kind: str) -> Any:
        """The value as a SQL value of ``kind``, NULL when it is of another JSON type.

        CASE guards the cast: PostgreSQL would fail on ``'abc'::numeric`` and SQLite would read
        it as 0. Numbers compare exactly: SQLite's own integers and reals, PostgreSQL's numeric.
        """
        node = self._node()
        if kind == "number":
            if self.dialect == "sqlite":
                value = func.json_extract(Item.meta, self._path(), type_=Numeric())
            else:
                value = cast(node.as_string(), Numeric())
        elif kind == "string":
            value = node.as_string()
        else:
            value = node.as_boolean()
        return case((self._is(kind), value), else_=None)

    def _bind(self, value: Any) -> Any:
        """``value`` as a bound parameter; a number at its exact value (:func:`.jsonvalues.bind_number`)."""
        return bind_number(value, self.dialect) if _json_kind(value) == "number" else value

    # -- the operators ------------------------------------------------------------------------

    def _in_cluster(self, condition: Any) -> ColumnElement[bool]:
        """Items whose assignment matches ``condition`` (on ``assignments.cluster_id``)."""
        return Item.id.in_(select(Assignment.item_id).where(condition))

    def equals(self, value: Any) -> ColumnElement[bool]:
        if self.name == "cluster":
            if value is None:
                return _negate(self._in_cluster(true()))
            return self._in_cluster(Assignment.cluster_id == value)
        if self.builtin is not None:
            return self.column.is_(None) if value is None else self.column == value
        if value is None:
            return or_(self._type().is_(None), self._is("null"))
        return self._typed(_json_kind(value)) == self._bind(value)

    def compare(self, op: str, value: Any, at: str) -> ColumnElement[bool]:
        if value is None or isinstance(value, bool):
            raise InvalidInputError(f"{at} compares with {_kind(value)}; use a number or a string")
        method = ORDERING[op]
        if self.name == "cluster":
            return self._in_cluster(getattr(Assignment.cluster_id, method)(value))
        if self.builtin is not None:
            column = self._ordered(self.column) if self.builtin is str else self.column
            return getattr(column, method)(value)
        kind = _json_kind(value)
        typed = self._typed(kind)
        if kind == "string":
            typed = self._ordered(typed)
        return getattr(typed, method)(self._bind(value))

    def one_of(self, values: Sequence[Any]) -> ColumnElement[bool]:
        if not values:
            return false()
        parts = []
        if any(v is None for v in values):
            parts.append(self.equals(None))
        present = [v for v in dict.fromkeys((type(v), v) for v in values if v is not None)]
        if self.name == "cluster":
            if present:
                parts.append(self._in_cluster(Assignment.cluster_id.in_([v for _, v in present])))
        elif self.builtin is not None:
            if present:
                parts.append(self.column.in_([v for _, v in present]))
        else:
            for kind in ("number", "string", "boolean"):
                same = [v for _, v in present if _json_kind(v) == kind]
                if same:
                    parts.append(self._typed(kind).in_([self._bind(v) for v in same]))
        return parts[0] if len(parts) == 1 else or_(*parts)

    def exists(self) -> ColumnElement[bool]:
        if self.name == "cluster":
            return self._in_cluster(true())
        if self.builtin is not None:
            return self.column.is_not(None)
        return self._type().is_not(None)


def _scalar(value: Any, at: str, field: _Field) -> Any:
    """The operand as a bindable Python value of the field's type, or an error naming ``at``."""
    if field.builtin is not None:
        return _builtin_value(value, at, field)
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, (int, float)):
        return store_number(value, at)
    hint = " ($in takes a list of values)" if isinstance(value, (list, tuple)) else ""
    raise InvalidInputError(f"{at} is {_kind(value)}; compare with a string, a number, true/false or null{hint}")


def _builtin_value(value: Any, at: str, field: _Field) -> Any:
    if value is None:
        if field.name in ("id", "modality", "added_at"):
            raise InvalidInputError(f"{at}: {field.name} is never null")
        return None
    if field.builtin is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInputError(f"{at}: {field.name} is an integer, not {_kind(value)}")
        return value
    if field.builtin is str:
        if not isinstance(value, str):
            raise InvalidInputError(f"{at}: {field.name} is a string, not {_kind(value)}")
        return value
    return _timestamp(value, at)


def _timestamp(value: Any, at: str) -> datetime:
    """An aware UTC datetime from a datetime, a date or an ISO 8601 string (naive means UTC)."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidInputError(
                f"{at}: {value!r} is not an ISO 8601 timestamp such as 2024-05-01 or 2024-05-01T12:00:00Z"
            ) from None
    elif isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if not isinstance(value, datetime):
        raise InvalidInputError(f"{at}: added_at compares with an ISO 8601 timestamp, not {_kind(value)}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    # SQLite keeps the stored UTC time without its zone: compare in UTC there too.
    return value.astimezone(timezone.utc)


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    return "number" if isinstance(value, (int, float)) else "string"


def _negate(condition: ColumnElement[bool]) -> ColumnElement[bool]:
    """NOT that treats SQL NULL (a missing key, another type) as false, so its negation matches."""
    return not_(func.coalesce(condition, false(), type_=Boolean))


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (Mapping, list, tuple)):
        return f"a {'dict' if isinstance(value, Mapping) else 'list'}"
    return f"{type(value).__name__} {value!r}"[:80]


def _unknown(what: str, name: str, known: Sequence[str], at: str, extra: str = "") -> InvalidInputError:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    where = f" in {at}" if at != "where" else ""
    tail = f", {extra}" if extra else ""
    return InvalidInputError(f"unknown {what} {name!r}{where}; known: {', '.join(known)}{tail}.{hint}")

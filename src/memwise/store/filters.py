"""Metadata filters: a small typed language, parsed once, applied inside every store as a hard filter.

The language is what mem0 users write::

    {"category": "pets"}                          equality
    {"year": {"gte": 2020, "lt": 2024}}           ranges: eq, ne, gt, gte, lt, lte
    {"tag": {"in": ["a", "b"]}}                   membership (and "nin")
    {"AND": [...]}, {"OR": [...]}, {"NOT": {...}}  combinations; several keys in one dict are ANDed

It is parsed into a frozen tree (:class:`Cmp`, :class:`In`, :class:`And`, :class:`Or`, :class:`Not`)
so a malformed filter fails once, with a StoreError that names the offending part, before any SQL
runs. Three renderings must agree row for row: :func:`matches` (Python: the numpy vector path and
re-checks), :func:`to_sqlite` (``json_type``/``json_extract``) and :func:`to_postgres` (jsonb
operators); a parity test holds them together. The semantics they share:

* Values are typed: a string equals only a string, a number only a number (``1 == 1.0``), a boolean
  only a boolean (``True`` is not ``1``). Ranges compare numbers with numbers and strings with
  strings (by code point); a value of another type, a list, an object, null or a missing key never
  satisfies ``eq``, ``in`` or a range.
* ``ne`` is ``NOT eq`` and ``nin`` is ``NOT in``: a record without the key passes them.
* Only top-level keys are addressed; a key is a non-empty string without double quotes or control
  characters (SQLite's JSON path syntax cannot carry those).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from memwise.exceptions import StoreError

Scalar = str | int | float | bool
RangeOp = Literal["eq", "gt", "gte", "lt", "lte"]
_RANGE_OPS: tuple[RangeOp, ...] = ("eq", "gt", "gte", "lt", "lte")
OPERATORS = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "nin")
_COMBINATORS = ("AND", "OR", "NOT")
# Beyond 2**53 a JSON number stops being exact in SQLite (a double) while Postgres keeps it exact.
_MAX_EXACT = 2**53


@dataclass(frozen=True, slots=True)
class Cmp:
    """``metadata[key] <op> value``."""

    key: str
    op: RangeOp
    value: Scalar


@dataclass(frozen=True, slots=True)
class In:
    """``metadata[key]`` equals one of ``values``."""

    key: str
    values: tuple[Scalar, ...]


@dataclass(frozen=True, slots=True)
class And:
    """Every item must hold (``$and``)."""

    items: tuple[MetaFilter, ...]


@dataclass(frozen=True, slots=True)
class Or:
    """At least one item must hold (``$or``)."""

    items: tuple[MetaFilter, ...]


@dataclass(frozen=True, slots=True)
class Not:
    """The item must not hold (``$not``, and the negated operators)."""

    item: MetaFilter


MetaFilter = Cmp | In | And | Or | Not


# -- parsing --------------------------------------------------------------------------------------


def _check_key(key: object, where: str) -> str:
    if not isinstance(key, str) or not key:
        raise StoreError(f"metadata filter {where}: a key must be a non-empty string, got {key!r}")
    if '"' in key or any(ord(c) < 32 for c in key):
        raise StoreError(f"metadata filter {where}: key {key!r} contains a double quote or control character")
    return key


def _check_scalar(value: object, where: str, *, ordered: bool = False) -> Scalar:
    if isinstance(value, bool):
        if ordered:
            raise StoreError(f"metadata filter {where}: a range needs a number or a string, got {value!r}")
        return value
    if isinstance(value, int):
        if abs(value) > _MAX_EXACT:
            raise StoreError(f"metadata filter {where}: integer {value} is beyond 2**53, which stores cannot compare")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise StoreError(f"metadata filter {where}: {value!r} is not a finite number")
        return value
    if isinstance(value, str):
        return value
    raise StoreError(
        f"metadata filter {where}: values must be strings, numbers or booleans, got {type(value).__name__} {value!r}"
    )


def parse(spec: Mapping[str, Any], where: str = "") -> MetaFilter:
    """The filter tree for a mem0-style dict; raises StoreError naming the bad part."""
    if not isinstance(spec, Mapping):
        raise StoreError(f"metadata filter{where}: expected a dict, got {type(spec).__name__} {spec!r}")
    if not spec:
        raise StoreError(f"metadata filter{where}: an empty dict says nothing; pass None for no metadata filter")
    parts: list[MetaFilter] = []
    for key, cond in spec.items():
        here = f"{where}.{key}" if where else str(key)
        if key in ("AND", "OR"):
            if not isinstance(cond, list | tuple) or not cond:
                raise StoreError(f"metadata filter {here}: expects a non-empty list of filters, got {cond!r}")
            items = tuple(parse(item, f"{here}[{i}]") for i, item in enumerate(cond))
            parts.append(And(items) if key == "AND" else Or(items))
        elif key == "NOT":
            parts.append(Not(parse(cond, here)))
        else:
            parts.extend(_parse_condition(_check_key(key, here), cond, here))
    return parts[0] if len(parts) == 1 else And(tuple(parts))


def _parse_condition(key: str, cond: object, where: str) -> list[MetaFilter]:
    if not isinstance(cond, Mapping):
        return [Cmp(key, "eq", _check_scalar(cond, where))]
    if not cond:
        raise StoreError(f"metadata filter {where}: an empty operator dict; use e.g. {{'eq': value}}")
    out: list[MetaFilter] = []
    for op, value in cond.items():
        here = f"{where}.{op}"
        if op in ("in", "nin"):
            if not isinstance(value, list | tuple) or not value:
                raise StoreError(f"metadata filter {here}: expects a non-empty list of values, got {value!r}")
            node: MetaFilter = In(key, tuple(_check_scalar(v, here) for v in value))
            out.append(node if op == "in" else Not(node))
        elif op == "ne":
            out.append(Not(Cmp(key, "eq", _check_scalar(value, here))))
        elif op in _RANGE_OPS:
            out.append(Cmp(key, op, _check_scalar(value, here, ordered=op != "eq")))
        else:
            raise StoreError(f"metadata filter {where}: unknown operator {op!r}; operators are {', '.join(OPERATORS)}")
    return out


# -- Python ---------------------------------------------------------------------------------------

_MISSING = object()


def _kind(value: object) -> str | None:
    """The type class a stored value compares in: 'bool', 'num', 'str', or None (never compares)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "num"
    if isinstance(value, str):
        return "str"
    return None


def _compare(stored: object, op: RangeOp, wanted: Scalar) -> bool:
    if _kind(stored) is None or _kind(stored) != _kind(wanted):
        return False
    if op == "eq":
        return stored == wanted
    a, b = stored, wanted
    if op == "gt":
        return a > b  # type: ignore[operator]
    if op == "gte":
        return a >= b  # type: ignore[operator]
    if op == "lt":
        return a < b  # type: ignore[operator]
    return a <= b  # type: ignore[operator]


def matches(node: MetaFilter, metadata: Mapping[str, Any]) -> bool:
    """Whether a record's metadata passes ``node``; the reference the SQL renderings follow."""
    if isinstance(node, Cmp):
        return _compare(metadata.get(node.key, _MISSING), node.op, node.value)
    if isinstance(node, In):
        stored = metadata.get(node.key, _MISSING)
        return any(_compare(stored, "eq", v) for v in node.values)
    if isinstance(node, And):
        return all(matches(item, metadata) for item in node.items)
    if isinstance(node, Or):
        return any(matches(item, metadata) for item in node.items)
    return not matches(node.item, metadata)


# -- SQL ------------------------------------------------------------------------------------------

_SQL_OPS = {"eq": "=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def _render(
    node: MetaFilter, leaf: Callable[[str, str, Scalar], tuple[str, list[Any]]], false: str
) -> tuple[str, list[Any]]:
    """The SQL of a filter tree: ``leaf`` renders one key/op/value test, the tree's shape is the same SQL.

    A comparison or ``$in`` is the OR of its leaf tests wrapped in ``COALESCE(.., false)``, so a missing
    key is false rather than NULL and NOT stays exact.
    """
    if isinstance(node, Cmp | In):
        values = (node.value,) if isinstance(node, Cmp) else node.values
        op = node.op if isinstance(node, Cmp) else "eq"
        rendered = [leaf(node.key, op, value) for value in values]
        sql = " OR ".join(part for part, _ in rendered)
        return f"COALESCE(({sql}), {false})", [p for _, ps in rendered for p in ps]
    if isinstance(node, Not):
        sql, params = _render(node.item, leaf, false)
        return f"(NOT {sql})", params
    joiner = " AND " if isinstance(node, And) else " OR "
    parts = [_render(item, leaf, false) for item in node.items]
    return "(" + joiner.join(sql for sql, _ in parts) + ")", [p for _, ps in parts for p in ps]


def to_sqlite(node: MetaFilter, column: str) -> tuple[str, list[Any]]:
    """A SQLite condition (0 or 1, never NULL, so NOT stays exact) and its parameters.

    ``json_type`` tells the JSON types apart (``json_extract`` turns ``true`` into 1); the value is
    only compared once the type matched, and ``COALESCE`` turns the NULL of a missing key into 0.
    """

    def leaf(key: str, op: str, value: Scalar) -> tuple[str, list[Any]]:
        path = f'$."{key}"'
        kind = _kind(value)
        if kind == "bool":
            return f"(json_type({column}, ?) IS ?)", [path, "true" if value else "false"]
        jtype = "IN ('integer', 'real')" if kind == "num" else "IS 'text'"
        return f"(json_type({column}, ?) {jtype} AND json_extract({column}, ?) {_SQL_OPS[op]} ?)", [path, path, value]

    return _render(node, leaf, "0")


def to_postgres(node: MetaFilter, column: str) -> tuple[str, list[Any]]:
    """A Postgres condition (true or false, never NULL) over a jsonb ``column``, with %s parameters.

    Numbers and booleans compare as jsonb (numeric, exact: ``1`` equals ``1.0``); strings compare as
    text under the "C" collation, which orders by code point as Python does whatever the database's
    collation. ``COALESCE`` keeps a missing key false rather than NULL, so NOT stays exact.
    """

    def leaf(key: str, op: str, value: Scalar) -> tuple[str, list[Any]]:
        kind = _kind(value)
        if kind == "str":
            return (
                f"(jsonb_typeof({column} -> %s::text) = 'string' "
                f'AND ({column} ->> %s::text) COLLATE "C" {_SQL_OPS[op]} %s::text)'
            ), [key, key, value]
        jtype = "boolean" if kind == "bool" else "number"
        return (
            f"(jsonb_typeof({column} -> %s::text) = '{jtype}' AND ({column} -> %s::text) {_SQL_OPS[op]} %s::jsonb)"
        ), [key, key, json.dumps(value)]

    return _render(node, leaf, "false")

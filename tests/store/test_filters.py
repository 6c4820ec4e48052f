"""Metadata filters: parsing errors, and one predicate in parity across Python, SQLite, numpy and Postgres."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

from memwise.exceptions import StoreError
from memwise.store.base import Filters, Record
from memwise.store.filters import And, Cmp, In, Not, parse
from memwise.store.postgres import PostgresStore
from memwise.store.sqlite import SQLiteStore


def test_parse_builds_a_frozen_tree() -> None:
    tree = parse({"category": "pets", "year": {"gte": 2020, "lt": 2024}, "tag": {"nin": ["a"]}})
    assert tree == And(
        (Cmp("category", "eq", "pets"), Cmp("year", "gte", 2020), Cmp("year", "lt", 2024), Not(In("tag", ("a",))))
    )
    assert Filters(metadata={"a": 1}).meta == Cmp("a", "eq", 1)
    hash(Filters(metadata={"a": {"in": [1, 2]}}))  # frozen all the way down


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"year": {"between": [1, 2]}}, "unknown operator 'between'"),
        ({"a": {"in": "ab"}}, "non-empty list"),
        ({"a": {"gt": True}}, "range needs a number or a string"),
        ({"a": [1, 2]}, "values must be strings, numbers or booleans"),
        ({"a": float("nan")}, "not a finite number"),
        ({"AND": []}, "non-empty list"),
        ({}, "empty dict"),
        ({'a"b': 1}, "double quote"),
        ({"a": {}}, "empty operator dict"),
        ({"a": 2**60}, "2\\*\\*53"),
    ],
)
def test_bad_filters_raise_a_clear_store_error(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(StoreError, match=message):
        Filters(metadata=spec)


KEYS = ("a", "b", "c")
VALUES: list[Any] = [0, 1, 2, 2.5, -1, "x", "y", "10", "", True, False, None, [1], {"k": 1}]


def random_meta(rng: random.Random) -> dict[str, Any]:
    return {k: rng.choice(VALUES) for k in KEYS if rng.random() < 0.7}


def random_filter(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    roll = rng.random()
    if depth < 2 and roll < 0.25:
        op = rng.choice(["AND", "OR"])
        return {op: [random_filter(rng, depth + 1) for _ in range(rng.randint(1, 3))]}
    if depth < 2 and roll < 0.35:
        return {"NOT": random_filter(rng, depth + 1)}
    key = rng.choice(KEYS)
    scalars: list[Any] = [0, 1, 2, 2.0, 2.5, "x", "y", "1", "", True, False]
    op = rng.choice(["eq", "ne", "gt", "gte", "lt", "lte", "in", "nin", "plain"])
    if op == "plain":
        return {key: rng.choice(scalars)}
    if op in ("in", "nin"):
        return {key: {op: rng.sample(scalars, rng.randint(1, 3))}}
    if op in ("gt", "gte", "lt", "lte"):
        return {key: {op: rng.choice([0, 1, 2, 2.5, "x", "1", ""])}}
    return {key: {op: rng.choice(scalars)}}


def test_one_predicate_in_every_store(tmp_path: Any, pg_dsn: str) -> None:
    """Python ``matches``, SQLite SQL, the numpy vector path and Postgres agree on 200 random filters."""
    rng = random.Random(7)
    records = [Record(text=f"note {i}", id=f"r{i}", metadata=random_meta(rng)) for i in range(150)]
    vectors = np.random.default_rng(1).standard_normal((len(records), 8)).astype(np.float32)
    query = np.ones(8, dtype=np.float32)
    with SQLiteStore(tmp_path / "p.db") as lite, PostgresStore(pg_dsn) as pg:
        lite.add(records, vectors)
        pg.add(records, vectors)
        checked = 0
        for _ in range(200):
            spec = random_filter(rng)
            f = Filters(metadata=spec)
            expected = {r.id for r in records if f.matches(r, 0.0)}
            assert {r.id for r in lite.list_records(f)} == expected, spec
            assert {h.record.id for h in lite.search_vector(query, len(records), f)} == expected, spec
            assert {r.id for r in pg.list_records(f)} == expected, spec
            assert {h.record.id for h in pg.search_vector(query, 2000, f)} == expected, spec  # exact path
            checked += 0 < len(expected) < len(records)
        assert checked > 50  # most filters split the records: the comparison is not vacuous

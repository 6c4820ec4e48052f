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

The tables and their migrations are in ``_pg_schema``, connections and transactions in ``_pg_pool``,
the search SQL in ``_pg_search``; this module is the store those parts make.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt

from memwise.exceptions import StoreError
from memwise.store import _jobs, _pg_schema, _pg_search, _sql
from memwise.store._pg_pool import DSN_PATH, PgConnections, PgPool, SearchPath
from memwise.store._pg_schema import COLS, row_to_record
from memwise.store._prepare import as_matrix, checked_batch, edited, query_vector
from memwise.store.base import ANY, Filters, Record, ScoredRecord


def _where(filters: Filters | None) -> tuple[str, list[Any]]:
    """The Postgres condition (alias ``r``) and parameters for ``filters`` at this moment."""
    return _sql.where_clause(filters or ANY, time.time(), dialect="postgres")


class PostgresStore:
    """Records with scope, full-text and HNSW vector search in a shared PostgreSQL database.

    Args:
        dsn: a libpq connection string, e.g. ``postgresql://user:pass@host:5432/memwise``.
        space: the default vector space (normally the embedder's name).
        schema: keep the tables in this schema (created if missing); None: wherever the DSN's
            ``search_path`` puts them (normally ``public``).
        max_connections: the size of the store's own pool; threads beyond it wait for a connection.
        connect_timeout_s: how long opening the store waits for the server.
        retry_budget_s: how long a write outside ``transaction()`` retries after a deadlock or
            serialisation failure before raising StoreError.
        ef_search: HNSW candidates kept per search (at least ``top_k``): higher is slower and closer to
            exact. 40 is pgvector's default; on clustered data with many near ties (see
            bench/service.py) recall@10 at 40 can be well under 1, so raise it when recall matters.
        exact_scope_limit: a search scoped to a user, agent or run with at most this many records
            ranks them exactly instead of walking the HNSW graph (see :meth:`search_vector`).
        pool: share this pool (opened on ``dsn``) instead of opening one: many stores, e.g. one per
            server tenant, then hold at most the pool's connections together. Each checkout puts the
            connection on the store's ``search_path`` first; closing the store leaves the pool open.
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
        pool: PgPool | None = None,
    ) -> None:
        psycopg, _, _ = _pg_schema.import_driver()
        self._psycopg = psycopg
        if pool is not None and pool.dsn != dsn:
            raise StoreError("PostgresStore(pool=...) must be given the DSN the pool was opened on")
        self.dsn = dsn
        self.schema = None if schema is None else _pg_schema.check_schema_name(schema)
        self.where = _pg_schema.describe_dsn(dsn) + ("" if schema is None else f", schema {schema!r}")
        self.space = space
        max_ef = _pg_search.MAX_EF_SEARCH
        if isinstance(ef_search, bool) or not isinstance(ef_search, int) or not 1 <= ef_search <= max_ef:
            raise StoreError(f"ef_search must be an integer from 1 to {max_ef}, got {ef_search!r}")
        self.ef_search = ef_search
        if isinstance(exact_scope_limit, bool) or not isinstance(exact_scope_limit, int) or exact_scope_limit < 0:
            raise StoreError(f"exact_scope_limit must be a non-negative integer, got {exact_scope_limit!r}")
        self.exact_scope_limit = exact_scope_limit
        self._dims: dict[str, int] = {}
        self._owns_pool = pool is None
        self._pool = pool or PgPool(dsn, max_connections=max_connections, connect_timeout_s=connect_timeout_s)
        try:
            search_path = self.migrate()
        except BaseException:
            self._close_pool()
            raise
        path = DSN_PATH
        if self.schema is not None:
            from psycopg import sql

            path = SearchPath(self.schema, sql.SQL("SET search_path TO {}").format(search_path))
        self._db = PgConnections(self._pool, where=self.where, path=path, retry_budget_s=retry_budget_s)

    # -- lifecycle ------------------------------------------------------------------------------

    def migrate(self) -> Any:
        """Create or upgrade the schema; idempotent, and safe when several processes open at once.

        Returns the search path (a psycopg SQL fragment) of the store's schema, or None without one.
        """
        try:
            # On the DSN's path: the migration creates the schema and enters it for its own transaction.
            with self._pool.connection(DSN_PATH) as conn:
                return _pg_schema.migrate(self._psycopg, conn, schema=self.schema, where=self.where)
        except self._psycopg.Error as exc:
            raise StoreError(f"migrating the schema of {self.where} failed: {exc}") from exc

    def _close_pool(self) -> None:
        if self._owns_pool:
            self._pool.close()

    def close(self) -> None:
        """Close the store's own pool (a shared one stays open); the instance is unusable afterwards."""
        self._close_pool()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def transaction(self) -> AbstractContextManager[None]:
        """Make every write inside the block (on this thread) one atomic unit; nested blocks are savepoints.

        As with SQLite: keep it short and do not await inside it; a write from another asyncio task
        on the same thread raises StoreError.
        """
        return self._db.transaction()

    # -- writes ---------------------------------------------------------------------------------

    def _check_dim(self, conn: Any, space: str, dim: int) -> None:
        """Fix a new space's dimension (and create its HNSW index) or check a known one's.

        Asks the database on every write rather than trusting what this process remembers: another
        process may have dropped the space since (``memwise reembed``), and vectors written to a space
        without its row would be invisible to every process that opens the store afterwards. The row is
        read ``FOR SHARE``, so a ``drop_space`` in another process waits for this write to commit and
        then drops its vectors too, instead of leaving them behind without the row.
        """
        known = self._stored_dim(conn, space, lock=True)
        if known is None:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_pg_schema.space_lock(space, self.schema),))
            known = self._stored_dim(conn, space, lock=True)
            if known is None:
                _pg_schema.create_space(conn, space, dim)
                return
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
        batch, hashes, order, mat = checked_batch(records, vectors)
        if not batch:
            return []
        space = space or self.space
        order.sort(key=lambda i: batch[i].id)
        params = []
        try:
            for i in order:
                row = list(_sql.record_params(batch[i], hashes[i]))
                row[6] = _pg_schema.metadata_json(batch[i])
                params.append(row)
        except ValueError as exc:
            raise StoreError(f"add: metadata must be JSON without NaN or infinity: {exc}") from exc
        insert = (
            f"INSERT INTO records({_sql.RECORD_COLUMNS}) VALUES ({_pg_schema.INSERT_MARKS}) ON CONFLICT (id) DO NOTHING"
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

        self._db.write(work, f"add of {len(batch)} records")
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
        vec = None if vector is None else as_matrix(vector, 1, f"update of {record_id}")[0]

        def work(conn: Any) -> Record:
            row = conn.execute(f"SELECT {COLS} FROM records r WHERE r.id = %s FOR UPDATE", (record_id,)).fetchone()
            if row is None:
                raise StoreError(f"update: no record {record_id!r} in {self.where}")
            new, text_changed = edited(row_to_record(row), text=text, metadata=metadata, index_text=index_text)
            try:
                meta_json = _pg_schema.metadata_json(new)
            except ValueError as exc:
                raise StoreError(f"update of {record_id}: metadata must be JSON without NaN or infinity") from exc
            conn.execute(
                "UPDATE records SET text = %s, metadata = %s::jsonb, content_hash = %s, index_text = %s WHERE id = %s",
                (new.text, meta_json, new.content_hash(), new.index_text, record_id),
            )
            if vec is not None:  # before the delete: it waits on a drop_space of the space, holding no vector rows
                self._check_dim(conn, space, vec.shape[0])
            if text_changed or vec is not None:
                conn.execute("DELETE FROM vectors WHERE record_id = %s", (record_id,))
            if vec is not None:
                conn.execute(
                    "INSERT INTO vectors(record_id, space, embedding) VALUES (%s, %s, %s)", (record_id, space, vec)
                )
            return new

        return self._db.write(work, f"update of {record_id}")

    def delete(self, record_id: str) -> bool:
        """Remove a record and its vectors for good; False when there was none."""
        return self._db.write(
            lambda conn: conn.execute("DELETE FROM records WHERE id = %s", (record_id,)).rowcount > 0,
            f"delete of {record_id}",
        )

    def invalidate(self, record_id: str, at: float | None = None) -> Record:
        """Mark a record as no longer true from ``at`` (default now), keeping it for history."""
        when = time.time() if at is None else at

        def work(conn: Any) -> Record:
            row = conn.execute(
                f"UPDATE records r SET valid_to = %s WHERE r.id = %s RETURNING {COLS}", (when, record_id)
            ).fetchone()
            if row is None:
                raise StoreError(f"invalidate: no record {record_id!r} in {self.where}")
            return row_to_record(row)

        return self._db.write(work, f"invalidate of {record_id}")

    def drop_space(self, space: str) -> int:
        """Delete every vector of ``space``, its dimension and its HNSW index; returns how many vectors went.

        Taken under the space's lock, as its creation is, so a concurrent first add of the same space
        waits and then creates it afresh (with any dimension). The dimension row goes first: deleting it
        waits for writes still adding to the space (they hold it ``FOR SHARE``), so the vectors deleted
        next include theirs.
        """

        def work(conn: Any) -> int:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_pg_schema.space_lock(space, self.schema),))
            conn.execute("DELETE FROM spaces WHERE space = %s", (space,))
            gone = int(conn.execute("DELETE FROM vectors WHERE space = %s", (space,)).rowcount)
            conn.execute(f"DROP INDEX IF EXISTS {_pg_schema.index_name(space)}")
            return gone

        gone = self._db.write(work, f"dropping vector space {space!r}")
        self._dims.pop(space, None)
        return gone

    # -- jobs (JobLog) --------------------------------------------------------------------------

    def save_job(self, job_id: str, status: str, state: Mapping[str, Any]) -> None:
        """Insert or replace a server job's state (see :class:`memwise.store.base.JobLog`)."""
        _jobs.save_job(self._db, "postgres", job_id, status, state)

    def load_job(self, job_id: str) -> dict[str, Any] | None:
        """A server job's last saved state, or None."""
        return _jobs.load_job(self._db, "postgres", job_id)

    def prune_jobs(self, keep: int) -> int:
        """Forget finished jobs beyond the ``keep`` most recently saved."""
        return _jobs.prune_jobs(self._db, "postgres", keep)

    # -- reads ----------------------------------------------------------------------------------

    def get(self, record_id: str) -> Record | None:
        """The record with this id, or None."""

        def work(conn: Any) -> Record | None:
            row = conn.execute(f"SELECT {COLS} FROM records r WHERE r.id = %s", (record_id,)).fetchone()
            return None if row is None else row_to_record(row)

        return self._db.read(work, f"get of {record_id}")

    def get_for_update(self, record_id: str) -> Record | None:
        """:meth:`get` with the row locked (``FOR UPDATE``) until the enclosing transaction ends.

        A concurrent writer of the row waits; once it commits, this read sees its change (read committed
        re-reads a row it waited for), so a read-check-write can never act on a stale version.
        """

        def work(conn: Any) -> Record | None:
            row = conn.execute(f"SELECT {COLS} FROM records r WHERE r.id = %s FOR UPDATE", (record_id,)).fetchone()
            return None if row is None else row_to_record(row)

        return self._db.write(work, f"locking {record_id}")

    def get_many(self, ids: Iterable[str]) -> list[Record]:
        """The records with these ids, in the order asked; missing ids are skipped."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return []

        def work(conn: Any) -> list[Record]:
            rows = conn.execute(f"SELECT {COLS} FROM records r WHERE r.id = ANY(%s)", (wanted,)).fetchall()
            found = {row[0]: row_to_record(row) for row in rows}
            return [found[i] for i in wanted if i in found]

        return self._db.read(work, f"get_many of {len(wanted)} ids")

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

        return self._db.read(work, f"get_vector of {record_id}")

    def list_records(self, filters: Filters | None = None, limit: int | None = None, offset: int = 0) -> list[Record]:
        """Records allowed by ``filters``, oldest first (by created_at, then insertion order)."""
        where, params = _where(filters)
        sql = f"SELECT {COLS} FROM records r WHERE {where} ORDER BY r.created_at, r.seq LIMIT %s OFFSET %s"
        params += [None if limit is None else max(limit, 0), max(offset, 0)]
        return self._db.read(lambda conn: [row_to_record(r) for r in conn.execute(sql, params).fetchall()], "list")

    def vector_spaces(self) -> dict[str, int]:
        """How many vectors each space holds."""
        rows = self._db.read(lambda conn: conn.execute(_sql.VECTOR_SPACES).fetchall(), "spaces")
        return {str(space): int(n) for space, n in rows}

    def ids_without_vector(
        self, space: str, *, source: str | None = None, after: str | None = None, limit: int = 1000
    ) -> list[str]:
        """Ids of records embedded in ``source`` (any other space if None) but not in ``space``, past ``after``."""
        sql, params = _sql.missing_vector_ids(space, source=source, after=after, limit=limit, dialect="postgres")
        return self._db.read(
            lambda conn: [str(row[0]) for row in conn.execute(sql, params).fetchall()], "ids_without_vector"
        )

    def count(self, filters: Filters | None = None) -> int:
        """How many records ``filters`` allow."""
        where, params = _where(filters)
        sql = f"SELECT COUNT(*) FROM records r WHERE {where}"
        return int(self._db.read(lambda conn: conn.execute(sql, params).fetchone()[0], "count"))

    def search_text(self, query: str, top_k: int = 10, filters: Filters | None = None) -> list[ScoredRecord]:
        """Best ``ts_rank`` matches for the words of ``query`` (any word may match), best first.

        Arbitrary text is safe: each word is quoted, so tsquery operators in it are plain words.
        """
        words = _sql.query_words(query)
        if not words or top_k <= 0:
            return []
        where, params = _where(filters)
        return self._db.read(lambda conn: _pg_search.search_text(conn, words, top_k, where, params), "search_text")

    def _space_dim(self, conn: Any, space: str) -> int | None:
        """The space's dimension for a search: remembered after the first read (a dropped space is empty)."""
        known = self._dims.get(space)
        return known if known is not None else self._stored_dim(conn, space)

    def _stored_dim(self, conn: Any, space: str, *, lock: bool = False) -> int | None:
        sql = "SELECT dim FROM spaces WHERE space = %s" + (" FOR SHARE" if lock else "")
        row = conn.execute(sql, (space,)).fetchone()
        if row is None:
            self._dims.pop(space, None)
            return None
        known = self._dims[space] = int(row[0])
        return known

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
        selective filter still fills the result.
        """
        space = space or self.space
        filters = filters or ANY
        query = query_vector(query_vec)
        if top_k <= 0:
            return []
        where, params = _where(filters)

        def work(conn: Any) -> list[ScoredRecord]:
            dim = self._space_dim(conn, space)
            if dim is not None and query.shape[0] != dim:  # remembered from before another process re-made it?
                dim = self._stored_dim(conn, space)
            if dim is None:
                return []
            if query.shape[0] != dim:
                raise StoreError(f"query vector has {query.shape[0]} dimensions; space {space!r} holds {dim}-d")
            if _pg_search.is_small_scope(conn, filters, where, params, self.exact_scope_limit):
                return _pg_search.search_exact(conn, query, dim, space, top_k, where, params)
            return _pg_search.search_hnsw(conn, query, dim, space, top_k, where, params, ef_search=self.ef_search)

        return self._db.read(work, "search_vector")

"""The SQLite store every memory layer stands on: records, full-text search and vectors in one file.

One file keeps a memory portable and lets many processes share it: writes are serialised by
SQLite's lock (see ``_db``), full-text search is an FTS5 index kept in step by triggers, and vector
search is exact cosine over an in-memory matrix that follows the file's change log (see
``_vectors``).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt

from memwise._sqlite import Database
from memwise.exceptions import StoreError
from memwise.store import _jobs, _sql
from memwise.store._prepare import as_matrix, checked_batch, edited, query_vector
from memwise.store._vectors import VectorIndex
from memwise.store.base import ANY, Filters, Record, ScoredRecord

_CHUNK = 500
_JOBS_TABLE = (
    "CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, status TEXT NOT NULL, updated_at REAL NOT NULL, "
    "state TEXT NOT NULL)"
)
"""A server's jobs beside the records (:class:`memwise.store.base.JobLog`); older files gain it on open."""


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _log_changes(conn: sqlite3.Connection, ids: Iterable[str]) -> None:
    """Give each id the next change sequence numbers; we hold the write lock, so they are ordered."""
    ids = list(dict.fromkeys(ids))
    if not ids:
        return
    base = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()[0]
    conn.executemany(
        "INSERT INTO changes(record_id, seq) VALUES (?, ?) ON CONFLICT(record_id) DO UPDATE SET seq = excluded.seq",
        [(rid, base + i + 1) for i, rid in enumerate(ids)],
    )


class SQLiteStore:
    """Records with scope, full-text and vector search, safe for many threads and processes.

    Args:
        path: the database file (created with its parent folders when missing).
        space: the default vector space, normally the embedder's name: vectors from different
            models must never be compared, so each lives under its own space.
        busy_timeout_s: how long SQLite waits on another writer before the store backs off.
        retry_budget_s: how long a write keeps retrying under contention before raising StoreError.

    Methods are synchronous and short; async callers may run them in ``asyncio.to_thread``. Each
    thread gets its own connection. ``transaction()`` groups the writes of one thread; vector search
    sees committed data only.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        space: str = "default",
        busy_timeout_s: float = 10.0,
        retry_budget_s: float = 120.0,
    ) -> None:
        if str(path) in ("", ":memory:") or str(path).startswith("file:"):
            raise StoreError(f"SQLiteStore needs a file path (got {str(path)!r}); use a temporary file for tests")
        self.path = Path(path)
        self.space = space
        self._db = Database(self.path, label="store", busy_timeout_s=busy_timeout_s, retry_budget_s=retry_budget_s)
        self._indexes: dict[str, VectorIndex] = {}
        self._index_lock = threading.Lock()
        self._reader: sqlite3.Connection | None = None
        self._init_schema()

    # -- lifecycle ------------------------------------------------------------------------------

    def _init_schema(self) -> None:
        # The store versions its schema in its meta table (files predate user_version), so it migrates here.
        def create(c: sqlite3.Connection) -> None:
            _sql.migrate(c)
            for statement in _sql.statements(_sql.DDL):
                c.execute(statement)
            c.execute(_JOBS_TABLE)
            row = c.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is not None and int(row[0]) > _sql.SCHEMA_VERSION:
                raise StoreError(
                    f"store {self.path} has schema version {row[0]}; this memwise reads up to {_sql.SCHEMA_VERSION}"
                )
            c.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)", (str(_sql.SCHEMA_VERSION),)
            )

        self._db.write(create, "creating the schema")

    def close(self) -> None:
        """Close every connection this instance opened; the instance is unusable afterwards."""
        with self._index_lock:
            self._reader = None
            self._indexes.clear()
        self._db.close()

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def transaction(self) -> AbstractContextManager[None]:
        """Make every write inside the block (on this thread) one atomic unit.

        If the block raises, nothing it wrote is kept; a crash leaves nothing either. Other
        writers wait while it is open, so keep it short and do not await inside it (embed first,
        then write): a write from another asyncio task on the same thread raises StoreError.
        """
        return self._db.transaction()

    # -- writes ---------------------------------------------------------------------------------

    def add(
        self, records: Iterable[Record], vectors: npt.ArrayLike | None = None, *, space: str | None = None
    ) -> list[str]:
        """Insert records (and one vector per record, row-aligned) atomically; returns their ids.

        Re-adding an id with the same content is a no-op, so a retried ingest never duplicates;
        the same id with different content raises StoreError and writes nothing.
        """
        batch, hashes, order, mat = checked_batch(records, vectors)
        if not batch:
            return []
        space = space or self.space

        def work(conn: sqlite3.Connection) -> None:
            if mat is not None:
                self._check_dim(conn, space, mat.shape[1])
            ids = [batch[i].id for i in order]
            existing: dict[str, str] = {}
            for chunk in _chunks(ids):
                marks = ", ".join("?" * len(chunk))
                sql = f"SELECT id, content_hash FROM records WHERE id IN ({marks})"
                existing.update(conn.execute(sql, tuple(chunk)).fetchall())
            fresh = [i for i in order if batch[i].id not in existing]
            for i in order:
                rid = batch[i].id
                if rid in existing and existing[rid] != hashes[i]:
                    raise StoreError(f"add: record id {rid!r} already exists in {self.path} with different content")
            conn.executemany(
                f"INSERT INTO records({_sql.RECORD_COLUMNS}) VALUES ({_sql.RECORD_MARKS})",
                [_sql.record_params(batch[i], hashes[i]) for i in fresh],
            )
            changed = [batch[i].id for i in fresh]
            if mat is not None:
                # Records that existed already keep their vector; one that had none in this space gains it.
                had_vector: set[str] = set()
                old_ids = [rid for rid in ids if rid in existing]
                for chunk in _chunks(old_ids):
                    marks = ", ".join("?" * len(chunk))
                    sql = f"SELECT record_id FROM vectors WHERE space = ? AND record_id IN ({marks})"
                    had_vector.update(row[0] for row in conn.execute(sql, (space, *chunk)))
                gaining = [i for i in order if batch[i].id in existing and batch[i].id not in had_vector]
                conn.executemany(
                    "INSERT INTO vectors(record_id, space, dim, vec) VALUES (?, ?, ?, ?)",
                    [(batch[i].id, space, mat.shape[1], mat[i].tobytes()) for i in (*fresh, *gaining)],
                )
                changed.extend(batch[i].id for i in gaining)
            _log_changes(conn, changed)

        self._db.write(work, f"add of {len(batch)} records")
        return [record.id for record in batch]

    @staticmethod
    def _check_dim(conn: sqlite3.Connection, space: str, dim: int) -> None:
        row = conn.execute("SELECT dim FROM vectors WHERE space = ? LIMIT 1", (space,)).fetchone()
        if row is not None and row[0] != dim:
            raise StoreError(f"vector space {space!r} holds {row[0]}-d vectors; refusing {dim}-d ones")

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
        """Change a record's text, metadata (replaced whole) and/or vector; returns the new record.

        New text without a new ``index_text`` clears the old one, so full-text search never finds a
        record by words it no longer has.

        New text without a new vector drops the record's vectors in every space: a stale vector
        would keep ranking it by words it no longer has. With a vector, the other spaces' vectors
        are dropped for the same reason.
        """
        space = space or self.space
        vec = None if vector is None else as_matrix(vector, 1, f"update of {record_id}")[0]

        def work(conn: sqlite3.Connection) -> Record:
            current = self._fetch(conn, record_id)
            if current is None:
                raise StoreError(f"update: no record {record_id!r} in {self.path}")
            new, text_changed = edited(current, text=text, metadata=metadata, index_text=index_text)
            conn.execute(
                "UPDATE records SET text = ?, metadata = ?, content_hash = ?, index_text = ? WHERE id = ?",
                (new.text, _sql.dump_metadata(new), new.content_hash(), new.index_text, record_id),
            )
            if text_changed or vec is not None:
                conn.execute("DELETE FROM vectors WHERE record_id = ?", (record_id,))
            if vec is not None:
                self._check_dim(conn, space, vec.shape[0])
                conn.execute(
                    "INSERT INTO vectors(record_id, space, dim, vec) VALUES (?, ?, ?, ?)",
                    (record_id, space, vec.shape[0], vec.tobytes()),
                )
            _log_changes(conn, [record_id])
            return new

        return self._db.write(work, f"update of {record_id}")

    def delete(self, record_id: str) -> bool:
        """Remove a record and its vectors for good; False when there was none."""

        def work(conn: sqlite3.Connection) -> bool:
            gone = conn.execute("DELETE FROM records WHERE id = ?", (record_id,)).rowcount > 0
            if gone:
                _log_changes(conn, [record_id])
            return gone

        return self._db.write(work, f"delete of {record_id}")

    def invalidate(self, record_id: str, at: float | None = None) -> Record:
        """Mark a record as no longer true from ``at`` (default now), keeping it for history."""
        when = time.time() if at is None else at

        def work(conn: sqlite3.Connection) -> Record:
            cur = conn.execute("UPDATE records SET valid_to = ? WHERE id = ?", (when, record_id))
            if cur.rowcount == 0:
                raise StoreError(f"invalidate: no record {record_id!r} in {self.path}")
            _log_changes(conn, [record_id])
            record = self._fetch(conn, record_id)
            assert record is not None
            return record

        return self._db.write(work, f"invalidate of {record_id}")

    def drop_space(self, space: str) -> int:
        """Delete every vector of ``space`` and return how many went; records and other spaces stay.

        The records lose a vector, so each is logged as changed: any process's cached index of that
        space drops its rows on the next refresh, as it would after a delete.
        """

        def work(conn: sqlite3.Connection) -> int:
            ids = [str(row[0]) for row in conn.execute("SELECT record_id FROM vectors WHERE space = ?", (space,))]
            conn.execute("DELETE FROM vectors WHERE space = ?", (space,))
            _log_changes(conn, ids)
            return len(ids)

        return self._db.write(work, f"dropping vector space {space!r}")

    # -- jobs (JobLog) --------------------------------------------------------------------------

    def save_job(self, job_id: str, status: str, state: Mapping[str, Any]) -> None:
        """Insert or replace a server job's state (see :class:`memwise.store.base.JobLog`)."""
        _jobs.save_job(self._db, "sqlite", job_id, status, state)

    def load_job(self, job_id: str) -> dict[str, Any] | None:
        """A server job's last saved state, or None."""
        return _jobs.load_job(self._db, "sqlite", job_id)

    def prune_jobs(self, keep: int) -> int:
        """Forget finished jobs beyond the ``keep`` most recently saved."""
        return _jobs.prune_jobs(self._db, "sqlite", keep)

    # -- reads ----------------------------------------------------------------------------------

    @staticmethod
    def _fetch(conn: sqlite3.Connection, record_id: str) -> Record | None:
        row = conn.execute(f"SELECT {_sql.RECORD_COLUMNS} FROM records WHERE id = ?", (record_id,)).fetchone()
        return None if row is None else _sql.row_to_record(row)

    def get(self, record_id: str) -> Record | None:
        """The record with this id, or None."""
        return self._db.read(lambda conn: self._fetch(conn, record_id), f"get of {record_id}")

    def get_for_update(self, record_id: str) -> Record | None:
        """:meth:`get`; inside :meth:`transaction` the file's write lock already keeps other writers out."""
        return self.get(record_id)

    def get_many(self, ids: Iterable[str]) -> list[Record]:
        """The records with these ids, in the order asked; missing ids are skipped."""
        wanted = list(dict.fromkeys(ids))

        def work(conn: sqlite3.Connection) -> list[Record]:
            found: dict[str, Record] = {}
            for chunk in _chunks(wanted):
                marks = ", ".join("?" * len(chunk))
                sql = f"SELECT {_sql.RECORD_COLUMNS} FROM records WHERE id IN ({marks})"
                for row in conn.execute(sql, tuple(chunk)):
                    found[row[0]] = _sql.row_to_record(row)
            return [found[i] for i in wanted if i in found]

        return self._db.read(work, f"get_many of {len(wanted)} ids")

    def get_vector(self, record_id: str, *, space: str | None = None) -> npt.NDArray[np.float32] | None:
        """The stored (unit-norm) vector of a record in a space, or None."""
        space = space or self.space

        def work(conn: sqlite3.Connection) -> npt.NDArray[np.float32] | None:
            sql = "SELECT vec FROM vectors WHERE record_id = ? AND space = ?"
            row = conn.execute(sql, (record_id, space)).fetchone()
            return None if row is None else np.frombuffer(row[0], dtype=np.float32).copy()

        return self._db.read(work, f"get_vector of {record_id}")

    def list_records(self, filters: Filters | None = None, limit: int | None = None, offset: int = 0) -> list[Record]:
        """Records allowed by ``filters``, oldest first (by created_at, then insertion order)."""
        where, params = _sql.where_clause(filters or ANY, time.time())
        sql = f"SELECT {_sql.prefixed('r')} FROM records r WHERE {where} ORDER BY r.created_at, r.seq LIMIT ? OFFSET ?"
        params += [-1 if limit is None else max(limit, 0), max(offset, 0)]
        return self._db.read(lambda conn: [_sql.row_to_record(r) for r in conn.execute(sql, params)], "list")

    def vector_spaces(self) -> dict[str, int]:
        """How many vectors each space holds."""
        rows = self._db.read(lambda conn: conn.execute(_sql.VECTOR_SPACES).fetchall(), "spaces")
        return {str(space): int(n) for space, n in rows}

    def ids_without_vector(
        self, space: str, *, source: str | None = None, after: str | None = None, limit: int = 1000
    ) -> list[str]:
        """Ids of records embedded in ``source`` (any other space if None) but not in ``space``, past ``after``."""
        sql, params = _sql.missing_vector_ids(space, source=source, after=after, limit=limit)
        return self._db.read(lambda conn: [str(row[0]) for row in conn.execute(sql, params)], "ids_without_vector")

    def count(self, filters: Filters | None = None) -> int:
        """How many records ``filters`` allow."""
        where, params = _sql.where_clause(filters or ANY, time.time())
        sql = f"SELECT COUNT(*) FROM records r WHERE {where}"
        return int(self._db.read(lambda conn: conn.execute(sql, params).fetchone()[0], "count"))

    def search_text(self, query: str, top_k: int = 10, filters: Filters | None = None) -> list[ScoredRecord]:
        """Best bm25 matches for the words of ``query`` (any word may match), best first.

        Arbitrary text is safe here: FTS5 operators in it are treated as plain words.
        """
        match = _sql.fts_query(query)
        if match is None or top_k <= 0:
            return []
        where, params = _sql.where_clause(filters or ANY, time.time())
        sql = (
            f"SELECT {_sql.prefixed('r')}, bm25(records_fts) AS rank "
            "FROM records_fts JOIN records r ON r.seq = records_fts.rowid "
            f"WHERE records_fts MATCH ? AND {where} ORDER BY rank LIMIT ?"
        )
        args = [match, *params, top_k]

        def work(conn: sqlite3.Connection) -> list[ScoredRecord]:
            return [ScoredRecord(_sql.row_to_record(row), -float(row[-1])) for row in conn.execute(sql, args)]

        return self._db.read(work, "search_text")

    def search_vector(
        self,
        query_vec: npt.ArrayLike,
        top_k: int = 10,
        filters: Filters | None = None,
        *,
        space: str | None = None,
    ) -> list[ScoredRecord]:
        """The ``top_k`` records by exact cosine to ``query_vec`` among those ``filters`` allow."""
        space = space or self.space
        filters = filters or ANY
        query = query_vector(query_vec)
        index = self._index(space)
        now = time.time()
        hits = index.search(query, top_k, filters, now)
        by_id = {record.id: record for record in self.get_many(hit.id for hit in hits)}
        # Re-check the few hits: a record invalidated since the refresh must not slip through.
        return [
            ScoredRecord(by_id[hit.id], hit.score)
            for hit in hits
            if hit.id in by_id and filters.matches(by_id[hit.id], now)
        ]

    def _index(self, space: str) -> VectorIndex:
        """The space's vector index, brought up to date with every committed write."""
        with self._index_lock:
            if self._reader is None:
                self._reader = self._db.connect()
            index = self._indexes.get(space)
            if index is None:
                index = self._indexes[space] = VectorIndex(space)
            try:
                index.refresh(self._reader)
            except sqlite3.Error as exc:
                if self._reader.in_transaction:
                    self._reader.execute("ROLLBACK")
                raise StoreError(f"search_vector on {self.path}: cannot refresh the vector index: {exc}") from exc
            return index

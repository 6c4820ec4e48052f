"""In-memory exact-cosine index over one vector space of the store.

Reading a million blobs out of SQLite per query is far too slow, so each store instance keeps the
vectors of a space as one contiguous float32 matrix plus per-row scope arrays, and brings them up
to date incrementally from the `changes` table (see ``_sql.DDL``) before every search. Filters
become boolean masks over those arrays, so the hard-filter guarantee costs no Python loop per
record.
"""

from __future__ import annotations

import math
import sqlite3
import threading
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from memwise.exceptions import StoreError
from memwise.store.base import Filters

# Past this many changed ids (or a quarter of the index, if more), a full scan beats chunked IN-queries.
_FULL_RELOAD_AFTER = 20_000
_CHUNK = 500
_RELOAD_SLICE = 50_000
# Filters that keep at most this share of rows are scored on a gathered subset.
_GATHER_SHARE = 0.25
_GATHER_ROWS = 65_536

_ROW_SQL = (
    "SELECT r.id, r.user_id, r.agent_id, r.run_id, r.kind, r.created_at, r.ts, r.valid_to, v.dim, v.vec "
    "FROM records r JOIN vectors v ON v.record_id = r.id AND v.space = ?"
)

_Row = tuple[str, str | None, str | None, str | None, str, float, float | None, float | None, int, bytes]


@dataclass(frozen=True, slots=True)
class Hit:
    """A candidate from the index: record id and cosine."""

    id: str
    score: float


class _Codes:
    """Dictionary encoding of one string column, so a scope filter is an integer comparison."""

    def __init__(self) -> None:
        self._codes: dict[str, int] = {}

    def encode(self, value: str | None) -> int:
        if value is None:
            return -1
        code = self._codes.get(value)
        if code is None:
            code = self._codes[value] = len(self._codes)
        return code

    def lookup(self, value: str) -> int | None:
        return self._codes.get(value)


class VectorIndex:
    """Exact cosine search over the vectors of one space, kept in sync with the database.

    Thread-safe (one lock around refresh and search). ``refresh`` must be given a connection that is
    never inside a write transaction, so the cache only ever reflects committed data: a rolled-back
    write would otherwise leave rows behind under sequence numbers that a later commit reuses.
    """

    def __init__(self, space: str) -> None:
        self.space = space
        self.dim: int | None = None
        self._seen_seq = 0
        self._lock = threading.Lock()
        self._reset(0)

    def _reset(self, capacity: int) -> None:
        self._n = 0
        self._dead = 0
        self._pos: dict[str, int] = {}
        self._ids: list[str] = []
        cap = capacity + capacity // 4 + 1024
        # Only rows below _n are ever read, so the buffers need no initial fill.
        self._mat = np.empty((cap, self.dim or 1), dtype=np.float32)
        self._alive = np.empty(cap, dtype=bool)
        self._scope = np.empty((cap, 4), dtype=np.int32)  # user, agent, run, kind codes
        self._times = np.empty((cap, 3), dtype=np.float64)  # created_at, ts, valid_to (NaN = none)
        self._dicts = [_Codes(), _Codes(), _Codes(), _Codes()]

    def __len__(self) -> int:
        return self._n - self._dead

    # -- synchronisation ------------------------------------------------------------------------

    def refresh(self, conn: sqlite3.Connection) -> None:
        """Apply every change committed since the last refresh; cheap (one index probe) when none."""
        with self._lock:
            latest = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()[0]
            if latest == self._seen_seq:
                return
            if latest < self._seen_seq or latest - self._seen_seq > max(_FULL_RELOAD_AFTER, self._n // 4):
                self._full_reload(conn)
                return
            conn.execute("BEGIN")
            try:
                changed = conn.execute(
                    "SELECT record_id, seq FROM changes WHERE seq > ? ORDER BY seq", (self._seen_seq,)
                ).fetchall()
                ids = list(dict.fromkeys(row[0] for row in changed))
                rows: list[_Row] = []
                for start in range(0, len(ids), _CHUNK):
                    chunk = ids[start : start + _CHUNK]
                    marks = ", ".join("?" * len(chunk))
                    rows.extend(conn.execute(f"{_ROW_SQL} WHERE r.id IN ({marks})", (self.space, *chunk)))
            finally:
                conn.execute("COMMIT")
            found = {row[0] for row in rows}
            for gone in ids:
                if gone not in found:
                    self._remove(gone)
            self._upsert(rows)
            if changed:
                self._seen_seq = max(self._seen_seq, changed[-1][1])
            self._maybe_compact()

    def _full_reload(self, conn: sqlite3.Connection) -> None:
        """Rebuild from a scan, streamed in slices so peak memory stays near the matrix itself."""
        conn.execute("BEGIN")
        try:
            latest = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()[0]
            total = conn.execute("SELECT COUNT(*) FROM vectors WHERE space = ?", (self.space,)).fetchone()[0]
            self._reset(total)
            cursor = conn.execute(_ROW_SQL, (self.space,))
            while rows := cursor.fetchmany(_RELOAD_SLICE):
                self._upsert(rows)
        except BaseException:
            self._reset(0)  # empty and at sequence 0 is a consistent state: the next refresh loads all
            self._seen_seq = 0
            raise
        finally:
            conn.execute("COMMIT")
        self._seen_seq = latest

    def _grow(self, needed: int) -> None:
        """Make room for ``needed`` rows; grows by half so a 1M-row matrix does not double at once."""
        cap = self._alive.shape[0]
        if needed <= cap:
            return
        new_cap = max(needed, cap + cap // 2)
        for name in ("_mat", "_alive", "_scope", "_times"):
            old = getattr(self, name)
            new = np.empty((new_cap, *old.shape[1:]), dtype=old.dtype)  # rows past _n are never read
            new[: self._n] = old[: self._n]
            setattr(self, name, new)

    def _upsert(self, rows: list[_Row]) -> None:
        """Write rows into their slots (new ids get fresh ones), vectorised over the batch."""
        if not rows:
            return
        if self.dim is None:
            self.dim = int(rows[0][8])
            self._mat = np.empty((self._alive.shape[0], self.dim), dtype=np.float32)
        for row in rows:
            if row[8] != self.dim or len(row[9]) != 4 * self.dim:
                raise StoreError(
                    f"vector space {self.space!r} holds {self.dim}-d vectors but record {row[0]} has "
                    f"dim {row[8]} and a {len(row[9])}-byte blob"
                )
        fresh = sum(1 for row in rows if row[0] not in self._pos)
        self._grow(self._n + fresh)
        positions = np.empty(len(rows), dtype=np.int64)
        for i, row in enumerate(rows):
            pos = self._pos.get(row[0])
            if pos is None:
                pos = self._pos[row[0]] = self._n
                self._ids.append(row[0])
                self._n += 1
            positions[i] = pos
        user, agent, run, kind = self._dicts
        self._mat[positions] = np.frombuffer(b"".join(row[9] for row in rows), dtype=np.float32).reshape(-1, self.dim)
        self._alive[positions] = True
        self._scope[positions] = np.array(
            [(user.encode(r[1]), agent.encode(r[2]), run.encode(r[3]), kind.encode(r[4])) for r in rows],
            dtype=np.int32,
        )
        nan = math.nan
        self._times[positions] = np.array(
            [(r[5], nan if r[6] is None else r[6], nan if r[7] is None else r[7]) for r in rows], dtype=np.float64
        )

    def _remove(self, rid: str) -> None:
        pos = self._pos.pop(rid, None)
        if pos is None:
            return
        self._alive[pos] = False
        self._mat[pos] = 0.0
        self._ids[pos] = ""
        self._dead += 1

    def _maybe_compact(self) -> None:
        """Drop dead rows once they are a quarter of the matrix, so scans do not pay for them."""
        if self._dead < max(1024, self._n // 4):
            return
        keep = np.flatnonzero(self._alive[: self._n])
        self._mat = np.ascontiguousarray(self._mat[keep])
        self._alive = self._alive[keep].copy()
        self._scope = self._scope[keep].copy()
        self._times = self._times[keep].copy()
        self._ids = [self._ids[i] for i in keep]
        self._pos = {rid: i for i, rid in enumerate(self._ids)}
        self._n = len(self._ids)
        self._dead = 0

    # -- search ---------------------------------------------------------------------------------

    def _mask(self, filters: Filters, now: float) -> npt.NDArray[np.bool_] | None:
        """Rows allowed by ``filters``; None when a scope value was never seen (nothing matches)."""
        n = self._n
        mask = self._alive[:n].copy()
        for col, name in enumerate(("user_id", "agent_id", "run_id")):
            value = getattr(filters, name)
            if value is not None:
                code = self._dicts[col].lookup(value)
                if code is None:
                    return None
                mask &= self._scope[:n, col] == code
        kinds = filters.kinds
        if kinds is not None:
            codes = [c for c in (self._dicts[3].lookup(k) for k in kinds) if c is not None]
            if not codes:
                return None
            mask &= np.isin(self._scope[:n, 3], codes)
        if filters.since is not None or filters.until is not None:
            values = self._times[:n, 0 if filters.time_field == "created_at" else 1]
            with np.errstate(invalid="ignore"):
                if filters.since is not None:
                    mask &= values >= filters.since
                if filters.until is not None:
                    mask &= values < filters.until
        if not filters.include_invalid:
            valid_to = self._times[:n, 2]
            with np.errstate(invalid="ignore"):
                mask &= np.isnan(valid_to) | (valid_to > now)
        return mask

    def search(self, query: npt.NDArray[np.float32], top_k: int, filters: Filters, now: float) -> list[Hit]:
        """The ``top_k`` rows by cosine among those ``filters`` allow, best first."""
        with self._lock:
            if top_k <= 0 or self._n == 0 or self.dim is None:
                return []
            if query.shape != (self.dim,):
                raise StoreError(f"query vector has shape {query.shape}; space {self.space!r} holds {self.dim}-d")
            mask = self._mask(filters, now)
            if mask is None:
                return []
            if mask.all():  # the common unfiltered case: no index list, no gather
                rows = None
                scores = self._mat[: self._n] @ query
            else:
                rows = np.flatnonzero(mask)
                if rows.size == 0:
                    return []
                if rows.size <= _GATHER_SHARE * self._n:
                    scores = np.empty(rows.size, dtype=np.float32)
                    for start in range(0, rows.size, _GATHER_ROWS):
                        part = rows[start : start + _GATHER_ROWS]
                        scores[start : start + part.size] = self._mat[part] @ query
                else:
                    scores = (self._mat[: self._n] @ query)[rows]
            k = min(top_k, scores.size)
            best = np.argpartition(scores, scores.size - k)[scores.size - k :] if k < scores.size else np.arange(k)
            best = best[np.argsort(-scores[best], kind="stable")]
            return [Hit(self._ids[i if rows is None else rows[i]], float(scores[i])) for i in best]

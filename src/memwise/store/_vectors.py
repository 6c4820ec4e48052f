"""In-memory exact-cosine index over one vector space of the store.

Reading a million blobs out of SQLite per query is far too slow, so each store instance keeps the
vectors of a space as one contiguous float32 matrix plus per-row scope arrays, and brings them up
to date incrementally from the `changes` table (see ``_sql.DDL``) before every search.

Search is exact (the float32 dot product of every allowed row, as brute force computes it) and
touches as little else as it can:

* A scope filter (user, agent, run, kind) is answered from per-value row lists, so a query for one
  user among a thousand scores that user's rows only, instead of building a mask over every row.
  The remaining filters are checked on that subset.
* An unfiltered or broadly filtered query is one matrix-vector product into a reused buffer. Its
  top k come from a score threshold that enough rows reach (found from per-block maxima); filters,
  deletions and validity are then checked on the few rows above it, never as a full-length mask.

Lower-precision pre-scoring (an int8 or bfloat16 copy scanned first, then the candidates re-scored
exactly) was measured on the target machine and left out: numpy has no int8 or 16-bit BLAS, and
widening those types to float32 (3-5 G elements/s for int8, 0.4 for float16, bit tricks for
bfloat16 no better) costs more than the float32 product it would replace, which runs at memory
speed.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from memwise.exceptions import StoreError
from memwise.store.base import SCOPE_COLUMNS, Filters, Term
from memwise.store.filters import matches as match_metadata

# Past this many changed ids (or a quarter of the index, if more), a full scan beats chunked IN-queries.
_FULL_RELOAD_AFTER = 20_000
_CHUNK = 500
_RELOAD_SLICE = 50_000
# Filters whose row lists keep at most this share of rows are scored on a gathered subset; above it,
# one product over the whole matrix is cheaper than copying the rows out.
_GATHER_SHARE = 0.25
# Rows copied per gather step: 6 MB at 384-d, so the copy is still in cache when it is multiplied.
_GATHER_ROWS = 4096
# Subsets up to this many rows are scored without BLAS threads (see _score_rows).
_SINGLE_THREAD_ROWS = 4096
# Block length for the top-k threshold: one maximum per block; blocks of scores stay in L1.
_BLOCK = 256

_COLUMNS = SCOPE_COLUMNS
_KIND = 3
_CREATED, _TS, _VALID_TO = 0, 1, 2
# Where each record column a filter term names lives: a row of dictionary codes or a row of times.
_CODED = {name: col for col, name in enumerate((*SCOPE_COLUMNS, "kind"))}
_TIMED = {"created_at": _CREATED, "ts": _TS, "valid_to": _VALID_TO}

_ROW_SQL = (
    "SELECT r.id, r.user_id, r.agent_id, r.run_id, r.kind, r.created_at, r.ts, r.valid_to, v.dim, v.vec, r.metadata "
    "FROM records r JOIN vectors v ON v.record_id = r.id AND v.space = ?"
)

_Row = tuple[str, str | None, str | None, str | None, str, float, float | None, float | None, int, bytes, str]
_Ints = npt.NDArray[np.signedinteger[Any]]  # row positions: int32 in row lists, int64 elsewhere
_Floats = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Hit:
    """A candidate from the index: record id and cosine."""

    id: str
    score: float


class _Codes:
    """Dictionary encoding of one string column, so a scope filter is an integer comparison.

    None (no scope) is stored as -1 in the dictionary itself, so encoding a column with many
    missing values never leaves the fast path.
    """

    def __init__(self) -> None:
        self._codes: dict[str | None, int] = {None: -1}

    def encode(self, value: str | None) -> int:
        code = self._codes.get(value)
        if code is None:
            code = self._codes[value] = len(self._codes) - 1
        return code

    def encode_many(self, values: tuple[str | None, ...]) -> npt.NDArray[np.int32]:
        """Codes of a column of values; new values get codes first, then one C-level pass maps all."""
        for value in set(values).difference(self._codes):
            self.encode(value)
        return np.fromiter(map(self._codes.__getitem__, values), dtype=np.int32, count=len(values))

    def lookup(self, value: str) -> int | None:
        return self._codes.get(value)

    def __len__(self) -> int:
        return len(self._codes) - 1


class _RowList:
    """The matrix rows holding one scope value, ascending; grows by half like the matrix does.

    Deleted rows stay listed until the next compaction (search checks ``alive`` on the subset), so
    a delete costs nothing here.
    """

    __slots__ = ("_rows", "size")

    def __init__(self, rows: _Ints) -> None:
        self._rows = rows.astype(np.int32)  # half the bytes of int64; a store stays far below 2**31 rows
        self.size = rows.size

    def extend(self, rows: _Ints) -> None:
        end = self.size + rows.size
        if end > self._rows.size:
            grown = np.empty(max(end, self._rows.size + self._rows.size // 2 + 16), dtype=np.int32)
            grown[: self.size] = self._rows[: self.size]
            self._rows = grown
        self._rows[self.size : end] = rows
        self.size = end

    def view(self) -> _Ints:
        return self._rows[: self.size]


def _group(codes: npt.NDArray[np.int32], positions: _Ints) -> list[tuple[int, _Ints]]:
    """(code, ascending positions) for each scope value in a batch, skipping -1 (no value)."""
    if codes.size <= 8:  # the usual incremental refresh: a handful of rows, not worth sorting
        groups: dict[int, list[int]] = {}
        for code, pos in zip(codes.tolist(), positions.tolist(), strict=True):
            if code >= 0:
                groups.setdefault(code, []).append(pos)
        return [(code, np.array(rows, dtype=np.int64)) for code, rows in groups.items()]
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    cuts = np.flatnonzero(sorted_codes[1:] != sorted_codes[:-1]) + 1
    starts = np.concatenate(([0], cuts))
    ends = np.concatenate((cuts, [codes.size]))
    sorted_positions = positions[order]
    return [
        (int(sorted_codes[a]), np.sort(sorted_positions[a:b]))
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True)
        if sorted_codes[a] >= 0
    ]


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
        # Metadata JSON per row (None for '{}'), parsed only for the rows a metadata filter must check.
        self._meta: list[str | None] = []
        cap = capacity + capacity // 4 + 1024
        # Only rows below _n are ever read, so the buffers need no initial fill. Scope and time
        # columns are stored column-major so that a full-length filter reads contiguous memory.
        self._mat = np.empty((cap, self.dim or 1), dtype=np.float32)
        self._alive = np.empty(cap, dtype=bool)
        self._scope = np.empty((4, cap), dtype=np.int32)  # user, agent, run, kind codes
        self._times = np.empty((3, cap), dtype=np.float64)  # created_at, ts, valid_to (NaN = none)
        self._dicts = [_Codes(), _Codes(), _Codes(), _Codes()]
        self._lists: list[dict[int, _RowList]] = [{}, {}, {}, {}]
        self._lists_stale = False
        # Per-query scratch, reused so that a search allocates nothing the length of the matrix.
        self._scores = np.empty(0, dtype=np.float32)
        self._flags = np.empty(0, dtype=bool)
        self._gather = np.empty((0, 0), dtype=np.float32)

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
            if self.dim is not None and any(row[8] != self.dim for row in rows):
                # Another process dropped the space and filled it again at another dimension, maybe under
                # the same ids: rows of the old dimension can still be here, so rebuild the space whole.
                self._full_reload(conn)
                return
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
                self._upsert(rows, list_rows=False)
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
        n = self._n
        mat = np.empty((new_cap, self._mat.shape[1]), dtype=np.float32)  # rows past _n are never read
        mat[:n] = self._mat[:n]
        alive = np.empty(new_cap, dtype=bool)
        alive[:n] = self._alive[:n]
        scope = np.empty((4, new_cap), dtype=np.int32)
        scope[:, :n] = self._scope[:, :n]
        times = np.empty((3, new_cap), dtype=np.float64)
        times[:, :n] = self._times[:, :n]
        self._mat, self._alive, self._scope, self._times = mat, alive, scope, times

    def _upsert(self, rows: list[_Row], *, list_rows: bool = True) -> None:
        """Write rows into their slots (new ids get fresh ones), vectorised over the batch.

        Works column by column (a full reload passes a million rows through here), so the per-row
        Python work is a few C-level passes rather than a loop body per row. ``list_rows=False``
        leaves the row lists to be rebuilt in one pass, which is cheaper than extending them slice
        by slice during a reload.
        """
        if not rows:
            return
        ids, users, agents, runs, kinds, created, ts, valid_to, dims, blobs, metas = zip(*rows, strict=True)
        if self.dim is not None and len(self) == 0 and int(dims[0]) != self.dim:
            # Every vector of the space went (a dropped space); its next first vector fixes the dimension anew.
            self.dim = None
            self._reset(0)
        if self.dim is None:
            self.dim = int(dims[0])
            self._mat = np.empty((self._alive.shape[0], self.dim), dtype=np.float32)
        dim = self.dim
        width = 4 * dim
        if any(d != dim for d in dims) or any(len(blob) != width for blob in blobs):
            bad = next(r for r in rows if r[8] != dim or len(r[9]) != width)
            raise StoreError(
                f"vector space {self.space!r} holds {dim}-d vectors but record {bad[0]} has "
                f"dim {bad[8]} and a {len(bad[9])}-byte blob"
            )
        pos_of = self._pos
        first_fresh = self._n
        bulk = pos_of.keys().isdisjoint(ids) and len(set(ids)) == len(ids)  # all new: the reload case
        if bulk:
            fresh: list[str] = list(ids)
            positions = np.arange(first_fresh, first_fresh + len(ids), dtype=np.int64)
        else:
            fresh = list(dict.fromkeys(rid for rid in ids if rid not in pos_of))
            positions = np.empty(0, dtype=np.int64)
        self._grow(first_fresh + len(fresh))
        pos_of.update(zip(fresh, range(first_fresh, first_fresh + len(fresh)), strict=True))
        self._ids.extend(fresh)
        self._meta.extend([None] * len(fresh))
        self._n += len(fresh)
        if positions.size != len(ids):
            positions = np.fromiter(map(pos_of.__getitem__, ids), dtype=np.int64, count=len(ids))
        meta = self._meta
        for pos, text in zip(positions.tolist(), metas, strict=True):
            meta[pos] = None if text == "{}" else text
        user, agent, run, kind = self._dicts
        codes = np.stack(
            [user.encode_many(users), agent.encode_many(agents), run.encode_many(runs), kind.encode_many(kinds)]
        )
        times = np.array((created, ts, valid_to), dtype=np.float64)  # None becomes NaN
        old = positions < first_fresh
        if old.any() and not np.array_equal(self._scope[:, positions[old]], codes[:, old]):
            self._lists_stale = True  # a row changed scope: rebuild the row lists before the next search
        if bulk:  # rows first_fresh onwards, in order: copy each blob straight in, skipping a joined copy
            target = self._mat[first_fresh : first_fresh + len(ids)].data.cast("B")
            for i, blob in enumerate(blobs):
                target[i * width : (i + 1) * width] = blob
        else:
            self._mat[positions] = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(-1, dim)
        self._alive[positions] = True
        self._scope[:, positions] = codes
        self._times[:, positions] = times
        if not list_rows:
            self._lists_stale = True
        if not self._lists_stale:
            new = ~old
            for col in range(4):
                lists = self._lists[col]
                for code, members in _group(codes[col, new], positions[new]):
                    row_list = lists.get(code)
                    if row_list is None:
                        lists[code] = _RowList(members)
                    else:
                        row_list.extend(members)

    def _remove(self, rid: str) -> None:
        pos = self._pos.pop(rid, None)
        if pos is None:
            return
        self._alive[pos] = False
        self._mat[pos] = 0.0
        self._ids[pos] = ""
        self._meta[pos] = None
        self._dead += 1

    def _maybe_compact(self) -> None:
        """Drop dead rows once they are a quarter of the matrix, so scans do not pay for them."""
        if self._dead < max(1024, self._n // 4):
            return
        keep = np.flatnonzero(self._alive[: self._n])
        self._mat = np.ascontiguousarray(self._mat[keep])
        self._alive = self._alive[keep].copy()
        self._scope = np.ascontiguousarray(self._scope[:, keep])
        self._times = np.ascontiguousarray(self._times[:, keep])
        self._ids = [self._ids[i] for i in keep]
        self._meta = [self._meta[i] for i in keep]
        self._pos = {rid: i for i, rid in enumerate(self._ids)}
        self._n = len(self._ids)
        self._dead = 0
        self._lists_stale = True
        self._scores = np.empty(0, dtype=np.float32)
        self._flags = np.empty(0, dtype=bool)

    def _rebuild_lists(self) -> None:
        """Row lists from the scope columns, after a compaction moved rows or a row changed scope."""
        positions = np.arange(self._n, dtype=np.int64)
        self._lists = [
            {code: _RowList(members) for code, members in _group(self._scope[col, : self._n], positions)}
            for col in range(4)
        ]
        self._lists_stale = False

    # -- search ---------------------------------------------------------------------------------

    def _subset(self, filters: Filters) -> tuple[_Ints | None, float]:
        """Rows of the most selective scope filter, if one keeps few enough rows to gather.

        Returns (rows, share): an empty array when a filter value was never seen (nothing can
        match); None when the query should scan the whole matrix instead, with the share of rows
        the row lists say may pass (1.0 when they say nothing), which sizes the scan's first try.
        """
        none = np.empty(0, dtype=np.int64)
        best: _RowList | None = None
        for col, name in enumerate(_COLUMNS):
            value = getattr(filters, name)
            if value is None:
                continue
            code = self._dicts[col].lookup(value)
            found = None if code is None else self._lists[col].get(code)
            if found is None:
                return none, 0.0
            if best is None or found.size < best.size:
                best = found
        n = max(self._n, 1)
        limit = _GATHER_SHARE * n
        kinds = filters.kinds
        if kinds is not None:
            codes = {c for c in (self._dicts[_KIND].lookup(k) for k in kinds) if c is not None}
            lists = [self._lists[_KIND][c] for c in codes if c in self._lists[_KIND]]
            if not lists:
                return none, 0.0
            total = sum(found.size for found in lists)
            if best is None or total < best.size:
                if total > limit:
                    return None, total / n
                if len(lists) == 1:
                    return lists[0].view(), total / n
                return np.sort(np.concatenate([found.view() for found in lists])), total / n
        if best is None:
            return None, 1.0
        if best.size > limit:
            return None, best.size / n
        return best.view(), best.size / n

    def _allowed(self, rows: _Ints, filters: Filters, now: float) -> _Ints:
        """The rows of ``rows`` that are alive and that every filter allows, in the same order.

        The one place filters are applied: to a scope's row list, or to the candidates of a scan. The
        conditions are :meth:`Filters.terms`, the same list the SQL renderings and ``Filters.matches`` walk.
        """
        keep = self._alive[rows]
        with np.errstate(invalid="ignore"):
            for term in filters.terms(now):
                keep &= self._term_mask(term, rows)
        allowed = rows[keep]
        meta_filter = filters.meta
        if meta_filter is not None and allowed.size:
            # Last, on what the cheap checks left: the same predicate the SQL renderings follow.
            meta = self._meta
            ok = [match_metadata(meta_filter, json.loads(meta[pos]) if meta[pos] else {}) for pos in allowed.tolist()]
            allowed = allowed[np.fromiter(ok, dtype=bool, count=len(ok))]
        return allowed

    def _term_mask(self, term: Term, rows: _Ints) -> npt.NDArray[np.bool_]:
        """One term over the listed rows: scope columns compare dictionary codes, times compare floats (NaN = unset)."""
        if term.column in _CODED:
            col = _CODED[term.column]
            codes = self._scope[col, rows]
            if term.op == "eq":
                return codes == self._dicts[col].lookup(term.value)
            if term.op == "in":
                return self._code_table(col, term.value)[codes]
        elif term.column in _TIMED or term.column == "event":
            values = self._time_values(term.column, rows)
            if term.op == "ge":
                return values >= term.value
            if term.op == "lt":
                return values < term.value
            if term.op == "unset_or_gt":
                return np.isnan(values) | (values > term.value)
        raise StoreError(f"the vector index cannot apply {term.op!r} to {term.column!r}; extend _term_mask")

    def _time_values(self, column: str, rows: _Ints) -> _Floats:
        """A time column over the listed rows; ``event`` is ts where set, else created_at (see TimeField)."""
        if column != "event":
            return self._times[_TIMED[column], rows]
        ts = self._times[_TS, rows]
        return np.where(np.isnan(ts), self._times[_CREATED, rows], ts)

    def _code_table(self, col: int, values: tuple[str, ...]) -> npt.NDArray[np.bool_]:
        """Allowed flags indexed by code (the last entry, read for code -1, stays False).

        A table lookup per row is a single gather, where ``np.isin`` would sort or compare per value.
        """
        codes = self._dicts[col]
        table = np.zeros(len(codes) + 1, dtype=bool)
        for value in values:
            code = codes.lookup(value)
            if code is not None:
                table[code] = True
        return table

    def _score_rows(self, rows: _Ints, query: _Floats) -> _Floats:
        """Exact scores of the listed rows, which are ascending: a view when they are one run, else gathered.

        Up to _SINGLE_THREAD_ROWS rows are scored by numpy's own single-threaded loop: BLAS splits a
        1000-row product over two threads, and on a loaded machine waking the second one costs
        milliseconds (p95 of a one-user search 5 ms, against 0.7 ms single-threaded). Both are the
        same float32 dot products, summed in a different order, so scores agree to about 1e-7.
        """
        small = rows.size <= _SINGLE_THREAD_ROWS
        if rows[-1] - rows[0] + 1 == rows.size:  # ascending and distinct, so this means contiguous
            block = self._mat[rows[0] : rows[-1] + 1]
            return np.einsum("ij,j->i", block, query) if small else block @ query
        dim = self._mat.shape[1]
        if self._gather.shape[1] != dim:
            self._gather = np.empty((_GATHER_ROWS, dim), dtype=np.float32)
        scores = np.empty(rows.size, dtype=np.float32)
        for start in range(0, rows.size, _GATHER_ROWS):
            part = rows[start : start + _GATHER_ROWS]
            block = self._gather[: part.size]
            np.take(self._mat, part, axis=0, out=block, mode="clip")  # clip: no buffered copy; rows are valid
            if small:
                np.einsum("ij,j->i", block, query, out=scores[start : start + part.size])
            else:
                np.matmul(block, query, out=scores[start : start + part.size])
        return scores

    def _scan(self, query: _Floats, top_k: int, filters: Filters, now: float, share: float) -> tuple[_Ints, _Floats]:
        """Allowed rows that can hold the top ``top_k`` after scoring every row, and their scores.

        Filters are checked on candidates only, never as a mask over every row: if ``want`` blocks
        have their maximum at or above a score t, at least ``want`` rows reach t, and if ``top_k``
        of the rows at or above t are allowed, no allowed row below t can be in the top k. ``want``
        starts at twice what the filters' share predicts and grows until enough rows pass; at worst
        every row is a candidate.
        """
        n = self._n
        if self._scores.size < n:
            cap = self._alive.shape[0]
            self._scores = np.empty(cap, dtype=np.float32)
            self._flags = np.empty(cap, dtype=bool)
        scores, flags = self._scores[:n], self._flags[:n]
        np.matmul(self._mat[:n], query, out=scores)
        blocks = n // _BLOCK
        maxima = np.sort(scores[: blocks * _BLOCK].reshape(blocks, _BLOCK).max(axis=1))[::-1]
        want = math.ceil(2 * top_k / max(share, 1e-9))
        while True:
            if want < blocks:
                np.greater_equal(scores, maxima[want - 1], out=flags)
                candidates = np.flatnonzero(flags)
            else:
                candidates = np.arange(n, dtype=np.int64)
            rows = self._allowed(candidates, filters, now)
            if rows.size >= top_k or want >= blocks:
                return rows, scores[rows]
            want *= 8

    @staticmethod
    def _best(scores: _Floats, k: int) -> _Ints:
        """Indices of the ``k`` best scores, best first; equal scores go by lower index."""
        m = scores.size
        if m > k:
            kth = scores[np.argpartition(scores, m - k)[m - k]]
            above = np.flatnonzero(scores > kth)
            equal = np.flatnonzero(scores == kth)[: k - above.size]  # ascending: the lowest indices
            chosen = np.concatenate((above, equal))
        else:
            chosen = np.arange(m)
        return chosen[np.lexsort((chosen, -scores[chosen]))]

    def search(self, query: _Floats, top_k: int, filters: Filters, now: float) -> list[Hit]:
        """The ``top_k`` rows by cosine among those ``filters`` allow, best first."""
        with self._lock:
            if top_k <= 0 or self._n == 0 or self.dim is None:
                return []
            if query.shape != (self.dim,):
                raise StoreError(f"query vector has shape {query.shape}; space {self.space!r} holds {self.dim}-d")
            query = np.ascontiguousarray(query, dtype=np.float32)
            if self._lists_stale:
                self._rebuild_lists()
            rows, share = self._subset(filters)
            if rows is None:
                rows, scores = self._scan(query, top_k, filters, now, share)
            else:
                if rows.size:
                    rows = self._allowed(rows, filters, now)
                if rows.size == 0:
                    return []
                scores = self._score_rows(rows, query)
            best = self._best(scores, top_k)
            ids = self._ids
            return [Hit(ids[pos], score) for pos, score in zip(rows[best].tolist(), scores[best].tolist(), strict=True)]

"""The vector index's fast paths return exactly the brute-force top k (ties aside).

The index answers a scope filter from row lists, scans everything else with a block-maximum
threshold and checks filters on candidates only; each shortcut must give the same ids as scoring
every allowed row in float32 and sorting. Block and gather sizes are shrunk so that small data
exercises the paths a million rows would take.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from memwise.store import _vectors
from memwise.store._vectors import Hit, VectorIndex
from memwise.store.base import Filters, Record
from memwise.store.sqlite import SQLiteStore

DIM = 24
NOW = 10_000.0
KINDS = ("turn", "fact", "rule")


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of 8 rows and gathers of 64, so the threshold and slicing logic run on small data."""
    monkeypatch.setattr(_vectors, "_BLOCK", 8)
    monkeypatch.setattr(_vectors, "_GATHER_ROWS", 64)


def unit(rows: npt.ArrayLike) -> npt.NDArray[np.float32]:
    arr = np.asarray(rows, dtype=np.float32)
    return (arr / np.linalg.norm(arr, axis=-1, keepdims=True)).astype(np.float32)


class Data:
    """Rows for an index, and the scope arrays brute force filters with."""

    def __init__(self, vecs: npt.NDArray[np.float32], rng: np.random.Generator) -> None:
        n = vecs.shape[0]
        self.vecs = vecs
        self.user = rng.integers(0, 6, n)
        self.agent = rng.integers(0, 2, n)
        self.kind = rng.choice(3, size=n, p=(0.6, 0.37, 0.03))
        self.created = 1000.0 + np.arange(n, dtype=np.float64)
        self.ts = np.where(rng.random(n) < 0.2, np.nan, self.created + 5.0)
        self.valid_to = np.where(rng.random(n) < 0.05, NOW - 1.0, np.nan)
        self.valid_to[rng.random(n) < 0.02] = NOW + 100.0  # ends later: still valid now
        self.alive = np.ones(n, dtype=bool)

    def rows(self, which: range) -> list[_vectors._Row]:
        def opt(x: float) -> float | None:
            return None if np.isnan(x) else float(x)

        return [
            (
                f"r{i}",
                f"u{self.user[i]}",
                f"a{self.agent[i]}",
                None,
                KINDS[self.kind[i]],
                float(self.created[i]),
                opt(self.ts[i]),
                opt(self.valid_to[i]),
                DIM,
                self.vecs[i].tobytes(),
                "{}",
            )
            for i in which
        ]

    def allowed(self, f: Filters) -> npt.NDArray[np.bool_]:
        mask = self.alive.copy()
        if f.user_id is not None:
            mask &= np.array([f"u{u}" == f.user_id for u in self.user])
        if f.agent_id is not None:
            mask &= np.array([f"a{a}" == f.agent_id for a in self.agent])
        if f.run_id is not None:
            mask &= False
        if f.kinds is not None:
            mask &= np.isin([KINDS[k] for k in self.kind], f.kinds)
        values = self.created if f.time_field == "created_at" else self.ts
        with np.errstate(invalid="ignore"):
            if f.since is not None:
                mask &= values >= f.since
            if f.until is not None:
                mask &= values < f.until
            if not f.include_invalid:
                mask &= np.isnan(self.valid_to) | (self.valid_to > NOW)
        return mask


def brute(data: Data, q: npt.NDArray[np.float32], k: int, f: Filters) -> tuple[list[int], npt.NDArray[np.float32]]:
    """Every allowed row scored in float32, best first, lower row first among equal scores."""
    rows = np.flatnonzero(data.allowed(f))
    scores = data.vecs[rows] @ q
    order = np.lexsort((rows, -scores))[:k]
    return rows[order].tolist(), scores


def assert_exact(hits: list[Hit], data: Data, q: npt.NDArray[np.float32], k: int, f: Filters) -> None:
    """Same ids as brute force; where they differ, only because float32 scores tie within 1e-6."""
    want, scores = brute(data, q, k, f)
    got = [int(hit.id[1:]) for hit in hits]
    assert len(got) == len(want) == min(k, scores.size)
    assert len(set(got)) == len(got)
    allowed = data.allowed(f)
    assert all(allowed[i] for i in got), "a hit that the filters exclude"
    exact = data.vecs @ q
    assert [hit.score for hit in hits] == pytest.approx(exact[want].tolist(), abs=1e-6)
    for g, w in zip(got, want, strict=True):
        if g != w:
            assert abs(float(exact[g]) - float(exact[w])) <= 1e-6, f"r{g} is not tied with r{w}"
    # With clear gaps, ties are impossible and the ids must match one for one.
    top = np.sort(scores)[::-1][: k + 1]
    if top.size > 1 and np.min(-np.diff(top)) > 1e-5:
        assert got == want


def build(data: Data, *, batches: int = 1) -> VectorIndex:
    index = VectorIndex("test")
    n = data.vecs.shape[0]
    step = -(-n // batches)
    for start in range(0, n, step):
        index._upsert(data.rows(range(start, min(n, start + step))))
    return index


FILTERS = [
    Filters(),
    Filters(user_id="u3"),
    Filters(user_id="u1", kind="fact"),
    Filters(kind="rule"),  # rare: its row list is gathered
    Filters(kind=("turn", "fact")),  # common: scanned, kinds checked on candidates
    Filters(agent_id="a1"),  # half the rows: scanned
    Filters(agent_id="a0", user_id="u2", kind="turn"),
    Filters(since=1200.0, until=1260.0),  # few rows that no row list knows: the scan widens to all
    Filters(since=1100.0, time_field="ts"),
    Filters(include_invalid=True),
    Filters(user_id="nobody"),
    Filters(user_id="u4", kind="nothing-of-this-kind"),
]


@pytest.mark.parametrize("share", [0.0, 0.25, 1.0])
def test_random_data_matches_brute_force(share: float, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every filter, through row lists (share 1.0), through scans (share 0.0) and the default mix."""
    monkeypatch.setattr(_vectors, "_GATHER_SHARE", share)
    rng = np.random.default_rng(11)
    data = Data(unit(rng.standard_normal((3000, DIM))), rng)
    index = build(data, batches=7)
    for trial in range(4):
        q = unit(rng.standard_normal(DIM))
        for f in FILTERS:
            for k in (1, 10, 57):
                assert_exact(index.search(q, k, f, NOW), data, q, k, f)
        if trial == 0:
            assert index.search(q, 10, Filters(user_id="nobody"), NOW) == []


def test_many_near_ties() -> None:
    """Exact duplicates and copies nudged by 1e-7: order by score, then by insertion among equals."""
    rng = np.random.default_rng(5)
    base = unit(rng.standard_normal((40, DIM)))
    picks = rng.integers(0, 40, 2400)
    vecs = base[picks].copy()
    nudged = rng.random(2400) < 0.5
    vecs[nudged] += rng.standard_normal((int(nudged.sum()), DIM)).astype(np.float32) * 1e-7
    vecs = unit(vecs)
    data = Data(vecs, rng)
    index = build(data, batches=3)
    for i in range(6):
        q = base[i] if i % 2 == 0 else unit(base[i] + base[i + 1])
        for f in (Filters(), Filters(user_id="u0"), Filters(kind="fact"), Filters(since=1500.0)):
            for k in (1, 5, 64):
                assert_exact(index.search(q, k, f, NOW), data, q, k, f)


def test_all_scores_equal_picks_lowest_rows() -> None:
    """A query orthogonal to every row: all scores are 0, so the first rows in insertion order win."""
    rng = np.random.default_rng(2)
    vecs = np.zeros((500, DIM), dtype=np.float32)
    vecs[:, 1:] = unit(rng.standard_normal((500, DIM - 1)))
    data = Data(vecs, rng)
    index = build(data)
    q = np.zeros(DIM, dtype=np.float32)
    q[0] = 1.0
    for f in (Filters(), Filters(kind="fact")):
        hits = index.search(q, 7, f, NOW)
        assert [int(h.id[1:]) for h in hits] == np.flatnonzero(data.allowed(f))[:7].tolist()


def test_k_larger_than_subset_returns_every_allowed_row_sorted() -> None:
    rng = np.random.default_rng(8)
    data = Data(unit(rng.standard_normal((800, DIM))), rng)
    index = build(data)
    q = unit(rng.standard_normal(DIM))
    for f in (Filters(user_id="u5", kind="rule"), Filters(kind="rule"), Filters(since=1790.0), Filters()):
        allowed = int(data.allowed(f).sum())
        hits = index.search(q, allowed + 50, f, NOW)
        assert len(hits) == allowed
        assert_exact(hits, data, q, allowed + 50, f)


def test_deletes_updates_and_compaction_keep_results_exact() -> None:
    """Dead rows, rows re-upserted with a new scope and a compaction: lists and scans stay right."""
    rng = np.random.default_rng(9)
    data = Data(unit(rng.standard_normal((2500, DIM))), rng)
    index = build(data, batches=5)
    q = unit(rng.standard_normal(DIM))
    gone = rng.choice(2500, 300, replace=False)
    for i in gone:
        index._remove(f"r{i}")
        data.alive[i] = False
    for f in FILTERS[:6]:
        assert_exact(index.search(q, 10, f, NOW), data, q, 10, f)
        everything = int(data.allowed(f).sum()) + 20  # deleted rows score 0: a long list would reach them
        assert_exact(index.search(q, everything, f, NOW), data, q, everything, f)
    moved = [i for i in range(0, 2500, 7) if data.alive[i]]
    data.user[moved] = (data.user[moved] + 1) % 6  # same ids, new scope
    index._upsert(data.rows(moved))
    for f in FILTERS[:6]:
        assert_exact(index.search(q, 10, f, NOW), data, q, 10, f)
    more = rng.choice(np.flatnonzero(data.alive), 800, replace=False)
    for i in more:
        index._remove(f"r{i}")
        data.alive[i] = False
    index._maybe_compact()  # 1100 dead rows: past the 1024 floor, rows move
    assert index._n == int(data.alive.sum())
    for f in FILTERS:
        assert_exact(index.search(q, 10, f, NOW), data, q, 10, f)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "exact.db")
    yield s
    s.close()


def test_store_search_matches_brute_force_with_invalidation_and_deletes(store: SQLiteStore) -> None:
    """The public path, after invalidations and deletes arrive through the change log."""
    rng = np.random.default_rng(21)
    n = 2000
    vecs = rng.standard_normal((n, DIM)).astype(np.float32)
    users = rng.integers(0, 5, n)
    kinds = rng.choice(3, size=n, p=(0.5, 0.45, 0.05))
    records = [
        Record(text=f"r{i}", id=f"r{i}", user_id=f"u{users[i]}", kind=KINDS[kinds[i]], created_at=float(i))
        for i in range(n)
    ]
    for start in range(0, n, 400):
        store.add(records[start : start + 400], vecs[start : start + 400])
    alive = np.ones(n, dtype=bool)
    q = unit(rng.standard_normal(DIM))
    store.search_vector(q, 1)  # builds the cache, so what follows arrives incrementally
    for i in rng.choice(n, 60, replace=False):
        store.delete(f"r{i}")
        alive[i] = False
    for i in rng.choice(np.flatnonzero(alive), 60, replace=False):
        store.invalidate(f"r{i}", at=1.0)
        alive[i] = False
    exact = unit(vecs) @ q
    for f, mask in (
        (Filters(), alive),
        (Filters(user_id="u2"), alive & (users == 2)),
        (Filters(kind="rule"), alive & (kinds == 2)),
        (Filters(user_id="u1", kind=("fact", "rule")), alive & (users == 1) & (kinds > 0)),
        (Filters(since=500.0, until=530.0), alive & (np.arange(n) >= 500) & (np.arange(n) < 530)),
    ):
        rows = np.flatnonzero(mask)
        want = rows[np.lexsort((rows, -exact[rows]))][:15]
        got = store.search_vector(q, 15, f)
        assert [h.record.id for h in got] == [f"r{i}" for i in want]
        assert [h.score for h in got] == pytest.approx(exact[want].tolist(), abs=1e-5)

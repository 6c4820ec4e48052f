"""SQLiteStore: atomicity, hard scoping, safe FTS, exact vector search, and many writers at once."""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import multiprocessing
import sqlite3
import types
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from memwise.exceptions import StoreError
from memwise.store import _vectors
from memwise.store.base import Filters, Record
from memwise.store.sqlite import SQLiteStore

DIM = 16
SPAWN = multiprocessing.get_context("spawn")


def vec_for(key: str, dim: int = DIM) -> np.ndarray:
    """A deterministic vector per key, so every process writes identical content for an id."""
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


def rec(rid: str, text: str | None = None, **kw: object) -> Record:
    return Record(text=text or f"memory {rid}", id=rid, **kw)  # type: ignore[arg-type]


# -- many processes -----------------------------------------------------------------------------


@pytest.fixture
def workers(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """The child-process helpers, importable by plain name here and in spawned children."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    return importlib.import_module("_store_workers")


def test_eight_processes_leave_exactly_4000(tmp_path: Path, workers: types.ModuleType) -> None:
    path = tmp_path / "shared.db"
    parent = SQLiteStore(path)
    assert parent.search_vector(vec_for("q"), 5) == []  # builds the (empty) vector cache first
    processes, per = 8, 500
    with ProcessPoolExecutor(processes, mp_context=SPAWN) as pool:
        args = ([str(path)] * processes, range(processes), [per] * processes, [processes] * processes)
        done = list(pool.map(workers.writer, *args))
    assert sum(done) == 4000

    assert parent.count() == 4000
    records = parent.list_records()
    assert len(records) == 4000 and len({r.id for r in records}) == 4000
    assert {r.id for r in records} == {f"p{o}-{j}" for o in range(processes) for j in range(per)}
    raw = sqlite3.connect(path)
    assert raw.execute("SELECT COUNT(*) FROM vectors").fetchone()[0] == 4000
    raw.execute("INSERT INTO records_fts(records_fts) VALUES ('integrity-check')")
    raw.close()

    assert len(parent.search_text("sharedword", top_k=5000)) == 4000
    hit = parent.search_text("process3 item417", top_k=1)[0]
    assert hit.record.id == "p3-417"
    # The cache was built before the children wrote: it must have caught up with all of them.
    assert len(parent.search_vector(vec_for("q"), top_k=5000)) == 4000
    top = parent.search_vector(vec_for("p5-123"), top_k=1)[0]
    assert top.record.id == "p5-123" and top.score == pytest.approx(1.0, abs=1e-5)
    parent.close()


def test_crash_mid_transaction_leaves_nothing(tmp_path: Path, workers: types.ModuleType) -> None:
    path = tmp_path / "crash.db"
    store = SQLiteStore(path)
    proc = SPAWN.Process(target=workers.crash_inside_transaction, args=(str(path),))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 3
    assert store.count(Filters(include_invalid=True)) == 0
    assert store.search_text("memory") == [] and store.search_vector(vec_for("c1"), 5) == []
    store.add([rec("after")])  # and the file is still writable
    assert store.count() == 1


def test_vector_cache_sees_other_processes_and_connections(store: SQLiteStore, workers: types.ModuleType) -> None:
    store.add([rec("a", user_id="u")], vec_for("a")[None, :])
    assert [h.record.id for h in store.search_vector(vec_for("a"), 5)] == ["a"]
    other = SQLiteStore(store.path)
    other.add([rec("b", user_id="u")], vec_for("b")[None, :])
    assert store.search_vector(vec_for("b"), 1)[0].record.id == "b"
    other.update("b", vector=vec_for("a"))
    assert {h.record.id for h in store.search_vector(vec_for("a"), 2)} == {"a", "b"}
    assert store.search_vector(vec_for("a"), 2)[1].score == pytest.approx(1.0, abs=1e-5)
    other.delete("a")
    assert [h.record.id for h in store.search_vector(vec_for("a"), 5)] == ["b"]
    other.invalidate("b")
    assert store.search_vector(vec_for("a"), 5) == []
    other.close()
    proc = SPAWN.Process(target=workers.late_writer, args=(str(store.path),))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0
    assert store.search_vector(vec_for("late"), 1)[0].record.id == "late"


# -- atomicity and idempotence ------------------------------------------------------------------


def test_failure_mid_batch_leaves_nothing(store: SQLiteStore) -> None:
    # A trigger that aborts on the third row: the first two are already inserted when it fires.
    raw = sqlite3.connect(store.path)
    raw.execute(
        "CREATE TRIGGER boom BEFORE INSERT ON records WHEN new.text = 'boom' BEGIN SELECT RAISE(ABORT, 'boom'); END"
    )
    raw.commit()
    raw.close()
    recs = [rec("x1"), rec("x2"), rec("x3", text="boom"), rec("x4")]
    with pytest.raises(StoreError, match="boom"):
        store.add(recs, np.stack([vec_for(r.id) for r in recs]))
    assert store.count(Filters(include_invalid=True)) == 0
    assert store.get("x1") is None
    assert store.search_text("memory") == [] and store.search_vector(vec_for("x1"), 5) == []


def test_transaction_that_raises_leaves_nothing(store: SQLiteStore) -> None:
    store.add([rec("keep")])
    with pytest.raises(RuntimeError), store.transaction():
        store.add([rec("t1")], vec_for("t1")[None, :])
        store.update("keep", text="changed")
        store.add([rec("t2")])
        raise RuntimeError("ingest failed")
    assert [r.id for r in store.list_records()] == ["keep"]
    assert store.get("keep").text == "memory keep"  # type: ignore[union-attr]
    assert store.search_vector(vec_for("t1"), 5) == []
    with store.transaction():  # a nested block that fails undoes only itself
        store.add([rec("outer")])
        with pytest.raises(ValueError), store.transaction():
            store.add([rec("inner")])
            raise ValueError
    assert {r.id for r in store.list_records()} == {"keep", "outer"}


def test_same_id_same_content_is_noop_different_content_raises(store: SQLiteStore) -> None:
    assert store.add([rec("r1", user_id="u"), rec("r1", user_id="u")]) == ["r1", "r1"]
    store.add([rec("r1", user_id="u")])  # a retried add: created_at differs, content does not
    assert store.count() == 1
    with pytest.raises(StoreError, match="different content"):
        store.add([rec("new1"), rec("r1", text="something else", user_id="u")])
    assert store.get("new1") is None  # the whole batch was refused
    with pytest.raises(StoreError, match="twice in one batch"):
        store.add([rec("d"), rec("d", text="other")])
    ids = store.add([Record(text="no id given"), Record(text="no id given")])
    assert len(set(ids)) == 2 and all(len(i) == 32 for i in ids)


def test_asyncio_task_writing_into_anothers_transaction_raises(store: SQLiteStore) -> None:
    async def holder(opened: asyncio.Event, release: asyncio.Event) -> None:
        with store.transaction():
            store.add([rec("held")])
            opened.set()
            await release.wait()

    async def main() -> None:
        opened, release = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(holder(opened, release))
        await opened.wait()
        with pytest.raises(StoreError, match="do not await inside"):
            store.add([rec("intruder")])
        release.set()
        await task

    asyncio.run(main())
    assert [r.id for r in store.list_records()] == ["held"]


def test_threads_share_one_store(store: SQLiteStore) -> None:
    def work(t: int) -> None:
        for j in range(20):
            store.add([rec(f"t{t}-{j}-{k}") for k in range(5)])
        store.add([rec(f"t{t}-0-0")])  # re-add

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(8)))

    async def via_to_thread() -> None:
        await asyncio.gather(*(asyncio.to_thread(store.add, [rec(f"a{i}")]) for i in range(20)))

    asyncio.run(via_to_thread())
    assert store.count() == 8 * 100 + 20


# -- filters are hard ---------------------------------------------------------------------------


def _two_users(store: SQLiteStore) -> None:
    recs, vecs = [], []
    for user in ("A", "B"):
        for i in range(30):
            r = Record(
                text=f"my favourite colour is blue number {i}",
                id=f"{user}{i}",
                user_id=user,
                agent_id=f"agent{i % 2}",
                run_id=f"run{i % 3}",
                kind="fact" if i % 2 else "turn",
                ts=1000.0 + i,
            )
            recs.append(r)
            vecs.append(vec_for("same") + 0.01 * vec_for(r.id))  # B's vectors are as close as A's
    store.add(recs, np.stack(vecs))


def test_scope_filters_are_hard(store: SQLiteStore) -> None:
    _two_users(store)
    a = Filters(user_id="A")
    q = vec_for("same")
    assert store.count(a) == 30 and store.count() == 60
    assert {r.user_id for r in store.list_records(a)} == {"A"}
    assert {h.record.user_id for h in store.search_text("favourite colour blue", 100, a)} == {"A"}
    assert {h.record.user_id for h in store.search_vector(q, 100, a)} == {"A"}
    assert len(store.search_vector(q, 100, a)) == 30
    narrow = Filters(user_id="B", agent_id="agent1", run_id="run0", kind="fact")
    expected = {f"B{i}" for i in range(30) if i % 2 == 1 and i % 3 == 0}
    assert {r.id for r in store.list_records(narrow)} == expected
    assert {h.record.id for h in store.search_vector(q, 100, narrow)} == expected
    assert {h.record.id for h in store.search_text("blue", 100, narrow)} == expected
    assert store.count(narrow) == len(expected)
    nobody = Filters(user_id="C")
    assert store.list_records(nobody) == [] and store.count(nobody) == 0
    assert store.search_text("blue", 10, nobody) == [] and store.search_vector(q, 10, nobody) == []
    when = Filters(user_id="A", since=1010.0, until=1015.0, time_field="ts")
    assert {r.id for r in store.list_records(when)} == {f"A{i}" for i in range(10, 15)}
    assert {h.record.id for h in store.search_vector(q, 100, when)} == {f"A{i}" for i in range(10, 15)}
    kinds = Filters(user_id="A", kind=("fact", "rule"))
    assert store.count(kinds) == 15
    assert len(store.list_records(a, limit=7, offset=25)) == 5


def test_vector_search_matches_brute_force(store: SQLiteStore) -> None:
    rng = np.random.default_rng(7)
    n = 3000
    users = rng.integers(0, 4, n)
    kinds = rng.integers(0, 2, n)
    vecs = rng.standard_normal((n, DIM)).astype(np.float32)
    recs = [Record(text=f"r{i}", id=f"r{i}", user_id=f"u{users[i]}", kind=("turn", "fact")[kinds[i]]) for i in range(n)]
    store.add(recs, vecs)
    unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    for _ in range(5):
        q = rng.standard_normal(DIM).astype(np.float32)
        scores = unit @ (q / np.linalg.norm(q))
        for filters, allowed in (
            (Filters(), np.ones(n, dtype=bool)),
            (Filters(user_id="u2"), users == 2),
            (Filters(user_id="u1", kind="fact"), (users == 1) & (kinds == 1)),
        ):
            got = store.search_vector(q, 10, filters)
            want = np.flatnonzero(allowed)[np.argsort(-scores[allowed])[:10]]
            assert [h.record.id for h in got] == [f"r{i}" for i in want]
            assert [h.score for h in got] == pytest.approx(scores[want].tolist(), abs=1e-5)


def test_vector_cache_full_reload_and_compaction(store: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = [f"v{i}" for i in range(2000)]
    store.add([rec(i) for i in ids], np.stack([vec_for(i) for i in ids]))
    assert len(store.search_vector(vec_for("v0"), 5000)) == 2000
    for rid in ids[:1200]:  # past a quarter dead: the matrix compacts
        store.delete(rid)
    assert {h.record.id for h in store.search_vector(vec_for("v0"), 5000)} == set(ids[1200:])
    assert store.search_vector(vec_for("v1500"), 1)[0].record.id == "v1500"
    monkeypatch.setattr(_vectors, "_FULL_RELOAD_AFTER", 10)
    reloads: list[int] = []
    real_reload = _vectors.VectorIndex._full_reload

    def counting_reload(self: _vectors.VectorIndex, conn: sqlite3.Connection) -> None:
        reloads.append(1)
        real_reload(self, conn)

    monkeypatch.setattr(_vectors.VectorIndex, "_full_reload", counting_reload)
    more = [f"w{i}" for i in range(300)]
    store.add([rec(i) for i in more], np.stack([vec_for(i) for i in more]))
    assert len(store.search_vector(vec_for("w3"), 5000)) == 1100
    assert reloads == [1]
    assert store.search_vector(vec_for("w3"), 1)[0].record.id == "w3"


def test_invalidate_hides_but_keeps(store: SQLiteStore) -> None:
    store.add([rec("old", text="lives in Paris"), rec("new", text="lives in Berlin")], np.stack([vec_for("x")] * 2))
    gone = store.invalidate("old", at=123.0)
    assert gone.valid_to == 123.0
    assert store.get("old") is not None and store.get("old").valid_to == 123.0  # type: ignore[union-attr]
    assert [r.id for r in store.list_records()] == ["new"] and store.count() == 1
    assert [h.record.id for h in store.search_text("lives")] == ["new"]
    assert [h.record.id for h in store.search_vector(vec_for("x"), 5)] == ["new"]
    history = Filters(include_invalid=True)
    assert store.count(history) == 2
    assert {h.record.id for h in store.search_text("lives", 5, history)} == {"old", "new"}
    assert {h.record.id for h in store.search_vector(vec_for("x"), 5, history)} == {"old", "new"}
    store.invalidate("new", at=4_000_000_000.0)  # ends in the future: still valid now
    assert store.count() == 1
    with pytest.raises(StoreError, match="no record"):
        store.invalidate("missing")


# -- full-text search ---------------------------------------------------------------------------

HOSTILE = [
    "",
    "   ",
    '"',
    '""',
    "'",
    "AND",
    "OR",
    "NOT",
    "a AND",
    "AND OR NOT",
    "*",
    "cat*",
    "^cat",
    "(",
    ")",
    "(cat OR",
    "NEAR",
    "NEAR(cat mat, 2)",
    "text:cat",
    "records_fts:cat",
    "-cat",
    "+",
    "{text}: cat",
    'c@t\'s "mat" (sat) AND NOT *',
    "___",
    "\x00\x01",
    "ñandú 日本語 🐈",
    "a" * 5000,
    " ".join(f"w{i}" for i in range(500)),
]


@pytest.mark.parametrize("query", HOSTILE)
def test_hostile_fts_queries_never_raise(store: SQLiteStore, query: str) -> None:
    store.add([rec("c", text="The cat sat on the mat, NEAR the door AND the window")])
    hits = store.search_text(query, 5)
    assert all(h.record.id == "c" for h in hits)


def test_fts_ranks_stems_and_follows_updates(store: SQLiteStore) -> None:
    store.add(
        [
            rec("1", text="I adopted two cats last spring"),
            rec("2", text="The quarterly revenue grew five percent"),
            rec("3", text="My cat likes sitting on mats"),
        ]
    )
    hits = store.search_text("Which cat sits on the mat?", 3)
    assert hits[0].record.id == "3" and {h.record.id for h in hits} == {"1", "3"}
    assert hits[0].score >= hits[-1].score
    store.update("2", text="We bought a cat tree", metadata={"edited": True})
    assert store.get("2").metadata == {"edited": True}  # type: ignore[union-attr]
    assert "2" in {h.record.id for h in store.search_text("cat", 5)}
    assert store.search_text("revenue", 5) == []
    store.delete("3")
    assert "3" not in {h.record.id for h in store.search_text("cat", 5)}
    assert store.delete("3") is False


# -- misc ---------------------------------------------------------------------------------------


def test_update_vector_and_validation(store: SQLiteStore) -> None:
    store.add([rec("a")], vec_for("a")[None, :])
    store.update("a", text="new words")  # text changed, no vector: the stale vector goes
    assert store.get_vector("a") is None and store.search_vector(vec_for("a"), 5) == []
    store.update("a", vector=vec_for("b"))
    got = store.get_vector("a")
    assert got is not None and np.linalg.norm(got) == pytest.approx(1.0, abs=1e-6)
    assert store.search_vector(vec_for("b"), 1)[0].record.id == "a"
    with pytest.raises(StoreError, match="16-d"):
        store.add([rec("wide")], np.ones((1, 32)))
    with pytest.raises(StoreError, match="shape"):
        store.add([rec("x"), rec("y")], np.ones((1, DIM)))
    with pytest.raises(StoreError, match="holds 16-d"):
        store.search_vector(np.ones(8), 5)
    with pytest.raises(StoreError, match="no record"):
        store.update("missing", text="x")
    store.add([rec("other-space")], np.ones((1, 4)), space="tiny")  # spaces are independent
    assert store.search_vector(np.ones(4), 5, space="tiny")[0].record.id == "other-space"
    with pytest.raises(StoreError, match="file path"):
        SQLiteStore(":memory:")


def test_records_round_trip(store: SQLiteStore) -> None:
    r = Record(text="x", kind="insight", user_id="u", agent_id="g", run_id="r", metadata={"k": [1, "ü"]}, ts=5.0)
    store.add([r])
    assert store.get(r.id) == r
    assert store.get_many([r.id, "nope", r.id]) == [r]
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.get(r.id)
    with SQLiteStore(store.path) as again:
        assert again.get(r.id) == r

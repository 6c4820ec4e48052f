"""PostgresStore beyond the shared contract: migrations, many processes, HNSW recall, a Memory on top."""

from __future__ import annotations

import asyncio
import importlib
import multiprocessing
import types
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import psycopg
import pytest

from memwise.config import load_settings
from memwise.exceptions import ConfigError, StoreError
from memwise.facts.memory import AsyncMemory
from memwise.store._pg_schema import SCHEMA_VERSION
from memwise.store.aio import AsyncStore
from memwise.store.base import Filters, Record
from memwise.store.postgres import PostgresStore
from memwise.store.registry import build_store
from memwise.store.sqlite import SQLiteStore
from memwise.testing import FakeEmbedder

SPAWN = multiprocessing.get_context("spawn")


@pytest.fixture
def workers(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    return importlib.import_module("_store_workers")


def test_migrate_is_idempotent_and_safe_for_concurrent_opens(pg_dsn: str, workers: types.ModuleType) -> None:
    with ProcessPoolExecutor(2, mp_context=SPAWN) as pool:  # two processes open the empty schema at once
        assert list(pool.map(workers.pg_open, [pg_dsn] * 2)) == [0, 0]
    with PostgresStore(pg_dsn) as store:
        store.migrate()
        store.add([Record(text="kept", id="k")])
    with PostgresStore(pg_dsn) as store, psycopg.connect(pg_dsn) as conn:
        assert store.get("k") is not None
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]


def test_a_newer_schema_is_refused(pg_dsn: str) -> None:
    PostgresStore(pg_dsn).close()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_version(version) VALUES (%s)", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match="upgrade memwise"):
        PostgresStore(pg_dsn)


def test_unreachable_server_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot connect"):
        PostgresStore(f"postgresql://postgres@/nowhere?host={tmp_path}", connect_timeout_s=1)


def test_two_processes_adding_leave_exactly_the_expected_count(pg_dsn: str, workers: types.ModuleType) -> None:
    PostgresStore(pg_dsn).close()
    n = 300
    with ProcessPoolExecutor(2, mp_context=SPAWN) as pool:
        assert list(pool.map(workers.pg_writer, [pg_dsn] * 2, [0, 1], [n] * 2)) == [n, n]
    with PostgresStore(pg_dsn, space="default") as store:
        assert store.count() == 2 * n
        assert {r.id for r in store.list_records()} == {f"p{o}-{j}" for o in range(2) for j in range(n)}
        with psycopg.connect(pg_dsn) as conn:
            assert conn.execute("SELECT COUNT(*) FROM vectors").fetchone() == (2 * n,)
        top = store.search_vector(workers.vec_for("p1-123"), 1)[0]
        assert top.record.id == "p1-123" and top.score == pytest.approx(1.0, abs=1e-4)


def test_hnsw_index_is_used_and_recall_is_high(pg_dsn: str) -> None:
    rng = np.random.default_rng(3)
    n, dim, k = 2000, 32, 10
    mat = rng.standard_normal((n, dim)).astype(np.float32)
    users = [f"u{i % 3}" for i in range(n)]
    with PostgresStore(pg_dsn) as store:
        records = [Record(text=f"r{i}", id=f"r{i}", user_id=users[i]) for i in range(n)]
        for start in range(0, n, 1000):
            store.add(records[start : start + 1000], mat[start : start + 1000])
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute("ANALYZE")
            plan = "\n".join(
                row[0]
                for row in conn.execute(
                    f"EXPLAIN SELECT record_id FROM vectors WHERE space = 'default' "
                    f"ORDER BY embedding::vector({dim}) <=> %s::vector({dim}) LIMIT 10",
                    (str(mat[0].tolist()),),
                )
            )
            assert "vectors_hnsw_" in plan, plan
        unit = mat / np.linalg.norm(mat, axis=1, keepdims=True)
        found = total = 0
        cases = ((Filters(), np.ones(n, bool)), (Filters(user_id="u1"), np.array([u == "u1" for u in users])))
        for q in rng.standard_normal((20, dim)).astype(np.float32):
            scores = unit @ (q / np.linalg.norm(q))
            for f, allowed in cases:
                truth = {f"r{i}" for i in np.argsort(-np.where(allowed, scores, -9))[:k]}
                hits = store.search_vector(q, k, f)
                assert len(hits) == k and all(f.matches(h.record, 0.0) for h in hits)
                found += len(truth & {h.record.id for h in hits})
                total += k
        assert found / total >= 0.9


async def test_async_memory_over_postgres_end_to_end(pg_dsn: str) -> None:
    mem = AsyncMemory(store=PostgresStore(pg_dsn), embedder=FakeEmbedder())
    try:
        await mem.add(["I adopted a beagle called Pepper."], user_id="alice")
        await mem.add(["My favourite food is ramen."], user_id="bob")
        hits = await mem.search("dog Pepper", user_id="alice", top_k=3)
        assert hits and "Pepper" in hits[0].record.text
        assert await mem.search("dog Pepper", user_id="carol") == []
        all_alice = await mem.get_all(user_id="alice")
        assert [r.text for r in all_alice] == ["user: I adopted a beagle called Pepper."]
        memory_id = all_alice[0].id
        await mem.update(memory_id, "I adopted a beagle called Pepper in 2023.", user_id="alice")
        texts = [r.text for r in await mem.get_all(user_id="alice")]
        assert texts == ["I adopted a beagle called Pepper in 2023."]
        new_id = (await mem.get_all(user_id="alice"))[0].id
        await mem.delete(new_id, user_id="alice")
        assert await mem.get_all(user_id="alice") == []
        assert [r.text for r in await mem.get_all(user_id="bob")] == ["user: My favourite food is ramen."]
    finally:
        await mem.aclose()


async def test_async_store_transaction_is_atomic(pg_dsn: str, tmp_path: Path) -> None:
    for store in (PostgresStore(pg_dsn), SQLiteStore(tmp_path / "a.db")):
        astore = AsyncStore(store)
        with pytest.raises(RuntimeError):
            async with astore.transaction():
                await astore.add([Record(text="one", id="one")])
                assert await astore.get("one") is not None  # read inside sees the write
                raise RuntimeError("boom")
        assert await astore.get("one") is None
        async with astore.transaction():
            await astore.add([Record(text="two", id="two")])
            await asyncio.sleep(0)
            await astore.add([Record(text="three", id="three")])
        assert [r.id for r in await astore.list_records()] == ["two", "three"]
        await astore.close()


def test_build_store_and_the_store_setting(pg_dsn: str, tmp_path: Path) -> None:
    pg = build_store(pg_dsn)
    assert isinstance(pg, PostgresStore)
    pg.close()
    lite = build_store(tmp_path / "m.db", space="emb")
    assert isinstance(lite, SQLiteStore) and lite.space == "emb"
    lite.close()
    with pytest.raises(ConfigError, match="unknown scheme 'mysql'"):
        build_store("mysql://x/y")
    assert load_settings(env={}).store is None
    assert load_settings(env={"MEMWISE_STORE": pg_dsn}).store == pg_dsn
    toml = tmp_path / "memwise.toml"
    toml.write_text(f'store = "{tmp_path / "x.db"}"\n')
    assert load_settings(toml, env={}).store == str(tmp_path / "x.db")
    assert load_settings(toml, env={"MEMWISE_STORE": pg_dsn}).store == pg_dsn
    assert load_settings(toml, env={"MEMWISE_STORE": pg_dsn}, store="cli.db").store == "cli.db"

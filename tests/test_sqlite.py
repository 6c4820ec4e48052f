"""memwise._sqlite: the one SQLite wrapper behind the store, the run ledger and the embedding cache."""

from __future__ import annotations

import ast
import asyncio
import sqlite3
from pathlib import Path

import pytest

from memwise._sqlite import Database
from memwise.embed.cache import CachedEmbedder
from memwise.exceptions import StoreError
from memwise.llm.base import ChatRequest
from memwise.runs.ledger import Ledger
from memwise.store.sqlite import SQLiteStore
from memwise.testing import FakeEmbedder

SRC = Path(__file__).resolve().parents[1] / "src" / "memwise"
# runs/files.py copies a finished database with SQLite's backup API (source and copy, both read-only use).
_ALLOWED = {"_sqlite.py", "runs/files.py"}


def test_only_the_wrapper_opens_sqlite_connections() -> None:
    found = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "sqlite3.connect":
                found.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert {f.rsplit(":", 1)[0] for f in found} <= _ALLOWED, found


def test_all_three_files_are_wal_and_refuse_a_newer_schema(tmp_path: Path) -> None:
    opened = [
        SQLiteStore(tmp_path / "store.db"),
        Ledger(tmp_path / "ledger.sqlite3"),
        CachedEmbedder(FakeEmbedder(), tmp_path / "cache.sqlite3"),
    ]
    for thing in opened:
        thing.close()
    for name in ("store.db", "ledger.sqlite3", "cache.sqlite3"):
        with sqlite3.connect(tmp_path / name) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal", name
    with sqlite3.connect(tmp_path / "cache.sqlite3") as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match=r"embedding cache .*cache\.sqlite3 has schema version 99.*upgrade memwise"):
        CachedEmbedder(FakeEmbedder(), tmp_path / "cache.sqlite3")


def test_a_closed_ledger_or_cache_names_itself_instead_of_a_raw_sqlite_error(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    ledger.close()
    with pytest.raises(StoreError, match=r"run ledger .*ledger\.sqlite3 is closed"):
        ledger.lookup(ChatRequest.of("hi").cache_key("m", 0))
    cache = CachedEmbedder(FakeEmbedder(), tmp_path / "cache.sqlite3")
    cache.close()
    with pytest.raises(StoreError, match=r"embedding cache .*cache\.sqlite3 is closed"):
        asyncio.run(cache.embed(["never seen"]))


@pytest.mark.parametrize("content", [b"", b"not a database" * 300], ids=["empty", "garbage"])
def test_a_verified_file_that_is_empty_or_not_sqlite_is_refused_by_name(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "precious.sqlite3"
    path.write_bytes(content)
    with pytest.raises(StoreError, match=r"precious file .*precious\.sqlite3 is (empty|corrupt).*keep a copy"):
        Database(path, label="precious file", verify=True, recovery="keep a copy")


def test_writes_from_many_threads_all_land(tmp_path: Path) -> None:
    db = Database(tmp_path / "t.sqlite3")
    db.migrate(1, lambda conn, old: conn.execute("CREATE TABLE IF NOT EXISTS t (x INTEGER)"))

    def insert(i: int) -> None:
        db.write(lambda c: c.execute("INSERT INTO t VALUES (?)", (i,)), "insert")

    async def many() -> None:
        await asyncio.gather(*(asyncio.to_thread(insert, i) for i in range(40)))

    asyncio.run(many())
    assert db.read(lambda c: c.execute("SELECT COUNT(*) FROM t").fetchone()[0], "count") == 40
    db.close()

"""A damaged run ledger is refused when it is opened, with what to do, before any model call is made."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from typer.testing import CliRunner

from memwise.cli import app
from memwise.exceptions import StoreError
from memwise.llm.base import ChatRequest, Sample, Usage
from memwise.runs.ledger import SCHEMA_VERSION, Ledger
from memwise.runs.rundir import RunDir
from memwise.testing import FakeOpenAIServer

PAGE = 4096


def _chat(srv: FakeOpenAIServer, run_dir: Path) -> list[str]:
    return ["--base-url", srv.base_url, "--model", "m", "chat", "hello", "--run-dir", str(run_dir)]


def _filled_ledger(path: Path, calls: int = 300) -> None:
    with Ledger(path) as ledger:
        for i in range(calls):
            request = ChatRequest.of(f"question {i}")
            sample = Sample(text=f"answer {i} " + "x" * 2000, finish_reason="stop", usage=Usage(3, 400), latency_s=0.1)
            key = request.cache_key("m", 0)
            ledger.record(key, model="m", stage="s", sample_index=0, request=request, sample=sample)
    with closing(sqlite3.connect(path)) as conn:  # fold the WAL in, so the calls live in the main file
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def test_a_zero_length_ledger_is_an_error_not_a_fresh_start(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "ledger.sqlite3").write_bytes(b"")
    with FakeOpenAIServer().in_thread() as srv:
        result = CliRunner().invoke(app, _chat(srv, run_dir))
        assert srv.stats().requests == 0  # nothing was paid again
    assert isinstance(result.exception, StoreError), result.output
    message = str(result.exception)
    assert "ledger.sqlite3 is empty (0 bytes)" in message and "move it aside" in message
    # The refused open gave the run's lock back: the next attempt gets the same clear error, not "busy".
    with pytest.raises(StoreError, match="empty"):
        RunDir(run_dir)


def test_garbage_in_the_middle_of_a_ledger_is_refused_at_open(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    ledger = run_dir / "ledger.sqlite3"
    _filled_ledger(ledger)
    pages = ledger.stat().st_size // PAGE
    assert pages > 20
    with ledger.open("r+b") as f:
        f.seek((pages // 2) * PAGE)
        f.write(bytes(range(256)) * (PAGE // 256))  # not a b-tree page: its type byte is 0
    with FakeOpenAIServer().in_thread() as srv:
        result = CliRunner().invoke(app, _chat(srv, run_dir))
        assert srv.stats().requests == 0
    assert isinstance(result.exception, StoreError), result.output
    message = str(result.exception)
    assert f"run ledger {ledger} is corrupt" in message and "move it aside" in message
    assert not isinstance(result.exception.__cause__, StoreError)  # the SQLite detail stays on the chain


def test_a_file_that_is_not_sqlite_at_all_is_refused(tmp_path: Path) -> None:
    (tmp_path / "ledger.sqlite3").write_bytes(b"this is not a database" * 300)
    with pytest.raises(StoreError, match="corrupt.*move it aside"):
        RunDir(tmp_path)


def test_a_ledger_of_the_previous_schema_is_migrated_in_place_and_replayed(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    request = ChatRequest.of("old question")
    with closing(sqlite3.connect(path)) as conn:  # the version-1 layout: no retries table, user_version 0
        conn.executescript(
            "CREATE TABLE calls (key TEXT PRIMARY KEY, model TEXT NOT NULL, stage TEXT NOT NULL,"
            " sample_index INTEGER NOT NULL, request TEXT NOT NULL, text TEXT NOT NULL, finish_reason TEXT NOT NULL,"
            " prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, latency_s REAL NOT NULL,"
            " created_at REAL NOT NULL);"
            "CREATE TABLE errors (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, model TEXT NOT NULL,"
            " stage TEXT NOT NULL, error TEXT NOT NULL, created_at REAL NOT NULL);"
            "CREATE TABLE failures (id INTEGER PRIMARY KEY AUTOINCREMENT, stage TEXT NOT NULL, kind TEXT NOT NULL,"
            " detail TEXT NOT NULL, raw TEXT, created_at REAL NOT NULL);"
        )
        conn.execute(
            "INSERT INTO calls VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (request.cache_key("m", 0), "m", "judge", 0, "{}", "old answer", "stop", 1, 2, 0.5, 0.0),
        )
        conn.commit()
    with Ledger(path) as ledger:
        assert ledger.lookup(request.cache_key("m", 0)) is not None
        stats = ledger.stats()["judge"]
        assert (stats.calls, stats.retries, stats.retry_reasons) == (1, 0, {})
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("SELECT COUNT(*) FROM retries").fetchone()[0] == 0

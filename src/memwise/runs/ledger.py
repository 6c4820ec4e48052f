"""The run ledger: every model call of a run, in one SQLite file, which is also the run's cache.

A call is keyed by a hash of (model, messages, parameters, sample index). A successful call is written
in its own transaction the moment it returns, so a process killed at any point loses at most the calls
in flight, and the WAL journal keeps what was committed intact. A re-run looks each call up first and
pays only for what is missing. Failed calls are recorded too (in ``errors``) but never replayed.

Parse failures and other per-stage troubles go to ``failures`` so a run report can count them, and
every failed attempt that a backend retried before a call succeeded goes to ``retries`` (with why: an
HTTP status, a timeout...), so rate limiting and flaky servers show in every report instead of only
as slowness.

A ledger is checked when it is opened, before any call is made: an empty (0-byte) file or one that
fails SQLite's ``quick_check`` is refused with a :class:`StoreError` saying what to do, because
carrying on would either pay for every recorded call again or fail mid-run.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memwise._sqlite import Database
from memwise.exceptions import StoreError
from memwise.llm.base import ChatRequest, Sample, Usage

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    stage TEXT NOT NULL,
    sample_index INTEGER NOT NULL,
    request TEXT NOT NULL,
    text TEXT NOT NULL,
    finish_reason TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    latency_s REAL NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS errors (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    model TEXT NOT NULL,
    stage TEXT NOT NULL,
    error TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS failures (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    stage TEXT NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL,
    raw TEXT,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS retries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    model TEXT NOT NULL,
    stage TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS calls_stage ON calls(stage);
"""

#: Version 1 had no ``retries`` table; opening one adds it (``CREATE TABLE IF NOT EXISTS``) in place.
SCHEMA_VERSION = 2


def _create_tables(conn: sqlite3.Connection, old_version: int) -> None:
    """Every table and index, created when missing (one statement at a time: this runs in a transaction)."""
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)


@dataclass(frozen=True, slots=True)
class StageStats:
    """What one stage of a run cost and how it went."""

    stage: str
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    errors: int = 0
    failures: int = 0
    retries: int = 0
    retry_reasons: dict[str, int] = field(default_factory=dict)

    def retries_text(self) -> str:
        """``"3 (HTTP 429 x2, timeout x1)"``, or ``"0"``.

        Example:
            >>> StageStats("judge", retries=3, retry_reasons={"HTTP 429": 2, "timeout": 1}).retries_text()
            '3 (HTTP 429 x2, timeout x1)'
        """
        if not self.retries:
            return "0"
        reasons = ", ".join(f"{why} x{n}" for why, n in sorted(self.retry_reasons.items(), key=lambda kv: -kv[1]))
        return f"{self.retries} ({reasons})"


def retries_line(stages: Mapping[str, StageStats]) -> str:
    """One line for a summary: retried attempts per stage and why, or that there were none.

    Example:
        >>> retries_line({"judge": StageStats("judge", retries=1, retry_reasons={"HTTP 500": 1})})
        'retries: judge 1 (HTTP 500 x1)'
        >>> retries_line({"judge": StageStats("judge", calls=4)})
        'retries: none'
    """
    parts = [f"{name} {st.retries_text()}" for name, st in stages.items() if st.retries]
    return "retries: " + ("; ".join(parts) if parts else "none")


class Ledger:
    """A SQLite ledger of model calls; safe for many coroutines, threads and processes.

    Example:
        >>> import tempfile, pathlib
        >>> led = Ledger(pathlib.Path(tempfile.mkdtemp()) / "ledger.sqlite3")
        >>> led.count_calls()
        0
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        aside = f"move it aside (mv {self.path} {self.path}.broken) to start this run's calls over"
        # An empty file would be taken for a new ledger and every recorded call paid again; a damaged one
        # would fail mid-run. Both are refused now, naming the file.
        recovery = f"restore it from a copy or {aside}"
        self._db = Database(self.path, label="run ledger", busy_timeout_s=30.0, verify=True, recovery=recovery)
        try:
            self._db.migrate(SCHEMA_VERSION, _create_tables)
        except BaseException:
            self._db.close()
            raise

    @property
    def _conn(self) -> sqlite3.Connection:
        """This thread's connection to the ledger."""
        return self._db.conn()

    def close(self) -> None:
        """Close the ledger's database connection; the ledger is not used afterwards."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._db.transaction():
            yield self._db.conn()

    def lookup(self, key: str) -> Sample | None:
        """The recorded sample for a call key, or None if it was never completed."""
        with self._lock:
            row = self._conn.execute(
                "SELECT text, finish_reason, prompt_tokens, completion_tokens, latency_s FROM calls WHERE key = ?",
                (key,),
            ).fetchone()
        if row is None:
            return None
        return Sample(
            text=row[0],
            finish_reason=row[1],
            usage=Usage(row[2], row[3]),
            latency_s=row[4],
            cached=True,
        )

    def record(
        self,
        key: str,
        *,
        model: str,
        stage: str,
        sample_index: int,
        request: ChatRequest,
        sample: Sample,
        retries: Sequence[str] = (),
    ) -> None:
        """Commit one completed sample (a duplicate key keeps the first record).

        ``retries`` says why each failed attempt before it was retried (``"HTTP 429"``, ``"timeout"``);
        they are committed with the sample, in one transaction, and counted even for a duplicate key:
        they happened and were paid for in time.
        """
        req = json.dumps(
            {"messages": [m.to_dict() for m in request.messages], "params": request.params()}, ensure_ascii=False
        )
        try:
            with self._write() as conn:
                conn.execute(
                    "INSERT OR IGNORE INTO calls VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        key,
                        model,
                        stage,
                        sample_index,
                        req,
                        sample.text,
                        sample.finish_reason,
                        sample.usage.prompt_tokens,
                        sample.usage.completion_tokens,
                        sample.latency_s,
                        time.time(),
                    ),
                )
                now = time.time()
                conn.executemany(
                    "INSERT INTO retries(key, model, stage, reason, created_at) VALUES (?,?,?,?,?)",
                    [(key, model, stage, reason, now) for reason in retries],
                )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write to run ledger {self.path}: {exc}") from exc

    def record_error(self, key: str, *, model: str, stage: str, error: str) -> None:
        """Note a call that failed for good, so the run report counts it per stage."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO errors(key, model, stage, error, created_at) VALUES (?,?,?,?,?)",
                (key, model, stage, error, time.time()),
            )

    def record_failure(self, *, stage: str, kind: str, detail: str, raw: str | None = None) -> None:
        """Count a non-call failure (a reply that did not parse, a judge that gave no verdict...)."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO failures(stage, kind, detail, raw, created_at) VALUES (?,?,?,?,?)",
                (stage, kind, detail, raw, time.time()),
            )

    def count_calls(self, stage: str | None = None) -> int:
        """How many calls are recorded, for ``stage`` or in all (replays add none)."""
        sql, args = (
            ("SELECT COUNT(*) FROM calls", ())
            if stage is None
            else (
                "SELECT COUNT(*) FROM calls WHERE stage = ?",
                (stage,),
            )
        )
        with self._lock:
            return int(self._conn.execute(sql, args).fetchone()[0])

    def count_errors(self, stage: str | None = None) -> int:
        """Calls that failed for good (after their retries), all stages or one."""
        sql = "SELECT COUNT(*) FROM errors" + (" WHERE stage = ?" if stage else "")
        with self._lock:
            return int(self._conn.execute(sql, (stage,) if stage else ()).fetchone()[0])

    def failures(self, stage: str | None = None) -> list[dict[str, Any]]:
        """The recorded failures, oldest first, for ``stage`` or in all."""
        sql = "SELECT stage, kind, detail, raw FROM failures" + (" WHERE stage = ?" if stage else "") + " ORDER BY id"
        with self._lock:
            rows = self._conn.execute(sql, (stage,) if stage else ()).fetchall()
        return [{"stage": r[0], "kind": r[1], "detail": r[2], "raw": r[3]} for r in rows]

    def stats(self) -> dict[str, StageStats]:
        """Per-stage totals: calls, tokens, latency, errors, failures and retried attempts (with why)."""
        out: dict[str, dict[str, Any]] = {}
        with self._lock:
            for stage, calls, pt, ct, lat in self._conn.execute(
                "SELECT stage, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens), SUM(latency_s) "
                "FROM calls GROUP BY stage"
            ):
                out.setdefault(stage, {}).update(
                    calls=calls, prompt_tokens=pt or 0, completion_tokens=ct or 0, latency_s=lat or 0.0
                )
            for stage, n in self._conn.execute("SELECT stage, COUNT(*) FROM errors GROUP BY stage"):
                out.setdefault(stage, {})["errors"] = n
            for stage, n in self._conn.execute("SELECT stage, COUNT(*) FROM failures GROUP BY stage"):
                out.setdefault(stage, {})["failures"] = n
            for stage, reason, n in self._conn.execute(
                "SELECT stage, reason, COUNT(*) FROM retries GROUP BY stage, reason"
            ):
                vals = out.setdefault(stage, {})
                vals["retries"] = vals.get("retries", 0) + n
                vals.setdefault("retry_reasons", {})[reason] = n
        return {stage: StageStats(stage=stage, **vals) for stage, vals in sorted(out.items())}

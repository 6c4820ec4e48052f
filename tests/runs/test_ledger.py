from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from memwise.exceptions import LLMError
from memwise.llm.base import ChatRequest
from memwise.llm.recorded import RecordedLLM
from memwise.runs.ledger import Ledger
from memwise.runs.rundir import RunDir
from memwise.testing import ScriptedLLM

WORKER = Path(__file__).with_name("_ledger_worker.py")


def _echo(req: ChatRequest) -> str:
    return f"{req.messages[-1].content}|seed={req.seed}"


async def test_rerun_replays_recorded_calls_and_pays_only_for_missing(tmp_path: Path) -> None:
    backend = ScriptedLLM(_echo)
    with Ledger(tmp_path / "l.sqlite3") as ledger:
        llm = RecordedLLM(backend, ledger, stage="s")
        first = await llm.complete(ChatRequest.of("q", n=3, temperature=0.7, seed=10))
        assert backend.calls == 3
        assert [s.text for s in first.samples] == ["q|seed=10", "q|seed=11", "q|seed=12"]
        # Same request again: all three samples replayed, none paid.
        again = await llm.complete(ChatRequest.of("q", n=3, temperature=0.7, seed=10))
        assert backend.calls == 3
        assert again.texts == first.texts
        assert all(s.cached for s in again.samples)
        # Two more samples of the same request: only the two new ones are paid.
        more = await llm.complete(ChatRequest.of("q", n=5, temperature=0.7, seed=10))
        assert backend.calls == 5
        assert more.texts[:3] == first.texts
        # A different parameter is a different call.
        await llm.complete(ChatRequest.of("q", n=1, temperature=0.0, seed=10))
        assert backend.calls == 6
        assert ledger.count_calls() == 6


async def test_identical_concurrent_calls_are_made_once(tmp_path: Path) -> None:
    backend = ScriptedLLM(_echo, latency_s=0.05)
    with Ledger(tmp_path / "l.sqlite3") as ledger:
        llm = RecordedLLM(backend, ledger)
        results = await asyncio.gather(*(llm.complete(ChatRequest.of("same")) for _ in range(10)))
    assert backend.calls == 1
    assert {r.text for r in results} == {"same|seed=None"}


async def test_errors_are_recorded_and_not_replayed(tmp_path: Path) -> None:
    attempts = {"n": 0}

    def flaky(req: ChatRequest) -> str:
        attempts["n"] += 1
        if attempts["n"] == 1:
            raise LLMError("boom", backend="scripted", status=500)
        return "ok"

    with Ledger(tmp_path / "l.sqlite3") as ledger:
        llm = RecordedLLM(ScriptedLLM(flaky), ledger, stage="judge")
        with pytest.raises(LLMError):
            await llm.complete(ChatRequest.of("x"))
        assert (await llm.complete(ChatRequest.of("x"))).text == "ok"
        stats = ledger.stats()["judge"]
        assert (stats.calls, stats.errors) == (1, 1)


def test_failures_are_counted_per_stage(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.ledger.record_failure(stage="extract", kind="parse", detail="no JSON", raw="garbage")
    run.ledger.record_failure(stage="extract", kind="parse", detail="no JSON", raw="more garbage")
    assert run.ledger.stats()["extract"].failures == 2
    assert [f["raw"] for f in run.ledger.failures("extract")] == ["garbage", "more garbage"]
    run.close()


def test_kill_9_mid_run_loses_only_calls_in_flight(tmp_path: Path) -> None:
    calls = 60
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), str(tmp_path), str(calls)], env=env, stdout=subprocess.DEVNULL
    )
    db = tmp_path / "ledger.sqlite3"
    deadline = time.monotonic() + 60
    recorded = 0
    while time.monotonic() < deadline:
        if db.exists():
            try:
                with closing(sqlite3.connect(db, timeout=5)) as conn:
                    recorded = conn.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
            except sqlite3.OperationalError:
                recorded = 0
            if recorded >= 20:
                break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        survived = conn.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
    assert 20 <= survived < calls

    done = subprocess.run(
        [sys.executable, str(WORKER), str(tmp_path), str(calls)], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    paid = int(done.stdout.strip().split("=")[1])
    assert paid == calls - survived
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT COUNT(DISTINCT key) FROM calls").fetchone()[0] == calls

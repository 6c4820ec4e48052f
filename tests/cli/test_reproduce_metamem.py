"""`memwise reproduce metamem` end to end on the fake server: all folds, one report, resumable for free."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from memwise.cli import app
from memwise.testing import FakeOpenAIServer
from memwise.testing.fake_openai import ChatCall

runner = CliRunner()
Responder = Callable[[ChatCall], str]
TYPES = ("single-session-user", "temporal-reasoning")


def _lme(n: int = 12) -> list[dict[str, object]]:
    """A tiny LongMemEval-format file: one haystack per question, two question types."""
    return [
        {
            "question_id": f"q{i}",
            "question_type": TYPES[i % 2],
            "question": f"What is my locker code, number {i}?",
            "answer": str(1000 + i),
            "question_date": "2023/07/01 (Sat) 10:00",
            "haystack_dates": ["2023/05/08 (Mon) 13:56"],
            "haystack_session_ids": [f"s{i}"],
            "haystack_sessions": [[{"role": "user", "content": f"My locker code is {1000 + i}.", "has_answer": True}]],
            "answer_session_ids": [f"s{i}"],
        }
        for i in range(n)
    ]


def _policy(call: ChatCall, user: str) -> str:
    """Right with the learned rule, else on even seeds only: the rules help on the test questions."""
    code = re.search(r"locker code is (\d+)", user)
    rules = "Quote numbers" in user
    seed = call.body.get("seed") or 0
    return f"It is {code.group(1)}." if code and (rules or seed % 2 == 0) else "I don't remember."


@pytest.fixture
def responder(metamem_responder: Callable[[Callable[[ChatCall, str], str]], Responder]) -> Responder:
    return metamem_responder(_policy)


def _ledger_calls(root: Path) -> int:
    total = 0
    for ledger in root.glob("fold-*/ledger.sqlite3"):
        with sqlite3.connect(ledger) as conn:
            total += conn.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
    return total


def test_reproduce_metamem_two_folds_report_and_free_resume(
    tmp_path: Path, responder: Responder, server_flags: Callable[[str], list[str]]
) -> None:
    data = tmp_path / "lme.json"
    data.write_text(json.dumps(_lme()))
    root = tmp_path / "repro"
    server = FakeOpenAIServer(responder=responder, json_responder=lambda call, schema: responder(call))
    with server.in_thread() as srv:
        args = [
            *server_flags(srv.base_url),
            "reproduce", "metamem", "--path", str(data), "--out", str(root), "--folds", "2",
            "--epochs", "1", "--batch-size", "3", "--samples", "2", "--top-k", "3",
        ]  # fmt: skip
        first = runner.invoke(app, args)
        assert first.exit_code == 0, first.output
        assert "Cost estimate" in first.output and "| rollout |" in first.output
        paid = srv.stats().completions
        calls = _ledger_calls(root)
        assert calls > 0

        report = (root / "report.md").read_text()
        assert "## Test accuracy by question type" in report and "paper (published, other models)" in report
        for qtype in (*TYPES, "all"):
            assert re.search(rf"\| {qtype} \| [\d.]+ ± [\d.]+ \[", report), qtype
        assert "+3.6%" in report and "| FullText | 74.87 | paper (published) |" in report
        assert "## Cost estimate (computed before any call)" in report
        results = json.loads((root / "results.json").read_text())
        assert len(results["folds"]) == 2 and results["by_type"]["all"]["with"]["folds"] == 2
        tested = [q for f in results["folds"] for q in f["test_ids"]]
        assert sorted(tested) == sorted(f"q{i}" for i in range(12))  # each question tested in exactly one fold

        again = runner.invoke(app, args)
        assert again.exit_code == 0, again.output
        assert _ledger_calls(root) == calls  # everything replayed: nothing paid twice
        assert srv.stats().completions == paid  # and the server saw no new chat request
        assert (root / "report.md").read_text() == report


def test_estimate_only_makes_no_call(tmp_path: Path) -> None:
    data = tmp_path / "lme.json"
    data.write_text(json.dumps(_lme()))
    out = runner.invoke(
        app, ["reproduce", "metamem", "--path", str(data), "--out", str(tmp_path / "r"), "--folds", "2",
              "--epochs", "2", "--batch-size", "3", "--samples", "2", "--estimate-only"],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    # 2 folds x 5 train questions (12 questions: 6 test, 1 validation per fold) x 2 epochs x 2 samples.
    assert re.search(r"\| rollout \| 40 \|", out.output), out.output
    assert not (tmp_path / "r").exists()


def test_estimate_charges_each_stage_its_own_budget(tmp_path: Path) -> None:
    data = tmp_path / "lme.json"
    data.write_text(json.dumps(_lme()))
    out = runner.invoke(
        app, ["reproduce", "metamem", "--path", str(data), "--out", str(tmp_path / "r"), "--folds", "2",
              "--epochs", "2", "--batch-size", "3", "--samples", "2", "--estimate-only", "--max-tokens", "100",
              "--rollout-tokens", "2000", "--judge-tokens", "8", "--answer-style", "reasoning"],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    # 40 rollouts at 2,000, 40 judge calls at 8, 40 reflections at the shared 100.
    assert re.search(r"\| rollout \| 40 \| 80,000 \|", out.output), out.output
    assert re.search(r"\| judge \| 40 \| 320 \|", out.output), out.output
    assert re.search(r"\| reflect \| 40 \| 4,000 \|", out.output), out.output


def test_reproduce_metamem_with_the_lightmem_memory(
    tmp_path: Path, responder: Responder, server_flags: Callable[[str], list[str]]
) -> None:
    def lightmem_responder(call: ChatCall) -> str:
        """Facts for extraction calls (each turn restated), the usual replies otherwise."""
        user = str(call.messages[-1]["content"])
        fmt = (call.body.get("response_format") or {}).get("json_schema") or {}
        if fmt.get("name") == "Extraction":
            turns = re.findall(r'<turn id="(T\d+)">([^:]+): ([^<]*)</turn>', user)
            facts = [{"text": f"The user said: {t}", "speaker": who, "source_ids": [tid]} for tid, who, t in turns]
            return json.dumps({"facts": facts})
        return responder(call)

    data = tmp_path / "lme.json"
    data.write_text(json.dumps(_lme(6)))
    root = tmp_path / "repro"
    server = FakeOpenAIServer(responder=lightmem_responder, json_responder=lambda call, _: lightmem_responder(call))
    with server.in_thread() as srv:
        args = [
            *server_flags(srv.base_url),
            "reproduce", "metamem", "--path", str(data), "--out", str(root), "--folds", "2",
            "--epochs", "1", "--batch-size", "3", "--samples", "2", "--top-k", "3", "--memory", "lightmem",
        ]  # fmt: skip
        done = runner.invoke(app, args)
        assert done.exit_code == 0, done.output
        memwise = runner.invoke(app, [*args[:-1], "memwise"])
    questions = [json.loads(line) for line in (root / "questions.jsonl").read_text().splitlines()]
    assert all(q["metadata"]["memory"] == "lightmem" for q in questions)
    assert all(m.split(" ", 3)[3].startswith("The user said: ") for q in questions for m in q["memories"])
    assert "Factual memory: lightmem, top-3 fragments" in (root / "report.md").read_text()
    assert memwise.exit_code != 0 and "prepared with memory lightmem" in str(memwise.exception)

"""memwise metamem prepare/train/show/diff/eval against a fake OpenAI server on loopback."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from typer.testing import CliRunner

from memwise.cli import app
from memwise.testing import FakeOpenAIServer
from memwise.testing.fake_openai import ChatCall

runner = CliRunner()
Responder = Callable[[ChatCall], str]


def _sessions(i: int) -> list[list[dict[str, object]]]:
    return [[{"role": "user", "content": f"My locker code is {1000 + i}.", "has_answer": True}]]


LME = [
    {
        "question_id": f"q{i}",
        "question_type": "single-session-user",
        "question": f"What is my locker code, number {i}?",
        "answer": str(1000 + i),
        "question_date": "2023/07/01 (Sat) 10:00",
        "haystack_dates": ["2023/05/08 (Mon) 13:56"],
        "haystack_session_ids": [f"s{i}"],
        "haystack_sessions": _sessions(i),
        "answer_session_ids": [f"s{i}"],
    }
    for i in range(10)
]


def _policy(call: ChatCall, user: str) -> str:
    """Right on even seeds only, so a question's samples disagree and it is kept for reflection."""
    code = re.search(r"locker code is (\d+)", user)
    seed = call.body.get("seed") or 0
    return f"It is {code.group(1)}." if code and seed % 2 == 0 else "I don't remember."


def test_prepare_train_show_diff_eval(
    tmp_path: Path,
    server_flags: Callable[[str], list[str]],
    metamem_responder: Callable[[Callable[[ChatCall, str], str]], Responder],
) -> None:
    data = tmp_path / "lme.json"
    data.write_text(json.dumps(LME))
    responder = metamem_responder(_policy)
    with FakeOpenAIServer(responder=responder, json_responder=lambda call, schema: responder(call)).in_thread() as srv:
        base = server_flags(srv.base_url)
        qs = tmp_path / "qs.jsonl"
        prepared = runner.invoke(
            app, [*base, "metamem", "prepare", "--path", str(data), "--out", str(qs), "--top-k", "5"]
        )
        assert prepared.exit_code == 0, prepared.output
        rows = [json.loads(line) for line in qs.read_text().splitlines()]
        assert len(rows) == 10 and all(r["answer"] and r["memories"] and r["question_date"] for r in rows)

        run_dir = tmp_path / "run"
        trained = runner.invoke(
            app,
            [
                *base,
                "metamem",
                "train",
                "--questions",
                str(qs),
                "--run-dir",
                str(run_dir),
                "--epochs",
                "1",
                "--batch-size",
                "3",
                "--samples",
                "4",
                "--val-frac",
                "0.2",
                "--test-frac",
                "0.2",
            ],
        )
        assert trained.exit_code == 0, trained.output
        assert "validation accuracy by step" in trained.output and "rules chosen" in trained.output
        result = json.loads((run_dir / "metamem" / "result.json").read_text())
        assert result["best_step"] >= 0 and result["test_with_rules"]["scored"] == 2

        shown = runner.invoke(app, ["metamem", "show", "--run-dir", str(run_dir), "--step", "1"])
        assert shown.exit_code == 0 and "[R1] Quote numbers from fragments exactly." in shown.output
        changed = runner.invoke(app, ["metamem", "diff", "0", "1", "--run-dir", str(run_dir)])
        assert changed.exit_code == 0 and "R1" in changed.output and "step 1" in changed.output

        report = (run_dir / "metamem" / "report.md").read_text()
        assert (
            "## Validation accuracy by step" in report and "![validation accuracy per step](validation.png)" in report
        )
        assert (run_dir / "metamem" / "validation.png").read_bytes()[:4] == b"\x89PNG"
        assert "| rollout |" in report and "## Test accuracy by question type" in report

        evaluated = runner.invoke(app, [*base, "metamem", "eval", "--questions", str(qs), "--run-dir", str(run_dir)])
        assert evaluated.exit_code == 0, evaluated.output
        assert "without rules" in evaluated.output

"""ingest / search / answer / bench qa from the command line, against a fake server on loopback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from memwise.cli import app
from memwise.testing import FakeOpenAIServer
from memwise.testing.fake_openai import ChatCall

runner = CliRunner()

LONGMEMEVAL = [
    {
        "question_id": "q1",
        "question_type": "single-session-user",
        "question": "What is the name of my dog?",
        "answer": "Pepper",
        "question_date": "2023/07/01 (Sat) 10:00",
        "haystack_dates": ["2023/05/08 (Mon) 13:56", "2023/05/09 (Tue) 09:00"],
        "haystack_session_ids": ["s1", "s2"],
        "haystack_sessions": [
            [
                {"role": "user", "content": "I adopted a beagle called Pepper.", "has_answer": True},
                {"role": "assistant", "content": "Pepper is a lovely name!"},
            ],
            [{"role": "user", "content": "I bought new running shoes."}],
        ],
        "answer_session_ids": ["s1"],
    },
    {
        "question_id": "q2_abs",
        "question_type": "single-session-user",
        "question": "What is the name of my cat?",
        "answer": "You did not mention a cat.",
        "question_date": "2023/07/01 (Sat) 10:00",
        "haystack_dates": ["2023/05/08 (Mon) 13:56"],
        "haystack_session_ids": ["s3"],
        "haystack_sessions": [[{"role": "user", "content": "I adopted a beagle called Pepper."}]],
        "answer_session_ids": ["s3"],
    },
]


def _responder(call: ChatCall) -> str:
    prompt = call.prompt
    if "Reply with one word: yes or no" in prompt:  # the judge
        return "yes" if "Pepper" in prompt.split("Response")[-1] else "no"
    if "Question: <question>What is the name of my dog?</question>" in prompt:
        return "Your dog is called Pepper."
    return "I don't know."


@pytest.fixture
def server():  # type: ignore[no-untyped-def]
    with FakeOpenAIServer(responder=_responder).in_thread() as srv:
        yield srv


def _write_dataset(folder: Path) -> Path:
    data = folder / "lme.json"
    data.write_text(json.dumps(LONGMEMEVAL))
    return data


def _model_args(server: FakeOpenAIServer) -> list[str]:
    """Global options that send chat and embedding calls alike to the fake server."""
    url = server.base_url
    return ["--base-url", url, "--model", "m", "--embed-backend", "openai", "--embed-base-url", url]


def test_ingest_search_answer(tmp_path: Path, server: FakeOpenAIServer) -> None:
    data = _write_dataset(tmp_path)
    db = tmp_path / "mem.sqlite3"
    base = _model_args(server)
    done = runner.invoke(app, [*base, "ingest", str(data), "--db", str(db)])
    assert done.exit_code == 0, done.output
    assert "4 turns -> 4 units written" in done.output
    again = runner.invoke(app, [*base, "ingest", str(data), "--db", str(db)])
    assert "0 units written" in again.output

    found = runner.invoke(app, [*base, "search", "beagle", "--user-id", "q1", "--db", str(db), "--json"])
    assert found.exit_code == 0, found.output
    hits = json.loads(found.stdout.splitlines()[-1])
    assert hits and all("Pepper" in h["memory"] or "shoes" in h["memory"] for h in hits)
    assert "2023-05-08 13:56 Monday user: I adopted a beagle called Pepper." in hits[0]["memory"]
    # q2_abs's memory is another user's: never visible under q1.
    assert len(hits) == 3

    answered = runner.invoke(
        app,
        [
            *base,
            "answer",
            "What is the name of my dog?",
            "--user-id",
            "q1",
            "--db",
            str(db),
            "--question-date",
            "2023/07/01 (Sat) 10:00",
        ],
    )
    assert answered.exit_code == 0, answered.output
    assert "Your dog is called Pepper." in answered.stdout

    # Asked on the evening of the first session: the next day's session does not exist yet.
    early = [*base, "answer", "What is the name of my dog?", "--user-id", "q1", "--db", str(db), "--show-memories"]
    before = runner.invoke(app, [*early, "--question-date", "2023/05/08 (Mon) 23:00"])
    assert before.exit_code == 0, before.output
    assert "called Pepper" in before.stdout and "running shoes" not in before.stdout
    unbounded = runner.invoke(app, early)
    assert "running shoes" in unbounded.stdout


def test_bench_qa_scores_and_resumes(tmp_path: Path, server: FakeOpenAIServer) -> None:
    data = _write_dataset(tmp_path)
    run_dir = tmp_path / "run"
    base = _model_args(server)
    args = [*base, "bench", "qa", "--dataset", "longmemeval", "--path", str(data), "--run-dir", str(run_dir)]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    report = json.loads((run_dir / "qa_report.json").read_text())
    assert report["questions"] == 2 and report["judged"] == 2
    assert report["accuracy"] == 0.5  # q1 right; q2_abs answered "I don't know" but the fake judge says no
    rows = [json.loads(line) for line in (run_dir / "qa_results.jsonl").read_text().splitlines()]
    assert {r["question_id"]: r["judge_correct"] for r in rows} == {"q1": True, "q2_abs": False}
    assert report["stages"]["answer"]["calls"] == 2 and report["stages"]["judge"]["calls"] == 2
    calls_before = server.stats().completions
    second = runner.invoke(app, args)
    assert second.exit_code == 0, second.output
    assert server.stats().completions == calls_before  # everything resumed, nothing paid twice

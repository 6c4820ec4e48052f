"""memwise umem evolve against a fake OpenAI-compatible server on loopback."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from typer.testing import CliRunner

from memwise.cli import app
from memwise.testing import FakeOpenAIServer
from memwise.testing.fake_openai import ChatCall

runner = CliRunner()


def _responder(call: ChatCall) -> str:
    system, user = call.messages[0]["content"], call.messages[-1]["content"]
    if "<experience>" not in system:
        # The executor: right on the first two questions only when it was shown a lesson.
        shown = "Lessons from similar past tasks" in user
        return "Answer: B" if shown or "red planet" in user else "Answer: A"
    if "red planet" in user:
        return "Nothing to add here."  # malformed: no <experience> block
    op = "UPDATE 0" if "Entry 0:" in user else "ADD"
    return (
        f"Analysis.\n<experience><value>Recall the defining fact first.</value><operation>{op}</operation></experience>"
    )


def test_evolve_writes_records_summary_and_plots_then_resumes_for_free(
    tmp_path: Path, mmlu_file: Callable[..., Path], server_flags: Callable[[str], list[str]]
) -> None:
    data = mmlu_file()
    run_dir = tmp_path / "run"
    with FakeOpenAIServer(responder=_responder).in_thread() as srv:
        args = [
            *server_flags(srv.base_url),
            "umem",
            "evolve",
            "--suite",
            "mmlu",
            "--path",
            str(data),
            "--epochs",
            "2",
            "--run-dir",
            str(run_dir),
            "--max-tokens",
            "64",
        ]
        first = runner.invoke(app, args)
        assert first.exit_code == 0, first.output
        calls = srv.stats().completions
        # 3 tasks x 2 epochs x (executor + Mem-Optimizer), plus one schema-constrained repair request for the
        # third task's malformed reply; that task is shown no lesson in either epoch, so its second-epoch
        # prompts are the first's and are replayed from the ledger: 7 + 4.
        assert calls == 11

        records = [json.loads(line) for line in (run_dir / "records.jsonl").read_text().splitlines()]
        assert [(r["epoch"], r["task_id"]) for r in records] == [(e, f"mmlu-{i}") for e in (1, 2) for i in range(3)]
        assert [r["action"] for r in records] == ["ADD", "ADD", None, "UPDATE 0", "UPDATE 0", None]
        assert [r["format_failure"] for r in records if r["action"] is None] == ["no experience block"] * 2
        assert [r["bank_size"] for r in records] == [1, 2, 2, 2, 2, 2]

        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["finished"] and summary["completed"] == 6
        assert [e["accuracy"] for e in summary["epochs"]] == [1 / 3, 1.0]
        assert summary["format_failures"] == {"no experience block": 2}
        assert summary["stages"]["executor"]["calls"] == 5 and summary["stages"]["optimizer"]["calls"] == 6
        for name in ("cumulative_accuracy.png", "epoch_accuracy.png"):
            assert (run_dir / name).read_bytes()[:4] == b"\x89PNG"
        report = (run_dir / "report.md").read_text()
        assert "| no experience block | 2 |" in report and "![epoch accuracy](epoch_accuracy.png)" in report
        assert "no experience block: 2" in first.output and str(run_dir / "summary.json") in first.output

        again = runner.invoke(app, args)
        assert again.exit_code == 0, again.output
        assert "resumed after 6 recorded tasks" in again.output
        assert srv.stats().completions == calls  # nothing asked of the model twice


def test_evolve_refuses_an_unknown_suite(tmp_path: Path) -> None:
    result = runner.invoke(app, ["umem", "evolve", "--suite", "chess", "--path", str(tmp_path / "x.jsonl")])
    assert result.exit_code != 0
    assert "known suites: aime, gpqa, hle, hotpotqa, mmlu, alfworld" in str(result.exception)


def test_the_mem_optimizer_can_live_on_its_own_server(tmp_path: Path, mmlu_file: Callable[..., Path]) -> None:
    data = mmlu_file(2)
    with (
        FakeOpenAIServer(responder=_responder).in_thread() as policy,
        FakeOpenAIServer(responder=_responder).in_thread() as optimizer,
    ):
        result = runner.invoke(
            app,
            [
                "--base-url", policy.base_url, "--model", "executor", "--optimizer-base-url", optimizer.base_url,
                "--optimizer-model", "mem-optimizer", "--embed-backend", "openai", "--embed-base-url", policy.base_url,
                "umem", "evolve", "--suite", "mmlu", "--path", str(data), "--run-dir", str(tmp_path / "run"),
                "--max-tokens", "64",
            ],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        # two executor calls on the policy server; two Mem-Optimizer calls (both ADD) on the other
        assert policy.stats().completions == 2 and optimizer.stats().completions == 2

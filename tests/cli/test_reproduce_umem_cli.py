"""memwise reproduce umem against a fake OpenAI-compatible server: every method, the paper column, resume."""

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
        # The executor is right only when shown something from memory (any lesson or past attempt).
        return "\\boxed{B}" if "Lessons from similar past tasks" in user else "\\boxed{A}"
    model = call.body["model"]
    lesson = f"<value>Recall the defining fact first ({model}).</value>"
    return f"Analysis.\n<experience>{lesson}<operation>ADD</operation></experience>"


def test_reproduce_umem_runs_every_method_and_writes_the_paper_column_then_resumes_for_free(
    tmp_path: Path, mmlu_file: Callable[..., Path]
) -> None:
    data = mmlu_file()
    out = tmp_path / "repro"
    with FakeOpenAIServer(responder=_responder).in_thread() as srv:
        args = [
            "--base-url", srv.base_url, "--model", "executor", "--optimizer-model", "umem-4b",
            "--optimizer-base-url", srv.base_url,
            "--embed-backend", "openai", "--embed-base-url", srv.base_url,
            "reproduce", "umem", "--suite", f"mmlu={data}", "--out", str(out), "--epochs", "2",
            "--max-tokens", "32", "--optimizer-max-tokens", "64",
            "--baseline-optimizer-model", "base-4b", "--ablation", "no-snm=umem-nosnm", "--ablation", "n1=umem-n1",
        ]  # fmt: skip
        estimate = runner.invoke(app, [*args, "--estimate-only"])
        assert estimate.exit_code == 0, estimate.output
        assert srv.stats().completions == 0  # the estimate is printed before any call
        # 3 tasks x 2 epochs: executor calls for six methods, optimizer calls for the four that have one
        assert "mmlu/no-memory: 6 executor + 0 optimizer calls" in estimate.output
        assert "mmlu/umem: 6 executor + 6 optimizer calls" in estimate.output
        assert "mmlu/n5" not in estimate.output  # no served model: not run, not costed
        # 6 methods x 6 executor calls + 4 x 6 optimizer calls + as many repairs at most
        assert "total: <= 84 calls" in estimate.output

        first = runner.invoke(app, args)
        assert first.exit_code == 0, first.output
        assert first.output.index("Cost estimate") < first.output.index("mmlu/no-memory: accuracy")
        calls = srv.stats().completions

        report = (out / "report.md").read_text()
        for label in (
            "No memory",
            "No-Train",
            "Raw-trajectory retrieval",
            "UMEM (trained Mem-Optimizer)",
            "without SNM",
            "N = 1 neighbour",
            "N = 5 neighbours",
            "released reward form",
        ):
            assert label in report, label
        # the paper's published figures sit beside ours, labelled as such
        assert "45.36 avg" in report and "57.74 avg" in report and "54.71 avg (best baseline, Memp)" in report
        assert "AIME -10 points" in report and "published figures" in report
        assert "--ablation n5=SERVED_MODEL_NAME" in report and "| not run |" in report
        assert "Chance level: mmlu 44.4" in report  # (1/2 + 1/3 + 1/2) / 3
        assert "![mmlu cumulative accuracy](mmlu_cumulative_accuracy.png)" in report
        assert (out / "mmlu_cumulative_accuracy.png").read_bytes()[:4] == b"\x89PNG"

        results = json.loads((out / "results.json").read_text())
        methods = results["suites"]["mmlu"]["methods"]
        assert set(methods) == {"no-memory", "no-train", "raw-trajectory", "umem", "no-snm", "n1"}
        # never shown memory: always wrong; memory-using methods are right on every task of epoch 2
        assert methods["no-memory"]["accuracy"] == 0.0 and methods["no-memory"]["calls"]["optimizer"] == 0
        assert methods["umem"]["accuracy"] == 0.5 and methods["raw-trajectory"]["accuracy"] == 0.5
        assert methods["no-memory"]["interval"][1] < 0.5  # the band is reported, not only the point
        # each Mem-Optimizer role reached its own model name
        lessons = {
            key: json.loads((out / "mmlu" / key / "records.jsonl").read_text().splitlines()[0])["written_id"]
            for key in ("umem", "no-train", "no-snm")
        }
        assert all(lessons.values())
        for key, model in (("umem", "umem-4b"), ("no-train", "base-4b"), ("no-snm", "umem-nosnm")):
            ledger_text = (out / "mmlu" / key / "manifest.json").read_text()
            assert model in ledger_text, key

        again = runner.invoke(app, args)
        assert again.exit_code == 0, again.output
        assert "Cost estimate" in again.output
        assert srv.stats().completions == calls  # a finished protocol pays nothing again
        assert (out / "report.md").read_text() == report


def test_reproduce_umem_refuses_a_malformed_suite_or_unknown_ablation(mmlu_file: Callable[..., Path]) -> None:
    bad = runner.invoke(app, ["reproduce", "umem", "--suite", "mmlu"])
    assert bad.exit_code != 0 and "--suite takes NAME=PATH" in str(bad.exception)
    data = mmlu_file(1)
    args = ["reproduce", "umem", "--suite", f"mmlu={data}", "--ablation", "n7=x", "--estimate-only"]
    unknown = runner.invoke(app, args)
    assert unknown.exit_code != 0 and "unknown ablation(s) n7" in str(unknown.exception)

"""Retries that ended in success are counted per stage in the ledger and shown by every report."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from memwise.cli import app
from memwise.cli.bench import _print_qa
from memwise.llm.base import ChatRequest
from memwise.llm.openai_compat import OpenAICompatLLM
from memwise.metamem.report import build_markdown
from memwise.runs.ledger import StageStats, retries_line
from memwise.runs.rundir import RunDir
from memwise.testing import FakeOpenAIServer
from memwise.testing.fake_openai import FailurePlan
from memwise.umem.evolve_report import build_markdown as evolve_markdown
from memwise.umem.evolve_report import summarise

# Every distinct request: a 429, then a 500, then the answer.
RATE_LIMITED_THEN_500 = FailurePlan(first_attempts=2, kinds=("rate_limit", "server_error"), retry_after_s=0.01)


def _llm(srv: FakeOpenAIServer, **kw: float) -> OpenAICompatLLM:
    return OpenAICompatLLM(base_url=srv.base_url, model="m", backoff_base_s=0.001, backoff_max_s=0.01, **kw)


async def _stats_after_retried_calls(run_dir: Path) -> dict[str, StageStats]:
    async with FakeOpenAIServer(failures=RATE_LIMITED_THEN_500) as srv:
        llm = _llm(srv)
        try:
            with RunDir(run_dir) as run:
                judge, rollout = run.record(llm, "judge"), run.record(llm, "rollout")
                for i in range(3):
                    assert (await judge.complete(ChatRequest.of(f"judge {i}"))).text == f"echo: judge {i}"
                await rollout.complete(ChatRequest.of("roll", temperature=0.7, seed=1))
                # Replayed calls were paid (and retried) once: replaying them adds no retries.
                for i in range(3):
                    assert (await judge.complete(ChatRequest.of(f"judge {i}"))).samples[0].cached
                return run.ledger.stats()
        finally:
            await llm.aclose()


async def test_retries_are_counted_per_stage_with_their_reasons(tmp_path: Path) -> None:
    stats = await _stats_after_retried_calls(tmp_path / "run")
    judge, rollout = stats["judge"], stats["rollout"]
    assert (judge.calls, judge.errors, judge.retries) == (3, 0, 6)
    assert judge.retry_reasons == {"HTTP 429": 3, "HTTP 500": 3}
    assert (rollout.calls, rollout.retries) == (1, 2)
    # The counts live in the ledger file: a later reader sees them.
    with RunDir(tmp_path / "run", lock=False) as again:
        assert again.ledger.stats()["judge"].retries == 6


async def test_a_timed_out_attempt_is_counted_as_a_timeout(tmp_path: Path) -> None:
    plan = FailurePlan(first_attempts=1, kinds=("timeout",), hold_s=2.0)
    async with FakeOpenAIServer(failures=plan) as srv:
        llm = _llm(srv, timeout_s=0.2)
        try:
            with RunDir(tmp_path) as run:
                await run.record(llm, "answer").complete(ChatRequest.of("slow"))
                assert run.ledger.stats()["answer"].retry_reasons == {"timeout": 1}
        finally:
            await llm.aclose()


async def test_every_report_shows_the_retries(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stats = await _stats_after_retried_calls(tmp_path / "run")
    expected = "judge 6 (HTTP 429 x3, HTTP 500 x3)"
    assert retries_line(stats) == f"retries: {expected}; rollout 2 (HTTP 429 x1, HTTP 500 x1)"
    metamem = build_markdown({"best_step": 0}, stats, plot_name=None)
    assert "| retries |" in metamem and "| 6 (HTTP 429 x3, HTTP 500 x3) |" in metamem and expected in metamem
    evolve = evolve_markdown(summarise([], suite="mmlu", tasks_per_epoch=1, epochs=1, stages=stats))
    assert "| 6 (HTTP 429 x3, HTTP 500 x3) |" in evolve and expected in evolve
    # The QA bench summary, as `memwise bench qa` prints it (its JSON carries the same stage dicts).
    from dataclasses import asdict

    qa = {
        "accuracy_by_category": {}, "f1_by_category": {}, "accuracy": None, "f1": None, "questions": 0,
        "judged": 0, "answer_failures": 0, "judge_failures": 0, "tokens_per_question": 0.0,
        "stages": {name: asdict(st) for name, st in stats.items()},
    }  # fmt: skip
    _print_qa(qa)
    assert expected in capsys.readouterr().out


def test_doctor_prints_the_retries_of_its_health_calls() -> None:
    with FakeOpenAIServer(failures=RATE_LIMITED_THEN_500).in_thread() as srv:
        result = CliRunner().invoke(
            app,
            ["--base-url", srv.base_url, "--model", "m", "--embed-backend", "openai", "--embed-base-url",
             srv.base_url, "doctor"],
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # rich wraps long lines at the terminal width
    policy = text[text.index("ok model:policy") :].split(" ok ")[0]
    assert "2 retries: HTTP 429, HTTP 500" in policy

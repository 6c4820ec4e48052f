"""One limit on model calls per role: ``ModelConfig.max_concurrency``, enforced by the backend.

Callers (ingest, the judge, the MetaMem trainer, UMEM's attempts, QA evaluation) start their work at
once and add no semaphore of their own, so the one setting (``memwise --concurrency`` or
``MEMWISE_CONCURRENCY``) is the number of calls in flight, whoever makes them.
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from memwise.cli import app
from memwise.config import load_settings
from memwise.llm.registry import ModelSet
from memwise.tasks.judge import JudgeCase, LLMJudge
from memwise.testing import FakeOpenAIServer
from memwise.testing.scripted import ScriptedLLM


async def test_callers_add_no_limit_of_their_own() -> None:
    """The judge used to cap itself at 16 in flight whatever the backend allowed."""
    llm = ScriptedLLM(lambda req: "yes", latency_s=0.02)
    await LLMJudge(llm).score_many([JudgeCase(f"Q{i}?", "A", "A", question_type="generic") for i in range(40)])
    assert llm.peak_in_flight == 40


async def test_the_roles_backend_is_the_one_bound_set_from_one_setting() -> None:
    async with FakeOpenAIServer(latency_s=0.02) as srv:
        settings = load_settings(
            env={"MEMWISE_BASE_URL": srv.base_url, "MEMWISE_MODEL": "m", "MEMWISE_CONCURRENCY": "3"}
        )
        models = ModelSet(settings)
        try:
            judge = LLMJudge(models.get("judge"))
            cases = [JudgeCase(f"Q{i}?", "A", "A", question_type="generic") for i in range(12)]
            await judge.score_many(cases)
        finally:
            await models.aclose()
        stats = srv.stats()
    assert stats.completions >= 12 and stats.max_in_flight == 3


@pytest.mark.parametrize(
    "command", [["metamem", "train", "--questions", "q.jsonl"], ["metamem", "eval", "--questions", "q.jsonl"]]
)
def test_subcommands_have_no_concurrency_option_of_their_own(command: list[str]) -> None:
    """``memwise --concurrency 4 metamem train --concurrency 16`` had two meanings; only the global one is left."""
    result = CliRunner().invoke(app, [*command, "--concurrency", "16"])
    assert result.exit_code == 2 and "No such option" in result.output

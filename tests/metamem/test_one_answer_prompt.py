"""Rules are selected on the prompt they serve in: every answering path builds the very same prompt.

Rollouts, validation, test, ``memwise metamem answer`` and ``Memory.answer(rules=...)`` answer one
question from the same fragments with the same rules; the prompts they send must be equal, character
for character. (``Memory.answer`` once showed rules as ``- text`` under another heading, so a rule set
was chosen on one prompt and served on another.)
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from memwise.cli import app
from memwise.config import load_settings
from memwise.facts.answer import Answer
from memwise.facts.memory import AsyncMemory
from memwise.facts.readers import read_conversations
from memwise.llm.base import ChatRequest
from memwise.metamem.data import MetaQuestion
from memwise.metamem.evaluate import evaluate_rules, validate_history
from memwise.metamem.pipeline import result_path
from memwise.metamem.prepare import prepare_from_conversations
from memwise.metamem.rule_history import RuleHistory
from memwise.metamem.rules import Operation, RuleSet
from memwise.metamem.train_config import StageBudgets, TrainConfig
from memwise.metamem.trainer import MetaMemTrainer
from memwise.runs.rundir import RunDir
from memwise.testing import FakeOpenAIServer, ScriptedLLM
from memwise.testing.fake_openai import ChatCall

QUESTION_DATE = "2023/07/01 (Sat) 10:00"
LME = [
    {
        "question_id": "q1",
        "question_type": "knowledge-update",
        "question": "What is my dog called now?",
        "answer": "Biscuit",
        "question_date": QUESTION_DATE,
        "haystack_dates": ["2023/05/08 (Mon) 13:56", "2023/06/10 (Sat) 09:00"],
        "haystack_session_ids": ["s1", "s2"],
        "haystack_sessions": [
            [{"role": "user", "content": "My dog is called Rex.", "has_answer": True}],
            [{"role": "user", "content": "We renamed the dog Biscuit.", "has_answer": True}],
        ],
        "answer_session_ids": ["s1", "s2"],
    }
]
Prompt = tuple[tuple[str, str], ...]


def _rules() -> RuleSet:
    """Ids R2 and R3 (R1 deleted): a plain list would have renumbered them."""
    ops = [Operation("add", text=t) for t in ("Drop me.", "Prefer the newest fragment.", "Use  the question date.")]
    rules = RuleSet().apply(ops, step=1).new_set
    return rules.apply([Operation("delete", rule_id="R1")], step=2).new_set


def _prompt(request: ChatRequest) -> Prompt:
    return tuple((m.role, m.content) for m in request.messages)


def _call_prompt(call: ChatCall) -> Prompt:
    return tuple((str(m["role"]), str(m["content"])) for m in call.messages)


async def _library_prompts(q: MetaQuestion, rules: RuleSet, tmp_path: Path, style: str) -> dict[str, Prompt]:
    """The prompts of a training rollout, a validation answer and a test answer (scripted models)."""
    policy = ScriptedLLM(lambda req: "Thinking.\nAnswer: Biscuit")
    config = TrainConfig(samples=1, batch_size=1, epochs=1, answer_style=style)
    with RunDir(tmp_path / "run") as run:
        optimizer = ScriptedLLM(lambda r: "{}")
        trainer = MetaMemTrainer(policy=policy, optimizer=optimizer, run=run, metric="em", config=config)
        await trainer.train_step(1, 0, [q], rules)
    rollout = [r for r in policy.requests if r.json_schema is None]
    assert len(rollout) == 1

    val_llm, test_llm = ScriptedLLM(lambda r: "Biscuit"), ScriptedLLM(lambda r: "Biscuit")
    common: dict[str, Any] = {"scorer": trainer.eval_scorer, "style": config.style}
    await validate_history(RuleHistory.start(rules), [q], policy=val_llm, **common)
    await evaluate_rules([q], rules, policy=test_llm, **common)
    return {
        "rollout": _prompt(rollout[0]),
        "validation": _prompt(val_llm.requests[0]),
        "test": _prompt(test_llm.requests[0]),
    }


def _write_run(run_dir: Path, rules: RuleSet, config: TrainConfig) -> None:
    """A finished run as `metamem answer` reads it: the chosen rules and the training config."""
    path = result_path(run_dir)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"rules": rules.to_dict()}))
    (path.parent / "history.json").write_text(json.dumps({"config": asdict(config)}))


def test_rollout_validation_test_cli_and_memory_answer_send_the_same_prompt(tmp_path: Path) -> None:
    data = tmp_path / "lme.json"
    data.write_text(json.dumps(LME))
    db = tmp_path / "mem.db"
    rules = _rules()
    answered: list[ChatCall] = []

    def responder(call: ChatCall) -> str:
        answered.append(call)
        return "Thinking.\nAnswer: Biscuit"

    with FakeOpenAIServer(responder=responder).in_thread() as srv:
        settings = load_settings(
            overrides={
                "policy": {"backend": "openai", "base_url": srv.base_url, "model": "m"},
                "embedding": {"backend": "openai", "base_url": srv.base_url},
            }
        )

        async def library_and_memory() -> tuple[dict[str, Prompt], Answer]:
            memory = AsyncMemory.from_settings(settings, db)
            try:
                [q] = await prepare_from_conversations(read_conversations(data, "longmemeval"), memory=memory)
                library = await _library_prompts(q, rules, tmp_path, "reasoning")
                reply = await memory.answer(
                    q.question,
                    user_id="q1",
                    question_date=QUESTION_DATE,
                    rules={r.id: r.text for r in rules.rules},
                    style="reasoning",
                )
            finally:
                await memory.aclose()
            return library, reply

        library, reply = asyncio.run(library_and_memory())
        assert reply.text == "Biscuit" and reply.reasoning == "Thinking.\nAnswer: Biscuit"
        memory_answer = _call_prompt(answered[-1])

        run_dir = tmp_path / "trained"
        _write_run(run_dir, rules, TrainConfig(answer_style="reasoning"))
        base = ["--base-url", srv.base_url, "--model", "m", "--embed-backend", "openai"]
        base += ["--embed-base-url", srv.base_url]
        args = ["metamem", "answer", str(LME[0]["question"]), "--user-id", "q1", "--db", str(db)]
        args += ["--run-dir", str(run_dir)]
        out = CliRunner().invoke(app, [*base, *args, "--question-date", QUESTION_DATE])
        assert out.exit_code == 0, out.output
        assert out.output.strip().splitlines()[-1] == "Biscuit"  # the final answer, not the reasoning
        cli_answer = _call_prompt(answered[-1])

    prompts = {**library, "Memory.answer": memory_answer, "metamem answer": cli_answer}
    reference = prompts["rollout"]
    user = reference[-1][1]
    assert "[R2] Prefer the newest fragment.\n[R3] Use the question date." in user
    assert "Rex" in user and "Biscuit" in user and f"Today is {QUESTION_DATE}." in user
    assert "Answer: <the answer, briefly>" in user  # the reasoning variant
    for name, prompt in prompts.items():
        assert prompt == reference, f"{name} builds another prompt than the rollouts"


async def test_reasoning_rollouts_are_judged_on_the_final_answer_and_each_stage_has_its_own_budget(
    tmp_path: Path,
) -> None:
    """A reasoning reply that names the gold on the way to a wrong answer is wrong; budgets reach each call."""
    q = MetaQuestion(
        question_id="q1",
        question="What is my dog called now?",
        answer="Biscuit",
        question_type="knowledge-update",
        question_date=QUESTION_DATE,
        memories=("2023-05-08 13:56 Monday My dog is called Rex.", "2023-06-10 09:00 Saturday We renamed him Biscuit."),
    )
    replies = iter(["Fragment 2 says Biscuit, but 1 is older.\nAnswer: Rex", "Fragment 2 is newer.\nAnswer: Biscuit"])
    structured = {"Reflection": '{"used": [2], "lesson": "Compare dates."}', "Proposal": '{"operations": []}'}
    policy = ScriptedLLM(lambda req: next(replies) if req.json_schema is None else structured[req.schema_name])
    budgets = StageBudgets(rollout=900, judge=7, reflection=300, proposal=200, consolidation=100)
    config = TrainConfig(samples=2, batch_size=1, epochs=1, answer_style="reasoning", budgets=budgets)
    with RunDir(tmp_path / "run") as run:
        trainer = MetaMemTrainer(policy=policy, judge=ScriptedLLM(judge_reply), run=run, config=config)
        outcome = await trainer._question(q, {}, step=1, epoch=0)
    assert [(r.answer, r.score) for r in outcome.rollouts] == [("Rex", 0.0), ("Biscuit", 1.0)]
    assert outcome.rollouts[0].text.startswith("Fragment 2 says Biscuit")  # the reasoning is kept
    by_stage = {("rollout" if r.json_schema is None else r.schema_name): r.max_tokens for r in policy.requests}
    assert by_stage == {"rollout": 900, "Reflection": 300, "Proposal": 200}
    assert config.tokens("judge") == 7 and config.tokens("consolidation") == 100


def judge_reply(request: ChatRequest) -> str:
    """A judge that says yes exactly when the response it was shown is the gold, and checks its budget."""
    assert request.max_tokens == 7
    user = request.messages[-1].content
    response = user.split("<response>")[-1].split("</response>")[0].strip()
    return "yes" if response == "Biscuit" else "no"

"""One test per defect of the public reference setup (metamem.md, last section), each proving it absent.

Several are also covered in depth elsewhere (test_rules, test_trainer, test_data, test_prepare); this
file is the checklist, in the order the design note lists them. The last defect, memory construction
that reloaded models per question, ran sequentially and dropped failures, is tested in
test_prepare.py (test_memory_construction_is_concurrent_with_one_embedder and
test_conversation_never_ingested_is_an_error).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import memwise.metamem.trainer as trainer_module
from memwise.exceptions import ConfigError, DatasetError
from memwise.llm.base import ChatRequest
from memwise.metamem.data import MetaQuestion, load_questions
from memwise.metamem.prompts import build_reflection_messages, build_rollout_messages
from memwise.metamem.rule_fallback import fallback_subset
from memwise.metamem.rules import Operation, RuleSet
from memwise.metamem.train_config import TrainConfig
from memwise.metamem.trainer import MetaMemTrainer, epoch_batches
from memwise.runs.rundir import RunDir
from memwise.tasks.judge import JudgeCase, LLMJudge, parse_verdict
from memwise.testing import ScriptedLLM


def test_gold_answers_survive_the_reference_field_names(tmp_path: Path) -> None:
    path = tmp_path / "ref.json"
    record = {"question_id": "q1", "problem": "Where?", "groundtruth": "Lisbon", "task": "multi-session"}
    path.write_text(json.dumps([{**record, "related_memories": ["I moved to Lisbon."]}]))
    (q,) = load_questions(path)
    assert q.answer == "Lisbon" and q.question == "Where?" and q.memories == ("I moved to Lisbon.",)
    # A record whose gold is under no accepted name is an error, never an empty gold.
    path.write_text(json.dumps([{"question_id": "q1", "problem": "Where?", "gold": "Lisbon", "memories": []}]))
    with pytest.raises(DatasetError, match="record 0"):
        load_questions(path)
    with pytest.raises(ValueError):
        build_reflection_messages("Where?", [], gold="", response="x", correct=False)


def test_the_question_date_reaches_the_answer_prompt() -> None:
    messages = build_rollout_messages("How long ago?", ["fragment"], question_date="2023/07/01 (Sat) 10:00", rules={})
    assert "2023/07/01 (Sat) 10:00" in messages[-1].content


def test_a_thinking_judge_is_read_after_its_reasoning() -> None:
    assert parse_verdict("<think>\nno, wait, the dates match\n</think>\nyes") is True
    assert parse_verdict("no</think> Final answer: yes") is True


async def test_judge_calls_run_concurrently() -> None:
    judge = LLMJudge(ScriptedLLM(lambda req: "yes", latency_s=0.1))
    cases = [JudgeCase(f"q{i}?", "a", "a", "single-session-user") for i in range(20)]
    start = time.perf_counter()
    results = await judge.score_many(cases)
    assert all(r.correct for r in results)  # type: ignore[union-attr]
    assert time.perf_counter() - start < 20 * 0.1 / 3  # one at a time: 2 s


def test_rule_ids_are_stable_never_reused_or_renumbered() -> None:
    rules = RuleSet().apply([Operation("add", text=f"Rule number {w} about dates.") for w in "abc"], step=1).new_set
    rules = rules.apply([Operation("delete", rule_id="R2")], step=2).new_set
    rules = rules.apply([Operation("add", text="Prefer the newest fragment always.")], step=3).new_set
    assert [r.id for r in rules.rules] == ["R1", "R3", "R4"]  # len(E)+1 would have reused R3


def test_updates_to_missing_ids_are_rejected_and_counted() -> None:
    result = RuleSet().apply([Operation("update", rule_id="R9", text="Check the speaker first.")], step=1)
    assert [r.reason for r in result.rejected] == ["missing"] and len(result.new_set) == 0


def test_a_failed_consolidation_never_applies_raw_proposals_wholesale() -> None:
    proposals = [[Operation("add", text=f"Rule {i} on reading fragments in order.")] for i in range(200)]
    subset = fallback_subset(proposals, RuleSet(), limit=5)
    assert len(subset) <= 5


def test_the_rule_set_is_bounded_and_deduplicated() -> None:
    full = RuleSet(max_rules=2).apply(
        [Operation("add", text="Prefer newer fragments."), Operation("add", text="Check who is speaking.")], step=1
    )
    more = full.new_set.apply(
        [Operation("add", text="Prefer newer fragments."), Operation("add", text="Count sessions carefully now.")],
        step=2,
    )
    assert len(more.new_set) == 2
    assert len(more.merged) == 1 and [r.reason for r in more.rejected] == ["cap"]


async def test_an_unreadable_checkpoint_is_an_error_not_an_empty_rule_set(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    trainer = MetaMemTrainer(policy=ScriptedLLM(lambda req: "x"), run=run, metric="f1")
    trainer.checkpoint_path.parent.mkdir(parents=True)
    trainer.checkpoint_path.write_text('{"history": ')
    q = MetaQuestion("q1", "Where?", "Lisbon", "single-session-user", None, ("I moved to Lisbon.",))
    with pytest.raises(ConfigError, match="unreadable"):
        await trainer.compile([q])


async def test_progress_is_saved_once_per_step_not_after_every_sample(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = RunDir(tmp_path)
    config = TrainConfig(epochs=1, batch_size=2, samples=3)
    trainer = MetaMemTrainer(policy=ScriptedLLM(lambda req: "Lisbon"), run=run, metric="f1", config=config)
    writes: list[int] = []
    original = trainer_module.save_checkpoint

    def counting(path, config, history, records):  # type: ignore[no-untyped-def]
        writes.append(len(records))
        original(path, config, history, records)

    monkeypatch.setattr(trainer_module, "save_checkpoint", counting)
    qs = [MetaQuestion(f"q{i}", "Where?", "Lisbon", "single-session-user", None, ("Lisbon.",)) for i in range(4)]
    await trainer.compile(qs)
    assert writes == [1, 2]  # 4 questions, batch 2: two steps, two atomic writes (not 12, one per sample)


async def test_questions_are_grouped_by_id_not_by_text(tmp_path: Path) -> None:
    seen: list[ChatRequest] = []

    def policy(req: ChatRequest) -> str:
        seen.append(req)
        return "Lisbon" if (req.seed or 0) % 2 == 0 else "Porto"

    config = TrainConfig(epochs=1, batch_size=2, samples=2)
    trainer = MetaMemTrainer(policy=ScriptedLLM(policy), run=RunDir(tmp_path), metric="em", config=config)
    same_text = [MetaQuestion(f"q{i}", "Where?", "Lisbon", "single-session-user", None, ("x y",)) for i in range(2)]
    (record,) = [r for r in await _steps(trainer, same_text)]
    assert sorted(record.question_ids) == ["q0", "q1"] and record.rollouts == 4


async def _steps(trainer: MetaMemTrainer, qs: list[MetaQuestion]) -> list:  # type: ignore[type-arg]
    await trainer.compile(qs)
    return trainer.step_records()


def test_resuming_does_not_change_later_epochs_shuffles() -> None:
    ids = [f"q{i}" for i in range(30)]
    fresh = [epoch_batches(ids, epoch=e, batch_size=7, seed=3) for e in range(3)]
    # A resumed run computes epoch 2's batches from (seed, epoch) alone, whatever ran before.
    assert epoch_batches(ids, epoch=2, batch_size=7, seed=3) == fresh[2]
    assert fresh[1] != fresh[2]

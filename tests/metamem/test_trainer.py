"""MetaMem training loop: control flow on a scripted world (the real model runs in the main job)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from memwise.exceptions import ConfigError, LLMError
from memwise.llm.base import ChatModel, ChatRequest
from memwise.llm.openai_compat import OpenAICompatLLM
from memwise.metamem.data import MetaQuestion
from memwise.metamem.rules import RuleSet
from memwise.metamem.train_config import TrainConfig
from memwise.metamem.trainer import MetaMemTrainer, Rollout, epoch_batches, keep_question
from memwise.runs.rundir import RunDir
from memwise.testing import FakeOpenAIServer, ScriptedLLM
from memwise.testing.fake_openai import FailurePlan

GOLD = {f"q{i}": f"answer{i}" for i in range(40)}


def questions(n: int = 8) -> list[MetaQuestion]:
    return [
        MetaQuestion(
            question_id=f"q{i}",
            question=f"What is thing {i}?",
            answer=GOLD[f"q{i}"],
            question_type="single-session-user",
            question_date="2023/07/01 (Sat) 10:00",
            memories=(f"2023-05-08 13:56 Monday user: thing {i} is answer{i}.",),
        )
        for i in range(n)
    ]


def world(req: ChatRequest) -> str:
    user = req.messages[-1].content
    if req.schema_name == "Reflection":
        return json.dumps(
            {
                "used": [1],
                "ignored": [],
                "reasoning": "read fragment 1",
                "decisive_point": "fragment 1",
                "lesson": "Quote the fragment that names the thing.",
            }
        )
    if req.schema_name == "Proposal":
        qid = re.search(r"thing (\d+)", user)
        n = int(qid.group(1)) if qid else 0
        return json.dumps({"operations": [{"op": "add", "text": f"Rule learned from question {n} about things."}]})
    if req.schema_name == "Consolidation":
        # Keep the two lowest-numbered proposals, so the result is deterministic.
        proposed = [line for line in user.splitlines() if line.startswith("- [")]
        found = sorted({m for line in proposed for m in re.findall(r"question (\d+) about things", line)}, key=int)[:2]
        ops = [
            {"op": "add", "text": f"Rule learned from question {n} about things.", "question_ids": []} for n in found
        ]
        return json.dumps({"operations": ops})
    if "Reply with one word: yes or no" in user:
        response = user.split("<response>")[-1].split("</response>")[0]
        gold = user.split("<reference>")[-1].split("</reference>")[0].strip()
        return "yes" if gold in response else "no"
    seed = req.seed or 0
    thing = re.search(r"Question: (?:<question>)?What is thing (\d+)\?", user)
    n = thing.group(1) if thing else "?"
    return f"It is answer{n}." if seed % 2 == 0 else "I am not sure."


class Killed(RuntimeError):
    """Stands in for the process dying mid-step."""


MakeTrainer = Callable[..., MetaMemTrainer]


@pytest.fixture
def make_trainer() -> Iterator[MakeTrainer]:
    """Trainers on ``<path>/run``; their run directories are closed (and unlocked) after the test."""
    runs: list[RunDir] = []

    def make(tmp_path: Path, llm: ChatModel, **cfg: object) -> MetaMemTrainer:
        config = TrainConfig(**{"epochs": 1, "batch_size": 4, "samples": 4, **cfg})  # type: ignore[arg-type]
        runs.append(RunDir(tmp_path / "run"))
        return MetaMemTrainer(policy=llm, run=runs[-1], config=config)

    yield make
    for run in runs:
        run.close()


async def test_training_adds_rules_with_stable_ids_and_provenance(tmp_path: Path, make_trainer: MakeTrainer) -> None:
    llm = ScriptedLLM(world)
    history = await make_trainer(tmp_path, llm).compile(questions(8))
    assert len(history.versions) == 3  # the empty start plus one version per step (8 questions / batch 4)
    final = history.latest.rules
    assert [r.id for r in final.rules] == ["R1", "R2", "R3", "R4"]
    step1 = history.versions[1]
    assert {a.op.step for a in step1.ops_applied} == {1}
    assert all(a.op.question_ids for a in step1.ops_applied)


async def test_gold_and_question_date_reach_the_prompts(tmp_path: Path, make_trainer: MakeTrainer) -> None:
    llm = ScriptedLLM(world)
    await make_trainer(tmp_path, llm).compile(questions(4))
    rollouts = [
        r
        for r in llm.requests
        if r.schema_name == "output" and re.search(r"Question: (?:<question>)?What is thing", r.messages[-1].content)
    ]
    assert rollouts and all("2023/07/01" in r.messages[-1].content for r in rollouts)
    reflections = [r for r in llm.requests if r.schema_name == "Reflection"]
    assert reflections and all("answer" in r.messages[-1].content for r in reflections)


def test_groups_kept_only_when_mixed() -> None:
    mixed = [Rollout(0, "a", 1.0), Rollout(1, "b", 0.0)]
    assert keep_question(mixed, 2)
    assert not keep_question([Rollout(0, "a", 1.0), Rollout(1, "b", 1.0)], 2)
    assert not keep_question([Rollout(0, "a", 0.0), Rollout(1, "b", None)], 2)
    assert keep_question([Rollout(0, "a", 1.0)], 1)


def test_epoch_shuffles_are_seeded_per_epoch_and_group_by_id() -> None:
    ids = [f"q{i}" for i in range(10)]
    assert epoch_batches(ids, epoch=1, batch_size=3, seed=7) == epoch_batches(
        list(reversed(ids)), epoch=1, batch_size=3, seed=7
    )
    assert epoch_batches(ids, epoch=0, batch_size=3, seed=7) != epoch_batches(ids, epoch=1, batch_size=3, seed=7)


async def test_resume_replays_and_ends_with_the_same_rules(tmp_path: Path, make_trainer: MakeTrainer) -> None:
    full_llm = ScriptedLLM(world)
    full = await make_trainer(tmp_path / "a", full_llm, epochs=2).compile(questions(8))
    # Interrupted run: stop after the first step by failing every call of step 2, then resume.
    calls = {"n": 0}

    def flaky(req: ChatRequest) -> str:
        calls["n"] += 1
        if calls["n"] > first_step_calls:
            raise Killed  # a kill, as far as the run can tell
        return world(req)

    probe = ScriptedLLM(world)
    await make_trainer(tmp_path / "probe", probe, epochs=1, batch_size=4).train_step(1, 0, questions(8)[:4], RuleSet())
    first_step_calls = probe.calls
    killed = make_trainer(tmp_path / "b", ScriptedLLM(flaky), epochs=2)
    with pytest.raises(Killed):
        await killed.compile(questions(8))
    killed.run.close()  # the process that died gave its lock up
    resumed_llm = ScriptedLLM(world)
    resumed = await make_trainer(tmp_path / "b", resumed_llm, epochs=2).compile(questions(8))
    assert resumed.latest.rules.to_dict() == full.latest.rules.to_dict()
    assert [v.to_dict() for v in resumed.versions] == [v.to_dict() for v in full.versions]
    # Paid calls: the interrupted run's successful ones are replayed, not paid again.
    paid_before_kill = first_step_calls
    assert resumed_llm.calls < full_llm.calls
    assert paid_before_kill + resumed_llm.calls <= full_llm.calls + 8  # at most the calls in flight


async def test_consolidation_failure_falls_back_to_a_bounded_subset(tmp_path: Path, make_trainer: MakeTrainer) -> None:
    def broken_consolidator(req: ChatRequest) -> str:
        return "no json at all" if req.schema_name == "Consolidation" else world(req)

    trainer = make_trainer(tmp_path, ScriptedLLM(broken_consolidator), fallback_limit=1)
    history = await trainer.compile(questions(8))
    records = trainer.step_records()
    # Which questions are kept depends on the sampled seeds; what matters is one edit per step, not all of them.
    assert all(r.proposals >= 2 for r in records)
    assert all(
        r.consolidation.startswith("failed") and f"fallback applied 1 of {r.proposals}" in r.consolidation
        for r in records
    )
    assert len(history.latest.rules.rules) == 2  # one edit per step, not the raw proposals
    failures = trainer.run.ledger.failures("consolidate")
    assert len(failures) == 2 and all(f["kind"] == "parse" for f in failures)


async def test_unreadable_checkpoint_is_an_error_not_a_silent_reset(tmp_path: Path, make_trainer: MakeTrainer) -> None:
    trainer = make_trainer(tmp_path, ScriptedLLM(world))
    await trainer.compile(questions(4))
    trainer.checkpoint_path.write_text("{ torn")
    trainer.run.close()
    with pytest.raises(ConfigError, match="unreadable"):
        await make_trainer(tmp_path, ScriptedLLM(world)).compile(questions(4))


async def test_judge_without_verdict_is_counted_not_scored_wrong(tmp_path: Path, make_trainer: MakeTrainer) -> None:
    def mute_judge(req: ChatRequest) -> str:
        return "hmm" if "Reply with one word: yes or no" in req.messages[-1].content else world(req)

    trainer = make_trainer(tmp_path, ScriptedLLM(mute_judge), samples=2)
    await trainer.compile(questions(4))
    record = trainer.step_records()[0]
    assert record.score_failures == 8 and record.kept_questions == () and record.train_mean_score is None
    assert len(trainer.run.ledger.failures("score")) == 8
    assert json.loads(trainer.checkpoint_path.read_text())["steps"][0]["proposals"] == 0


async def test_pipeline_validates_every_step_and_ties_go_to_the_earlier(tmp_path: Path) -> None:
    from memwise.metamem.pipeline import load_result_rules, train_and_select

    qs = questions(12)
    config = TrainConfig(epochs=1, batch_size=4, samples=2)
    with RunDir(tmp_path / "run") as run:
        result = await train_and_select(qs[:8], qs[8:10], qs[10:], policy=ScriptedLLM(world), run=run, config=config)
        stages = run.ledger.stats()
    assert sorted(result.validation) == [0, 1, 2]
    # Greedy answers (seed 0) are always right in this world: every step ties, the earliest wins.
    assert {r.accuracy for r in result.validation.values()} == {1.0}
    assert result.best_step == 0 and result.rules.rules == ()
    assert result.test_with_rules is not None and result.test_with_rules.scored == 2
    assert load_result_rules(tmp_path / "run").to_dict() == result.rules.to_dict()
    assert {"rollout", "judge", "reflect", "propose", "consolidate", "eval", "eval_judge"} <= set(stages)


def test_kill_9_then_rerun_gives_the_rules_of_an_uninterrupted_run(tmp_path: Path) -> None:
    import os
    import signal
    import sqlite3
    import subprocess
    import sys
    import time
    from contextlib import closing

    worker = Path(__file__).with_name("_train_worker.py")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    def run(path: Path) -> dict[str, object]:
        done = subprocess.run(
            [sys.executable, str(worker), str(path)], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    clean = run(tmp_path / "clean")
    proc = subprocess.Popen(
        [sys.executable, str(worker), str(tmp_path / "killed")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    db = tmp_path / "killed" / "ledger.sqlite3"
    recorded = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and recorded < 60:
        if db.exists():
            try:
                with closing(sqlite3.connect(db, timeout=5)) as conn:
                    recorded = conn.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
            except sqlite3.OperationalError:
                pass
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    with closing(sqlite3.connect(db)) as conn:
        survived = conn.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
    assert 0 < survived < int(clean["paid"])  # type: ignore[call-overload]
    resumed = run(tmp_path / "killed")
    assert resumed["rules"] == clean["rules"]
    # Nothing recorded is paid again: only what was missing (the kill lost at most the calls in flight).
    assert resumed["paid"] == int(clean["paid"]) - survived  # type: ignore[call-overload]


# -- retries running out mid-run ---------------------------------------------------------------

PERSISTENT_500 = FailurePlan(first_attempts=10**6, kinds=("server_error",))


async def test_retries_running_out_stop_the_step_after_every_sibling_settled(tmp_path: Path) -> None:
    # Two calls in flight: when the first runs out of retries, the other rollouts are still queued or retrying.
    config = TrainConfig(epochs=1, batch_size=8, samples=1)
    with FakeOpenAIServer(failures=PERSISTENT_500).in_thread() as srv:
        llm = OpenAICompatLLM(base_url=srv.base_url, model="m", max_retries=2, backoff_base_s=0.001, backoff_max_s=0.01)
        try:
            with RunDir(tmp_path / "run") as run:
                trainer = MetaMemTrainer(policy=llm, run=run, metric="em", config=config)
                with pytest.raises(LLMError, match="MetaMem training stopped in step 1") as info:
                    await trainer.compile(questions(8))
                # Nothing of the step is still running to write into the ledger once the caller closes it.
                current = asyncio.current_task()
                assert [t for t in asyncio.all_tasks() if t is not current and not t.done()] == []
                failed = run.ledger.count_errors("rollout")
                aborted = run.ledger.failures("train")
        finally:
            await llm.aclose()
    assert failed >= 1 and f"{failed} model call(s) failed after their retries" in str(info.value)
    assert [f["kind"] for f in aborted] == ["step_aborted"]


def test_metamem_train_exits_with_one_clear_error_when_retries_run_out(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from memwise.metamem.data import save_questions

    qs = tmp_path / "questions.jsonl"
    save_questions(qs, questions(8))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "MEMWISE_MAX_RETRIES": "1"}
    with FakeOpenAIServer(failures=PERSISTENT_500).in_thread() as srv:
        done = subprocess.run(
            [sys.executable, "-c", "from memwise.cli import main; main()", "--base-url", srv.base_url, "--model", "m",
             "--concurrency", "8", "metamem", "train", "--questions", str(qs), "--run-dir", str(tmp_path / "run"),
             "--epochs", "1", "--batch-size", "4", "--samples", "1", "--metric", "em"],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "MetaMem training stopped in step 1" in errors[0], done.stderr
    assert "closed database" not in done.stderr + done.stdout and "Traceback" not in done.stderr
    counted = int(re.search(r"(\d+) model call\(s\) failed", errors[0]).group(1))  # type: ignore[union-attr]
    with RunDir(tmp_path / "run", lock=False) as run:  # the command gave its lock back
        assert run.ledger.count_errors() == counted >= 1


def _rollout_seeds(llm_calls: list[ChatRequest]) -> list[int | None]:
    return [r.seed for r in llm_calls if r.messages[-1].content.endswith("Answer briefly.")]


async def test_a_question_seen_again_draws_fresh_samples_and_resume_keeps_the_seeds(
    tmp_path: Path, make_trainer: MakeTrainer
) -> None:
    """Rules unchanged between epochs: the second pass must still sample anew, not replay the first."""

    def no_edits(req: ChatRequest) -> str:
        if req.schema_name in ("Proposal", "Consolidation"):
            return json.dumps({"operations": []})
        return world(req)

    seen: list[ChatRequest] = []

    def recording(req: ChatRequest) -> str:
        seen.append(req)
        return no_edits(req)

    await make_trainer(tmp_path / "a", ScriptedLLM(recording), epochs=2, batch_size=4, samples=2).compile(questions(4))
    seeds = _rollout_seeds(seen)
    # 4 questions x 2 samples per epoch, all paid: the second epoch is not a replay of the first.
    assert len(seeds) == 16 and len(set(seeds)) == 16
    again: list[ChatRequest] = []

    def recording_again(req: ChatRequest) -> str:
        again.append(req)
        return no_edits(req)

    await make_trainer(tmp_path / "b", ScriptedLLM(recording_again), epochs=2, batch_size=4, samples=2).compile(
        questions(4)
    )
    assert sorted(_rollout_seeds(again), key=str) == sorted(seeds, key=str)  # deterministic: a resume draws the same

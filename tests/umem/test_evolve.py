"""Online memory evolution: the bank evolves along the stream, failures are counted, runs resume exactly."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

import memwise.umem.evolve as evolve_mod
from memwise.exceptions import ConfigError
from memwise.llm.base import ChatRequest
from memwise.runs.rundir import RunDir
from memwise.store.sqlite import SQLiteStore
from memwise.tasks.types import Task
from memwise.testing import FakeEmbedder, ScriptedLLM
from memwise.umem.bank import InsightBank
from memwise.umem.evolve import EvolveProgress, EvolveResult, evolve
from memwise.umem.evolve_config import AGENT_ID, EvolveConfig
from memwise.umem.evolve_records import TaskRecord
from memwise.umem.evolve_report import cumulative_accuracy, summarise, write_report
from memwise.umem.executor import EnvExecutor, Observation, QAExecutor
from memwise.umem.executors import make_executor

Q_X = "solve the quadratic equation for x in the algebra problem"
Q_Y = "solve the quadratic equation for y in the algebra problem"
POEM = "translate the french poem about autumn leaves into english"
LESSONS_HEADER = "Lessons from similar past tasks"


def mc_task(i: int, question: str) -> Task:
    return Task(
        id=f"mmlu-{i}",
        suite="mmlu",
        prompt=f"{question}\n\nA) one\nB) two",
        answer="B",
        text=question,
        choices=("one", "two"),
    )


def is_optimizer(req: ChatRequest) -> bool:
    return "<experience>" in req.messages[0].content


def task_of(req: ChatRequest) -> str:
    """The question an optimizer prompt is about (the first line of its fenced '## Task')."""
    return req.messages[-1].content.split("## Task\n<task>\n", 1)[1].splitlines()[0]


def block(values: Sequence[str], op: str) -> str:
    body = "".join(f"<value>{v}</value>" for v in values)
    return f"The agent's method generalises.\n<experience>{body}<operation>{op}</operation></experience>"


def executor_reply(req: ChatRequest) -> str:
    # A toy executor that is right only when it was shown a lesson: memory visibly helps.
    return "So the answer is\nAnswer: B" if LESSONS_HEADER in req.messages[-1].content else "Answer: A"


def adder(req: ChatRequest) -> str:
    """ADD a lesson named after the task, or UPDATE entry 0 when the prompt shows one.

    A pure function of the prompt, so replayed and fresh runs agree.
    """
    if not is_optimizer(req):
        return executor_reply(req)
    if "Entry 0:" in req.messages[-1].content:
        return block([f"Refined lesson for: {task_of(req)}"], "UPDATE 0")
    return block([f"Lesson for: {task_of(req)}"], "ADD")


def scripted(handler: Callable[[ChatRequest], str]) -> ScriptedLLM:
    return ScriptedLLM(handler)


async def run_evolution(
    run_dir: Path,
    tasks: Sequence[Task],
    llm: ScriptedLLM,
    *,
    epochs: int = 1,
    on_progress: Callable[[EvolveProgress], None] | None = None,
    **config: object,
) -> EvolveResult:
    run = RunDir(run_dir)
    try:
        return await evolve(
            tasks,
            executor=make_executor("mmlu", run.record(llm, "executor")),
            optimizer=run.record(llm, "optimizer"),
            embedder=FakeEmbedder(dim=256),
            run=run,
            config=EvolveConfig(suite="mmlu", epochs=epochs, **config),  # type: ignore[arg-type]
            on_progress=on_progress,
        )
    finally:
        run.close()


def bank_state(run_dir: Path) -> list[tuple[str, list[str], int]]:
    with SQLiteStore(run_dir / "bank.sqlite3") as store:
        bank = InsightBank(store, FakeEmbedder(dim=256), agent_id=AGENT_ID)
        return [(e.key, e.values, e.usage) for e in bank.entries()]


def executor_prompts(llm: ScriptedLLM) -> list[str]:
    return [r.messages[-1].content for r in llm.requests if not is_optimizer(r)]


# -- behaviour along the stream -----------------------------------------------------------------


async def test_a_later_similar_task_retrieves_the_insight_an_earlier_one_wrote(tmp_path: Path) -> None:
    llm = scripted(adder)
    result = await run_evolution(tmp_path, [mc_task(0, Q_X), mc_task(1, POEM), mc_task(2, Q_Y)], llm)
    first, poem, similar = result.records
    assert first.retrieved == 0 and first.action == "ADD" and first.bank_size == 1
    # The poem shares no words with the algebra task: its hit fell under the floor and is counted.
    assert poem.retrieved == 0 and poem.dropped_by_floor == 1 and not poem.success
    assert similar.retrieved_ids == (first.written_id,) and similar.similarities[0] >= 0.5
    prompts = executor_prompts(llm)
    assert LESSONS_HEADER not in prompts[0] and LESSONS_HEADER not in prompts[1]
    assert f"- Lesson for: {Q_X}" in prompts[2] and similar.success
    # It had an entry to improve and did: UPDATE 0 rewrote the first task's entry.
    assert similar.action == "UPDATE 0" and similar.written_id == first.written_id and similar.bank_size == 2
    assert [(k, v) for k, v, _ in bank_state(tmp_path)] == [
        (Q_X, [f"Refined lesson for: {Q_Y}"]),
        (POEM, [f"Lesson for: {POEM}"]),
    ]


async def test_the_bank_carries_over_between_epochs(tmp_path: Path) -> None:
    llm = scripted(adder)
    tasks = [mc_task(0, Q_X), mc_task(1, POEM)]
    result = await run_evolution(tmp_path, tasks, llm, epochs=2)
    assert [(r.epoch, r.index, r.position, r.task_id) for r in result.records] == [
        (1, 0, 0, "mmlu-0"),
        (1, 1, 1, "mmlu-1"),
        (2, 0, 2, "mmlu-0"),
        (2, 1, 3, "mmlu-1"),
    ]
    assert [r.bank_size for r in result.records] == [1, 2, 2, 2]
    assert [r.action for r in result.records] == ["ADD", "ADD", "UPDATE 0", "UPDATE 0"]
    # Epoch 2 sees what epoch 1 wrote, and (for this toy executor) succeeds because of it.
    prompts = executor_prompts(llm)
    assert f"- Lesson for: {Q_X}" in prompts[2] and f"- Lesson for: {POEM}" in prompts[3]
    summary = result.summary
    assert [(e.epoch, e.accuracy, e.adds, e.updates, e.bank_size) for e in summary.epochs] == [
        (1, 0.0, 2, 0, 2),
        (2, 1.0, 0, 2, 2),
    ]
    assert (summary.bank.added, summary.bank.updated, summary.bank.hits) == (2, 2, 2)
    assert summary.cumulative_accuracy == [0.0, 0.0, 1 / 3, 0.5] and summary.finished
    stages = summary.stages
    assert stages["executor"].calls == 4 and stages["optimizer"].calls == 4
    # Each entry was retrieved once, in epoch 2 (usage drives eviction).
    assert [u for _, _, u in bank_state(tmp_path)] == [1, 1]


async def test_a_malformed_reply_is_counted_by_reason_and_leaves_the_bank_alone(tmp_path: Path) -> None:
    def handler(req: ChatRequest) -> str:
        if is_optimizer(req) and task_of(req) == POEM:
            return "I would add a lesson about poems, but I forgot the tags."
        return adder(req)

    result = await run_evolution(tmp_path, [mc_task(0, Q_X), mc_task(1, POEM)], scripted(handler))
    poem = result.records[1]
    assert poem.action is None and poem.format_failure == "no experience block" and poem.written_id is None
    assert poem.bank_size == 1 and poem.bank_changes == {"added": 0, "merged": 0, "updated": 0, "evicted": 0}
    assert result.summary.format_failures == {"no experience block": 1}
    assert result.summary.actions == {"ADD": 1, "UPDATE": 0, "none": 1}
    assert [k for k, _, _ in bank_state(tmp_path)] == [Q_X]
    run = RunDir(tmp_path)
    try:
        failure, repair = run.ledger.failures("optimizer")
    finally:
        run.close()
    assert failure["kind"] == "no experience block" and "forgot the tags" in failure["raw"]
    assert "mmlu-1" in failure["detail"]
    assert repair["kind"] == "repair failed: no JSON"  # the repair request got the same prose back
    assert not poem.repaired


async def test_a_schema_constrained_repair_applies_its_action_but_keeps_the_failure_on_record(tmp_path: Path) -> None:
    repairs: list[ChatRequest] = []

    def handler(req: ChatRequest) -> str:
        if is_optimizer(req) and req.json_schema is not None:
            repairs.append(req)
            return '{"lessons": ["Name the defining property first."], "operation": "UPDATE 0"}'
        if is_optimizer(req) and task_of(req) == Q_Y:
            return "Lesson: name the property. (no tags)"
        return adder(req)

    result = await run_evolution(tmp_path, [mc_task(0, Q_X), mc_task(1, Q_Y)], scripted(handler))
    first, second = result.records
    assert not first.repaired and first.format_failure is None
    assert second.repaired and second.format_failure == "no experience block" and second.action == "UPDATE 0"
    assert bank_state(tmp_path)[0][1] == ["Name the defining property first."]
    assert result.summary.repaired == 1 and result.summary.format_failures == {"no experience block": 1}
    (repair,) = repairs
    # the schema only lets the model name an entry the prompt showed
    assert repair.json_schema is not None
    assert repair.json_schema["properties"]["operation"]["enum"] == ["ADD", "UPDATE 0"]


async def test_a_lesson_that_is_only_the_answer_never_enters_the_bank(tmp_path: Path) -> None:
    llm = scripted(lambda req: block(["B", "two"], "ADD") if is_optimizer(req) else executor_reply(req))
    result = await run_evolution(tmp_path, [mc_task(0, Q_X)], llm)
    (record,) = result.records
    assert record.action is None and record.format_failure == "answer leak" and record.bank_size == 0
    assert bank_state(tmp_path) == []


async def test_without_repair_a_malformed_reply_costs_one_call(tmp_path: Path) -> None:
    llm = scripted(lambda req: "no tags at all" if is_optimizer(req) else executor_reply(req))
    result = await run_evolution(tmp_path, [mc_task(0, Q_X)], llm, repair=False)
    assert result.records[0].format_failure == "no experience block" and not result.records[0].repaired
    assert llm.calls == 2  # executor + one optimizer call


async def test_an_update_of_an_entry_that_was_not_shown_is_an_invalid_target(tmp_path: Path) -> None:
    def handler(req: ChatRequest) -> str:
        if is_optimizer(req) and task_of(req) == Q_Y:
            return block(["Overwrite something."], "UPDATE 2")  # only entry 0 was shown
        if is_optimizer(req) and task_of(req) == POEM:
            return block(["Overwrite something."], "UPDATE 0")  # nothing was shown
        return adder(req)

    result = await run_evolution(tmp_path, [mc_task(0, Q_X), mc_task(1, Q_Y), mc_task(2, POEM)], scripted(handler))
    assert [r.format_failure for r in result.records] == [None, "invalid target", "invalid target"]
    assert result.records[1].retrieved == 1
    assert result.summary.format_failures == {"invalid target": 2}
    # Not quietly turned into an ADD: the bank still holds only the first lesson, unchanged.
    assert [(k, v) for k, v, _ in bank_state(tmp_path)] == [(Q_X, [f"Lesson for: {Q_X}"])]


async def test_environment_tasks_record_steps_and_progress(tmp_path: Path) -> None:
    class Counter:
        """Reach the goal by choosing 'add one' (action 2); the toy model picks it only with a lesson."""

        def reset(self, task: Task) -> Observation:
            self.value, self.goal = 0, int(task.answer)
            return Observation("the counter shows 0", ("wait", "add one"))

        def step(self, action: str) -> Observation:
            self.value += action == "add one"
            won = self.value >= self.goal
            return Observation(f"shows {self.value}", ("wait", "add one"), won, won, self.value / self.goal)

    def handler(req: ChatRequest) -> str:
        if is_optimizer(req):
            return block(["Keep adding until the goal is reached."], "ADD")
        return "2" if LESSONS_HEADER in req.messages[-1].content else "1"

    tasks = [Task("g0", "counter", "make the counter show 2", "2", text="make the counter show two")]
    llm = scripted(handler)
    executor = make_executor("alfworld", llm, env_factory=Counter)
    assert isinstance(executor, EnvExecutor) and executor.max_steps == 30
    run = RunDir(tmp_path)
    try:
        result = await evolve(
            tasks,
            executor=executor,
            optimizer=llm,
            embedder=FakeEmbedder(dim=256),
            run=run,
            config=EvolveConfig(suite="alfworld", epochs=2),
        )
    finally:
        run.close()
    first, second = result.records
    assert (first.success, first.steps, first.progress) == (False, 30, 0.0)
    assert (second.success, second.steps, second.progress) == (True, 2, 1.0)
    assert [(e.mean_progress, e.mean_steps) for e in result.summary.epochs] == [(0.0, 30.0), (1.0, 2.0)]


# -- resuming -----------------------------------------------------------------------------------


class Killed(Exception):
    """Stands in for the process dying."""


STREAM = [mc_task(0, Q_X), mc_task(1, POEM), mc_task(2, Q_Y), mc_task(3, "translate the french poem into english")]


async def test_resume_after_a_crash_mid_task_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    straight = scripted(adder)
    await run_evolution(tmp_path / "straight", STREAM, straight, epochs=2)

    calls = {"optimizer": 0}

    def dies_at_the_fourth_optimizer_call(req: ChatRequest) -> str:
        if is_optimizer(req):
            calls["optimizer"] += 1
            if calls["optimizer"] == 4:
                raise Killed  # after retrieval counted usage and the executor answered
        return adder(req)

    run_dir = tmp_path / "resumed"
    first = scripted(dies_at_the_fourth_optimizer_call)
    with pytest.raises(Killed):
        await run_evolution(run_dir, STREAM, first, epochs=2)
    assert len((run_dir / "records.jsonl").read_text().splitlines()) == 3

    seen: list[EvolveProgress] = []
    second = scripted(adder)
    result = await run_evolution(run_dir, STREAM, second, epochs=2, on_progress=seen.append)
    assert result.resumed_from == 3 and seen[0].done == 3 and seen[-1].done == 8
    assert (run_dir / "records.jsonl").read_bytes() == (tmp_path / "straight" / "records.jsonl").read_bytes()
    assert bank_state(run_dir) == bank_state(tmp_path / "straight")
    # The killed task's executor call was in the ledger: the resumed run paid for nothing twice.
    assert first.calls - 1 + second.calls == straight.calls


async def test_resume_after_a_crash_between_the_bank_write_and_the_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await run_evolution(tmp_path / "straight", STREAM, scripted(adder), epochs=2)

    real_append = evolve_mod.append_record

    def torn_third_append(path: Path, record: TaskRecord) -> None:
        if record.position == 2:  # the action of this task is already in the bank
            with path.open("a") as fh:
                fh.write('{"epoch": 1, "index": 2, "task_')
            raise Killed
        real_append(path, record)

    monkeypatch.setattr(evolve_mod, "append_record", torn_third_append)
    run_dir = tmp_path / "resumed"
    with pytest.raises(Killed):
        await run_evolution(run_dir, STREAM, scripted(adder), epochs=2)
    assert bank_state(run_dir) != bank_state(tmp_path / "straight")  # mid-stream, and ahead of its records
    monkeypatch.setattr(evolve_mod, "append_record", real_append)

    result = await run_evolution(run_dir, STREAM, scripted(adder), epochs=2)
    assert result.resumed_from == 2
    assert (run_dir / "records.jsonl").read_bytes() == (tmp_path / "straight" / "records.jsonl").read_bytes()
    assert bank_state(run_dir) == bank_state(tmp_path / "straight")
    assert [p.name for p in result.paths.checkpoints()] == ["bank.ckpt-000008.sqlite3"]


async def test_a_finished_run_can_be_extended_but_not_changed(tmp_path: Path) -> None:
    tasks = STREAM[:2]
    await run_evolution(tmp_path, tasks, scripted(adder), epochs=1)
    again = scripted(adder)
    result = await run_evolution(tmp_path, tasks, again, epochs=1)
    assert again.calls == 0 and result.resumed_from == 2 and result.summary.finished
    longer = await run_evolution(tmp_path, tasks, scripted(adder), epochs=2)
    assert longer.resumed_from == 2 and len(longer.records) == 4
    with pytest.raises(ConfigError, match="top_k was 3, now 5"):
        await run_evolution(tmp_path, tasks, scripted(adder), epochs=2, top_k=5)
    with pytest.raises(ConfigError, match="stream"):
        await run_evolution(tmp_path, STREAM[1:3], scripted(adder), epochs=2)
    with pytest.raises(ConfigError, match="more than the 2 asked for"):
        await run_evolution(tmp_path, tasks, scripted(adder), epochs=1)


# -- summary and report -------------------------------------------------------------------------


def record(
    position: int,
    success: bool,
    *,
    per_epoch: int = 3,
    action: str | None = "ADD",
    failure: str | None = None,
    progress: float | None = None,
    steps: int = 1,
    bank_size: int = 0,
    retrieved: int = 0,
) -> TaskRecord:
    epoch, index = divmod(position, per_epoch)
    return TaskRecord(
        epoch=epoch + 1,
        index=index,
        position=position,
        task_id=f"t{index}",
        success=success,
        answer=None,
        gold="B",
        tokens=10 * (position + 1),
        steps=steps,
        progress=progress,
        retrieved=retrieved,
        retrieved_ids=(),
        similarities=(),
        dropped_by_floor=1,
        optimizer_tokens=5,
        action=None if failure else action,
        format_failure=failure,
        written_id=None,
        bank_size=bank_size,
        bank_changes={"added": int(action == "ADD" and not failure), "updated": int(action == "UPDATE 0")},
    )


def test_summary_math_on_hand_made_records() -> None:
    records = [
        record(0, False, bank_size=1),
        record(1, True, bank_size=2, retrieved=1),
        record(2, True, failure="no value", bank_size=2, retrieved=2),
        record(3, True, action="UPDATE 0", bank_size=2, retrieved=2),
        record(4, True, failure="invalid target", bank_size=2, retrieved=1),
    ]
    assert cumulative_accuracy(records) == [0.0, 0.5, 2 / 3, 0.75, 0.8]
    summary = summarise(records, suite="mmlu", tasks_per_epoch=3, epochs=3)
    assert [(e.epoch, e.tasks, e.complete, e.successes) for e in summary.epochs] == [(1, 3, True, 2), (2, 2, False, 2)]
    assert [e.accuracy for e in summary.epochs] == [2 / 3, 1.0]
    assert summary.epoch_curves == [[0.0, 0.5, 2 / 3], [1.0, 1.0]]
    assert [e.mean_tokens for e in summary.epochs] == [20.0, 45.0]
    assert [(e.adds, e.updates, e.format_failures) for e in summary.epochs] == [(2, 0, 1), (0, 1, 1)]
    assert summary.format_failures == {"invalid target": 1, "no value": 1}
    assert summary.actions == {"ADD": 2, "UPDATE": 1, "none": 2}
    assert (summary.bank.retrievals, summary.bank.hits, summary.bank.dropped_by_floor) == (5, 6, 5)
    assert (summary.bank.added, summary.bank.updated, summary.bank_size) == (2, 1, 2)
    assert (summary.completed, summary.total, summary.finished, summary.accuracy) == (5, 9, False, 0.8)
    assert all(e.mean_progress is None for e in summary.epochs)

    env = [record(i, i % 2 == 0, per_epoch=2, progress=p, steps=s) for i, (p, s) in enumerate([(1.0, 4), (0.5, 30)])]
    (epoch,) = summarise(env, suite="alfworld", tasks_per_epoch=2, epochs=1).epochs
    assert (epoch.accuracy, epoch.mean_progress, epoch.mean_steps) == (0.5, 0.75, 17.0)


def test_report_files_with_and_without_matplotlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    records = [record(i, i != 1, bank_size=i) for i in range(6)]
    summary = summarise(records, suite="mmlu", tasks_per_epoch=3, epochs=2)
    files = write_report(tmp_path, summary)
    assert [p.name for p in files.plots] == ["cumulative_accuracy.png", "epoch_accuracy.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in files.plots)
    data = json.loads(files.summary_json.read_text())
    assert data["cumulative_accuracy"][-1] == pytest.approx(5 / 6) and data["finished"] is True
    assert [e["accuracy"] for e in data["epochs"]] == pytest.approx([2 / 3, 1.0])
    report = files.report_md.read_text()
    assert "![cumulative accuracy](cumulative_accuracy.png)" in report and "| 2 | 3 | 1.000 |" in report

    bare = tmp_path / "bare"
    bare.mkdir()
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    files = write_report(bare, summary)
    assert files.plots == [] and files.plot_note is not None and "matplotlib is not installed" in files.plot_note
    assert json.loads(files.summary_json.read_text())["completed"] == 6
    assert "matplotlib is not installed" in files.report_md.read_text()
    assert not list(bare.glob("*.png"))


# -- executors by suite -------------------------------------------------------------------------


def test_make_executor_by_suite() -> None:
    llm = ScriptedLLM(["Answer: B"])
    executor = make_executor("MMLU", llm, max_tokens=64)
    assert isinstance(executor, QAExecutor) and executor.max_tokens == 64
    task = mc_task(0, Q_X)
    assert executor.scorer(task, "Answer: B") == ("B", True)
    assert make_executor("aime", llm).scorer(Task("a", "aime", "p", "73"), "so \\boxed{073}") == ("73", True)  # type: ignore[attr-defined]
    # Building the ALFWorld executor imports nothing: the environment is loaded when a game starts.
    assert isinstance(make_executor("alfworld", llm), EnvExecutor)
    with pytest.raises(ConfigError, match=re.escape("known suites: aime, gpqa, hle, hotpotqa, mmlu, alfworld")):
        make_executor("chess", llm)


# -- baseline modes -----------------------------------------------------------------------------


async def test_no_memory_mode_runs_the_executor_alone_and_counts_nothing_as_malformed(tmp_path: Path) -> None:
    llm = scripted(adder)
    result = await run_evolution(tmp_path, [mc_task(0, Q_X), mc_task(1, Q_Y)], llm, mode="no-memory")
    assert not any(is_optimizer(r) for r in llm.requests)
    assert all(LESSONS_HEADER not in p for p in executor_prompts(llm))
    assert [r.success for r in result.records] == [False, False] and result.summary.bank_size == 0
    assert result.summary.actions == {"ADD": 0, "UPDATE": 0, "none": 0} and result.summary.mode == "no-memory"
    assert result.summary.chance == 0.5


async def test_raw_trajectory_mode_stores_attempts_verbatim_and_retrieves_them_by_similarity(tmp_path: Path) -> None:
    llm = scripted(adder)
    tasks = [mc_task(0, Q_X), mc_task(1, POEM), mc_task(2, Q_Y)]
    result = await run_evolution(tmp_path, tasks, llm, mode="raw-trajectory")
    assert not any(is_optimizer(r) for r in llm.requests)
    assert [r.action for r in result.records] == ["ADD", "ADD", "ADD"] and result.summary.bank_size == 3
    # the similar third task is shown the first one's raw attempt, not a distilled lesson
    assert "- Past attempt (INCORRECT): Answer: A" in executor_prompts(llm)[2]
    assert result.records[2].retrieved_ids == (result.records[0].written_id,)


async def test_no_train_mode_is_the_umem_step_with_whatever_optimizer_is_given(tmp_path: Path) -> None:
    base = scripted(adder)
    run = RunDir(tmp_path)
    try:
        result = await evolve(
            [mc_task(0, Q_X)],
            executor=make_executor("mmlu", scripted(executor_reply)),
            optimizer=base,
            embedder=FakeEmbedder(dim=256),
            run=run,
            config=EvolveConfig(suite="mmlu", mode="no-train"),
        )
    finally:
        run.close()
    assert base.calls == 1 and result.records[0].action == "ADD" and result.summary.mode == "no-train"
    with pytest.raises(ConfigError, match="calls a Mem-Optimizer"):
        await evolve(
            [mc_task(0, Q_X)],
            executor=make_executor("mmlu", base),
            optimizer=None,
            embedder=FakeEmbedder(dim=256),
            run=RunDir(tmp_path / "x"),
            config=EvolveConfig(suite="mmlu", mode="no-train"),
        )


async def test_a_run_recorded_before_modes_existed_still_resumes(tmp_path: Path) -> None:
    await run_evolution(tmp_path, [mc_task(0, Q_X)], scripted(adder))
    state = json.loads((tmp_path / "evolve.json").read_text())
    del state["mode"], state["prompt_style"]
    (tmp_path / "evolve.json").write_text(json.dumps(state))
    again = await run_evolution(tmp_path, [mc_task(0, Q_X)], scripted(adder), epochs=2)
    assert again.resumed_from == 1 and len(again.records) == 2
    with pytest.raises(ConfigError, match="mode was 'umem', now 'no-memory'"):
        await run_evolution(tmp_path, [mc_task(0, Q_X)], scripted(adder), epochs=2, mode="no-memory")


def test_report_and_cli_word_repaired_replies_alike(tmp_path: Path) -> None:
    from memwise.umem.evolve_report import failures_text, repairs_text

    rec = TaskRecord(1, 0, 0, "t", True, "B", "B", 3, 1, None, 0, (), (), 0, 5, "ADD", "no value", "e1", 1)
    failed = replace(rec, index=1, position=1, task_id="u", action=None, written_id=None)
    records = [replace(rec, repaired=True), failed]
    summary = summarise(records, suite="mmlu", tasks_per_epoch=2, epochs=1)
    report = write_report(tmp_path, summary).report_md.read_text()
    expected = "Mem-Optimizer format failures: no value: 2 (1 left the bank unchanged, 1 repaired)"
    assert failures_text(summary) == expected
    assert failures_text(summary) in report and str(repairs_text(summary)) in report
    assert "bank left unchanged): no value" not in report

"""The shared UMEM step: attempts, candidate scoring on neighbours (both forms), caching, commits."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from memwise.store.sqlite import SQLiteStore
from memwise.tasks.types import Task
from memwise.testing import FakeEmbedder
from memwise.umem.bank import InsightBank
from memwise.umem.executor import ExecutionResult
from memwise.umem.loop import UtilityScorer, attempt, commit_best, insight_digest
from memwise.umem.neighbours import Neighbourhoods
from memwise.umem.refcache import NO_MEMORY


class KeywordExecutor:
    """Succeeds on a task iff some shown insight contains the task's secret word; counts its runs.

    Length is 100 tokens without help and 40 with it, so the length terms of both reward forms show.
    """

    def __init__(self) -> None:
        self.runs: list[tuple[str, tuple[str, ...]]] = []

    async def run(self, task: Task, insights: Sequence[str] = ()) -> ExecutionResult:
        self.runs.append((task.id, tuple(insights)))
        word = task.metadata["word"]
        ok = any(word in text for text in insights)
        return ExecutionResult(task.id, f"tried {task.id}", None, ok, 40 if ok else 100)


def task(tid: str, text: str, word: str) -> Task:
    return Task(tid, "synthetic", text, "", text=text, metadata={"word": word})


TASKS = [
    task("a1", "rotate the list of numbers left by two places", "rotate"),
    task("a2", "rotate the list of numbers left by three places", "rotate"),
    task("a3", "rotate the list of numbers right by one place", "rotate"),
    task("a4", "rotate the list of letters left by two places", "rotate"),
]
BY_ID = {t.id: t for t in TASKS}
IDS = ("a1", "a2", "a3", "a4")
NB = Neighbourhoods(IDS, tuple(tuple(x for x in IDS if x != tid) for tid in IDS))

GOOD = (
    "The list is cyclic.\n"
    "<experience><value>rotate by slicing: rest then head</value><operation>ADD</operation></experience>"
)
USELESS = "<experience><value>read the question twice</value><operation>ADD</operation></experience>"
BROKEN = "I think the answer is to rotate."


@pytest.fixture
def bank(tmp_path: Path) -> Iterator[InsightBank]:
    with SQLiteStore(tmp_path / "bank.db") as store:
        yield InsightBank(store, FakeEmbedder(dim=256), agent_id="umem", similarity_floor=0.3)


async def test_attempt_shows_retrieved_insights_and_numbers_entries(bank: InsightBank) -> None:
    await bank.add(TASKS[1].key(), ["rotate means cyclic shift"])
    executor = KeywordExecutor()
    tried = await attempt(bank, executor, TASKS[0])
    assert executor.runs == [("a1", ("rotate means cyclic shift",))]
    assert tried.result.success
    assert "Entry 0:\n  - rotate means cyclic shift" in tried.messages[-1].content
    assert "CORRECT" in tried.messages[-1].content
    assert bank.get(tried.entries[0].id).usage == 1


async def test_released_form_rewards_helpful_memory_and_skips_broken_output(bank: InsightBank) -> None:
    executor = KeywordExecutor()
    scorer = UtilityScorer(bank, executor, BY_ID, NB, form="released")
    scores = await scorer.score(TASKS[0], [], [GOOD, USELESS, BROKEN])
    good, useless, broken = scores
    assert good.format_ok and good.gains == (1.0, 1.0, 1.0) and good.reward == 2.0
    assert useless.format_ok and useless.gains == (0.0, 0.0, 0.0) and useless.reward == 1.0
    assert not broken.format_ok and broken.reward == 0.0 and broken.reason == "no experience block"
    # 3 no-memory reference runs + 3 runs with GOOD + 3 with USELESS; nothing for the broken output
    assert len(executor.runs) == 9
    assert scorer.cost.as_dict()["format_failures"] == {"no experience block": 1}
    assert bank.count() == 0  # scoring never writes the bank


async def test_reference_runs_are_shared_by_candidates_and_tasks(bank: InsightBank) -> None:
    executor = KeywordExecutor()
    scorer = UtilityScorer(bank, executor, BY_ID, NB, form="released")
    group = [GOOD.replace("slicing", f"slicing {i}") for i in range(8)]  # G=8 distinct memories
    await attempt(bank, executor, TASKS[0])
    await scorer.score(TASKS[0], [], group)
    # the paper's bound at G=8, N=3: 1 own run + 3 references + 24 candidate runs = 28 (49 uncached)
    assert len(executor.runs) == 28
    assert scorer.cost.reference_runs == 3 and scorer.cost.candidate_runs == 24
    before = len(executor.runs)
    await scorer.score(TASKS[1], [], [GOOD])
    # a2's neighbours a1, a3, a4 all have cached no-memory references except a1
    new_refs = [r for r in executor.runs[before:] if r[1] == ()]
    assert new_refs == [("a1", ())]


async def test_identical_candidates_pay_once(bank: InsightBank) -> None:
    executor = KeywordExecutor()
    scorer = UtilityScorer(bank, executor, BY_ID, NB, form="released")
    scores = await scorer.score(TASKS[0], [], [GOOD] * 8)
    assert {s.reward for s in scores} == {2.0}
    assert len(executor.runs) == 6  # 3 references + 3 candidate runs shared by all eight


async def test_paper_form_compares_with_the_current_bank(bank: InsightBank) -> None:
    # The bank already solves every neighbour: a second helpful ADD gains nothing but saves no length
    # either, while an UPDATE that wipes the helpful entry breaks solved neighbours (-1 each).
    await bank.add("rotate the list of numbers left by four places", ["rotate with modular indices"])
    executor = KeywordExecutor()
    tried = await attempt(bank, executor, TASKS[0])
    assert len(tried.entries) == 1
    scorer = UtilityScorer(bank, executor, BY_ID, NB, form="paper")
    harmful = "<experience><value>sort the list first</value><operation>UPDATE 0</operation></experience>"
    good, harm = await scorer.score(TASKS[0], tried.entries, [GOOD, harmful])
    assert good.gains == (0.0, 0.0, 0.0)
    assert harm.gains == (-1.0, -1.0, -1.0) and harm.reward == pytest.approx(0.0)


async def test_paper_view_after_add_competes_for_top_k(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "b.db") as store:
        bank = InsightBank(store, FakeEmbedder(dim=256), agent_id="u", top_k=1, similarity_floor=-1.0)
        await bank.add("translate the french poem about autumn", ["keep the metre"])
        scorer = UtilityScorer(bank, KeywordExecutor(), BY_ID, NB, form="paper")
        from memwise.umem.optimizer import parse_optimizer_output

        action = parse_optimizer_output(GOOD, 0)
        # the candidate's key (a1) is far closer to a2 than the poem, so it takes the only slot
        seen = await scorer.view_after(TASKS[1], TASKS[0], [], action)
        assert seen == ["rotate by slicing: rest then head"]
        # retrieval for reward computation never counts as usage
        assert all(e.usage == 0 for e in bank.entries())


async def test_commit_best_keeps_only_positive_gains(bank: InsightBank) -> None:
    executor = KeywordExecutor()
    scorer = UtilityScorer(bank, executor, BY_ID, NB, form="paper")
    tried = await attempt(bank, executor, TASKS[0])
    useless_scores = await scorer.score(TASKS[0], tried.entries, [USELESS, BROKEN])
    assert await commit_best(bank, TASKS[0], tried.entries, useless_scores) is None
    assert bank.count() == 0
    scores = await scorer.score(TASKS[0], tried.entries, [USELESS, GOOD, BROKEN])
    written = await commit_best(bank, TASKS[0], tried.entries, scores)
    assert written is not None and written.values == ["rotate by slicing: rest then head"]
    assert written.score == pytest.approx(1.0)
    # the committed memory now reaches a neighbour's attempt
    assert (await attempt(bank, executor, TASKS[1])).result.success


def test_insight_digest_names_no_memory_and_is_order_sensitive() -> None:
    assert insight_digest([]) == NO_MEMORY
    assert insight_digest(["a", "b"]) != insight_digest(["b", "a"])
    assert insight_digest(["a"]) == insight_digest(["a"])


async def test_a_lesson_stating_the_gold_answer_earns_nothing_in_training(bank: InsightBank) -> None:
    # Every neighbour is solved by any lesson naming "CO2", so without the screen the leak would earn
    # the highest reward of the group (gain 1 on each neighbour).
    word = {"word": "CO2"}
    gas = [
        Task(f"g{i}", "mmlu", f"Which gas do plants take in, case {i}?", "B", choices=("O2", "CO2"), metadata=word)
        for i in range(4)
    ]
    ids = tuple(t.id for t in gas)
    nb = Neighbourhoods(ids, tuple(tuple(x for x in ids if x != tid) for tid in ids))
    executor = KeywordExecutor()
    scorer = UtilityScorer(bank, executor, {t.id: t for t in gas}, nb, form="released")
    leak = "<experience><value>The correct answer is CO2.</value><operation>ADD</operation></experience>"
    letter = "<experience><value>B</value><operation>ADD</operation></experience>"
    method = "<experience><value>Recall that CO2 feeds photosynthesis</value><operation>ADD</operation></experience>"
    leaked, lettered, fair = await scorer.score(gas[0], [], [leak, letter, method])
    for score in (leaked, lettered):
        assert score.reward == 0.0 and score.utility == 0.0 and score.reason == "answer leak"
    assert fair.reward == 2.0  # a real lesson that mentions the answer inside a sentence is still scored
    # no executor run was spent on the leaks: 3 references + 3 runs for the fair lesson
    assert len(executor.runs) == 6
    assert scorer.cost.format_failures == {"answer leak": 2}
    assert await commit_best(bank, gas[0], [], [leaked, lettered]) is None and bank.count() == 0


@pytest.mark.parametrize("order", [(0.2, 0.9), (0.9, 0.2)])
def test_update_conflicts_keep_the_higher_reward_whatever_the_batch_order(order: tuple[float, float]) -> None:
    from memwise.umem.bank import BankEntry
    from memwise.umem.loop import CandidateScore, StepGroup, update_conflicts
    from memwise.umem.optimizer import OptimizerAction

    shared, other = BankEntry("e1", "k1", ["old"]), BankEntry("e2", "k2", ["old"])

    def update(values: str, gain: float, target: int = 0) -> CandidateScore:
        return CandidateScore(True, 1 + gain, OptimizerAction("UPDATE", target, [values]), gains=(gain,))

    groups = [
        StepGroup(TASKS[0], [shared], [update("first", order[0])]),
        StepGroup(TASKS[1], [other, shared], [update("second", order[1], target=1)]),
        StepGroup(TASKS[2], [other], [update("elsewhere", 0.1)]),  # its own entry: no conflict
    ]
    winners, conflicts = update_conflicts(groups)
    keep = 0 if order[0] > order[1] else 1
    assert [w is not None for w in winners] == [keep == 0, keep == 1, True]
    (conflict,) = conflicts
    assert conflict.entry_id == "e1" and conflict.kept == TASKS[keep].id and conflict.dropped == (TASKS[1 - keep].id,)

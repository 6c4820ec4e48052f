"""The UMEM step both training and online evolution share: attempt a task, then score or apply memory.

- :func:`attempt` retrieves the top-K entries for a task, runs the executor with their values as past
  experiences, and builds the Mem-Optimizer prompt from what happened.
- :class:`UtilityScorer` turns Mem-Optimizer candidates into rewards: format check, then the
  marginal utility of the candidate's memory on the task's semantic neighbours. Reference runs are
  cached by *what the executor was shown*, so one reference run serves every candidate, every task
  sharing the neighbour, and every later step in which that neighbour retrieves the same insights.
- :func:`commit_best` is the paper's training-time bank evolution: keep the best candidate of a group
  when its utility gain is positive.

The paper form of the reward compares the reference bank with "the bank after the candidate action".
Applying every candidate to the real bank and undoing it would serialise the whole group on one
SQLite bank; instead :meth:`UtilityScorer.view_after` computes what a neighbour would retrieve from
the changed bank, which is exact because an action only adds one key or rewrites one entry's values.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from memwise.exceptions import ConfigError
from memwise.llm.base import Message
from memwise.tasks.types import Task
from memwise.umem.bank import BankEntry, InsightBank, Retrieval, clean_values
from memwise.umem.executor import ExecutionResult
from memwise.umem.neighbours import Neighbourhoods
from memwise.umem.optimizer import (
    OptimizerAction,
    apply_action,
    build_optimizer_messages,
    screen_lessons,
    try_parse_optimizer_output,
)
from memwise.umem.refcache import NO_MEMORY, ReferenceCache, RefKey
from memwise.umem.rewards import ExecResult, GainForm, paper_gain, released_gain, total_reward

__all__ = [
    "Attempt",
    "CandidateScore",
    "Executor",
    "ExecutorCost",
    "UtilityScorer",
    "StepGroup",
    "UpdateConflict",
    "attempt",
    "best_candidate",
    "commit_best",
    "commit_candidate",
    "update_conflicts",
    "insight_digest",
    "insights_of",
]


class Executor(Protocol):
    """Anything that solves a task given past experiences (`QAExecutor`, `EnvExecutor`, test doubles)."""

    async def run(self, task: Task, insights: Sequence[str] = ()) -> ExecutionResult:
        """Attempt ``task`` with ``insights`` shown to the solver; the result says whether it succeeded."""
        ...


def insights_of(entries: Sequence[BankEntry]) -> list[str]:
    """The values the executor is shown for ``entries``: flattened, in order, repeats removed."""
    return clean_values([value for entry in entries for value in entry.values])


def insight_digest(insights: Sequence[str]) -> str:
    """A short stable name for a list of shown insights; no insights is :data:`NO_MEMORY`.

    Reference runs are cached under ``(task id, digest)``: with a greedy executor the run depends
    only on the task and what it was shown, so the cache never needs invalidating when the bank
    changes elsewhere.
    """
    if not insights:
        return NO_MEMORY
    blob = json.dumps(list(insights), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:24]


@dataclass(frozen=True)
class Attempt:
    """One task tried with the current bank, and the Mem-Optimizer prompt that follows from it."""

    task: Task
    retrieval: Retrieval
    result: ExecutionResult
    messages: list[Message]

    @property
    def entries(self) -> list[BankEntry]:
        """The retrieved entries, in the order the optimizer prompt numbers them."""
        return self.retrieval.entries


async def attempt(bank: InsightBank, executor: Executor, task: Task, *, count_usage: bool = True) -> Attempt:
    """Retrieve, execute and build the optimizer prompt for ``task`` (one executor run)."""
    retrieval = await bank.retrieve(task.key(), count_usage=count_usage)
    result = await executor.run(task, insights_of(retrieval.entries))
    messages = build_optimizer_messages(task.prompt, retrieval.entries, result.trajectory, result.success)
    return Attempt(task=task, retrieval=retrieval, result=result, messages=messages)


@dataclass(frozen=True)
class CandidateScore:
    """The reward of one Mem-Optimizer output and what it was made of.

    ``reason`` names the format failure (see ``FORMAT_FAILURE_REASONS``) when ``format_ok`` is False;
    ``gains`` are per neighbour, in neighbourhood order.
    """

    format_ok: bool
    reward: float
    action: OptimizerAction | None = None
    reason: str | None = None
    gains: tuple[float, ...] = ()

    @property
    def utility(self) -> float:
        """Mean gain over the neighbours (0 without neighbours or for a malformed output)."""
        return sum(self.gains) / len(self.gains) if self.gains else 0.0


@dataclass(frozen=True)
class _NeighbourView:
    """One neighbour as the reference bank shows it: its shown insights, ranked hits and closeness to the task."""

    task: Task
    insights: list[str]
    ranked: list[tuple[float, BankEntry]]
    similarity: float


@dataclass
class ExecutorCost:
    """Executor work spent on rewards, for per-step cost reports."""

    reference_runs: int = 0
    candidate_runs: int = 0
    cache_hits: int = 0
    tokens: int = 0
    format_failures: dict[str, int] = field(default_factory=dict)

    @property
    def executor_runs(self) -> int:
        """Every executor run paid for, reference and candidate alike."""
        return self.reference_runs + self.candidate_runs

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form, as logged per step."""
        return {
            "executor_runs": self.executor_runs,
            "reference_runs": self.reference_runs,
            "candidate_runs": self.candidate_runs,
            "cache_hits": self.cache_hits,
            "executor_tokens": self.tokens,
            "format_failures": dict(self.format_failures),
        }


class UtilityScorer:
    """Rewards Mem-Optimizer candidates by their marginal utility on neighbouring tasks.

    Args:
        bank: the reference bank (read only here; :func:`commit_best` writes to it).
        executor: the frozen executor; it must be deterministic (greedy) for caching to be sound.
        tasks: every task a neighbourhood may name, by id.
        neighbourhoods: precomputed neighbour ids per task (self excluded).
        form: ``"paper"`` (reference bank vs. bank after the action) or ``"released"`` (no memory vs.
            only the candidate's values).
        cache: shared reference cache; pass one to share it between scorers.
        snm: judge on the semantic neighbours (the paper). False is the ablation without SNM: the
            memory is judged on the task it was written for, which the lesson screen keeps from
            rewarding a restated answer.
    """

    def __init__(
        self,
        bank: InsightBank,
        executor: Executor,
        tasks: Mapping[str, Task],
        neighbourhoods: Neighbourhoods,
        *,
        form: GainForm = "paper",
        cache: ReferenceCache | None = None,
        snm: bool = True,
    ) -> None:
        if form not in ("paper", "released"):
            raise ConfigError(f"form must be 'paper' or 'released', got {form!r}")
        self.bank = bank
        self.executor = executor
        self.tasks = dict(tasks)
        self.neighbourhoods = neighbourhoods
        self.form: GainForm = form
        self.snm = snm
        self.cache = cache if cache is not None else ReferenceCache()
        self.cost = ExecutorCost()

    def neighbours(self, task: Task) -> list[Task]:
        """The neighbour tasks of ``task`` (raises KeyError naming an id the task set lacks); itself without SNM."""
        if not self.snm:
            return [task]
        ids = self.neighbourhoods.of(task.id)
        missing = [i for i in ids if i not in self.tasks]
        if missing:
            raise KeyError(f"neighbours {missing!r} of task {task.id!r} are not in the scorer's task set")
        return [self.tasks[i] for i in ids]

    async def _execute(self, task: Task, insights: Sequence[str], *, reference: bool) -> ExecResult:
        result = await self.executor.run(task, list(insights))
        if reference:
            self.cost.reference_runs += 1
        else:
            self.cost.candidate_runs += 1
        self.cost.tokens += result.length
        return ExecResult(success=result.success, length=result.length)

    async def _views(self, task: Task, neighbours: Sequence[Task]) -> list[_NeighbourView]:
        """What each neighbour retrieves from the reference bank, and how close its key is to ``task``'s.

        None of it depends on the candidate, so :meth:`score` computes it once per group, not once per
        candidate: one retrieval per neighbour and one embedding call for the whole group.
        """
        if self.form == "released":
            return [_NeighbourView(nb, [], [], 0.0) for nb in neighbours]
        retrievals = await asyncio.gather(*(self.bank.retrieve(nb.key(), count_usage=False) for nb in neighbours))
        vectors = await self.bank.embedder.embed([task.key().strip(), *(nb.key() for nb in neighbours)])
        return [
            _NeighbourView(
                nb,
                insights_of(r.entries),
                list(zip(r.similarities, r.entries, strict=True)),
                float(vectors[i + 1] @ vectors[0]),
            )
            for i, (nb, r) in enumerate(zip(neighbours, retrievals, strict=True))
        ]

    async def reference(self, neighbour: Task) -> ExecResult:
        """The reference run on ``neighbour``, from the cache when it was run before."""
        (view,) = await self._views(neighbour, [neighbour])
        return await self._cached(neighbour, view.insights, reference=True)

    async def _cached(self, task: Task, insights: Sequence[str], *, reference: bool) -> ExecResult:
        # A greedy run depends only on the task and what it was shown, so candidate runs share the
        # cache too: candidates that write the same memory (common in a group) pay for one run.
        key = RefKey(task.id, insight_digest(insights))
        if self.cache.known(key):  # no await before get_or_run, so this cannot go stale
            self.cost.cache_hits += 1
        return await self.cache.get_or_run(key, lambda: self._execute(task, insights, reference=reference))

    async def view_after(
        self, neighbour: Task, task: Task, entries: Sequence[BankEntry], action: OptimizerAction
    ) -> list[str]:
        """The insights ``neighbour`` would be shown once ``action`` (written for ``task``) is applied.

        Released form: only the candidate's values. Paper form: the neighbour's retrieval from the bank
        with the action applied: an ADD competes for the top-K with the key ``task.key()`` (or grows
        the entry with that key), an UPDATE rewrites the values of the entry it targets.
        """
        (view,) = await self._views(task, [neighbour])
        return self._after(view, task, entries, action)

    def _after(
        self, view: _NeighbourView, task: Task, entries: Sequence[BankEntry], action: OptimizerAction
    ) -> list[str]:
        if self.form == "released":
            return clean_values(action.values)
        ranked = list(view.ranked)
        if action.op == "UPDATE":
            assert action.target is not None
            target = entries[action.target].id
            ranked = [
                (sim, BankEntry(e.id, e.key, clean_values(action.values), e.usage, e.score) if e.id == target else e)
                for sim, e in ranked
            ]
        else:
            key = task.key().strip()
            same_key = [i for i, (_, e) in enumerate(ranked) if e.key.strip() == key]
            if same_key:
                sim, e = ranked[same_key[0]]
                merged = BankEntry(e.id, e.key, clean_values([*e.values, *action.values]), e.usage, e.score)
                ranked[same_key[0]] = (sim, merged)
            elif view.similarity >= self.bank.similarity_floor:
                ranked.append((view.similarity, BankEntry("candidate", key, clean_values(action.values))))
                # stable sort: an existing entry keeps its place on a tie, as the store's ranking would
                ranked.sort(key=lambda pair: -pair[0])
                ranked = ranked[: self.bank.top_k]
        return insights_of([e for _, e in ranked])

    async def _gain(
        self, view: _NeighbourView, task: Task, entries: Sequence[BankEntry], action: OptimizerAction
    ) -> float:
        test_insights = self._after(view, task, entries, action)
        reference = await self._cached(view.task, view.insights, reference=True)
        if test_insights == view.insights:
            # The action does not change what this neighbour sees: same greedy run, gain 0 by definition.
            test = reference
        else:
            test = await self._cached(view.task, test_insights, reference=False)
        return paper_gain(reference, test) if self.form == "paper" else released_gain(reference, test)

    @staticmethod
    def screen(task: Task, parsed: OptimizerAction | str) -> OptimizerAction | str:
        """The lesson screen online evolution applies (:func:`screen_lessons`), applied to a candidate.

        A candidate whose every lesson restates the gold answer or an option (``"answer leak"``), or
        is no sentence (``"not a lesson"``), is scored like a malformed reply: reward 0, no executor
        run, counted by its reason in ``cost.format_failures`` (and so in the step log). Not 1 for
        the format and 0 utility: that would pay a leak as much as a harmless, useless lesson, and
        GRPO would have no reason to stop leaking. Lessons screened out beside good ones are
        dropped and the rest is scored, exactly what evolution would write to the bank.
        """
        if isinstance(parsed, str):
            return parsed
        return screen_lessons(parsed, task.answer, task.choices)

    async def score(self, task: Task, entries: Sequence[BankEntry], completions: Sequence[str]) -> list[CandidateScore]:
        """Score a group of Mem-Optimizer outputs for ``task`` (whose prompt numbered ``entries``)."""
        parsed = [self.screen(task, try_parse_optimizer_output(text, len(entries))) for text in completions]
        views = await self._views(task, self.neighbours(task)) if any(not isinstance(p, str) for p in parsed) else []

        async def one(action: OptimizerAction | str) -> CandidateScore:
            if isinstance(action, str):
                self.cost.format_failures[action] = self.cost.format_failures.get(action, 0) + 1
                return CandidateScore(format_ok=False, reward=0.0, reason=action)
            gains = await asyncio.gather(*(self._gain(view, task, entries, action) for view in views))
            return CandidateScore(format_ok=True, reward=total_reward(True, gains), action=action, gains=tuple(gains))

        return list(await asyncio.gather(*(one(p) for p in parsed)))


def best_candidate(scores: Sequence[CandidateScore]) -> CandidateScore | None:
    """The group's well-formed candidate with the highest positive utility (ties: the earlier), or None."""
    best: CandidateScore | None = None
    for score in scores:
        if score.format_ok and score.action is not None and score.utility > 0:
            if best is None or score.utility > best.utility:
                best = score
    return best


async def commit_best(
    bank: InsightBank, task: Task, entries: Sequence[BankEntry], scores: Sequence[CandidateScore]
) -> BankEntry | None:
    """Apply the group's best well-formed candidate if its utility gain is positive (paper, training).

    Ties go to the earlier candidate. ``entries`` must be the list the prompt numbered. Returns the
    written entry, or None when no candidate earned a positive gain.
    """
    best = best_candidate(scores)
    return None if best is None else await commit_candidate(bank, task, entries, best)


async def commit_candidate(
    bank: InsightBank, task: Task, entries: Sequence[BankEntry], score: CandidateScore
) -> BankEntry | None:
    """Apply one scored candidate's action and store its utility as the entry's score."""
    if score.action is None:
        return None
    written = await apply_action(bank, task.key(), entries, score.action)
    return await bank.set_score(written.id, score.utility)


@dataclass(frozen=True)
class StepGroup:
    """One task's group in a GRPO step: the task, the entries its prompt numbered, its scored candidates."""

    task: Task
    entries: Sequence[BankEntry]
    scores: Sequence[CandidateScore]


@dataclass(frozen=True)
class UpdateConflict:
    """Two or more groups of one step chose to UPDATE the same entry; only ``kept`` was applied."""

    entry_id: str
    kept: str
    dropped: tuple[str, ...]


def update_conflicts(groups: Sequence[StepGroup]) -> tuple[list[CandidateScore | None], list[UpdateConflict]]:
    """Each group's winner, after settling UPDATEs of one entry by several groups (pure).

    Every group of a step was scored against the same bank, so two winners that both UPDATE entry
    ``e`` each replace ``e``'s lessons outright: applying both in batch order would let the later one
    silently erase the earlier, whatever their rewards. The winner with the higher utility keeps
    the entry (ties: the earlier group); the others are not applied and are reported as conflicts.
    """
    winners = [best_candidate(group.scores) for group in groups]
    claims: dict[str, list[int]] = {}
    for i, (group, win) in enumerate(zip(groups, winners, strict=True)):
        if win is not None and win.action is not None and win.action.op == "UPDATE":
            assert win.action.target is not None
            claims.setdefault(group.entries[win.action.target].id, []).append(i)
    conflicts: list[UpdateConflict] = []
    for entry_id, rivals in claims.items():
        if len(rivals) < 2:
            continue
        keep = max(rivals, key=lambda i: (winners[i].utility, -i))  # type: ignore[union-attr]
        for i in rivals:
            if i != keep:
                winners[i] = None
        conflicts.append(
            UpdateConflict(entry_id, groups[keep].task.id, tuple(groups[i].task.id for i in rivals if i != keep))
        )
    return winners, conflicts

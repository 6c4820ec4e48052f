"""The bank's side of UMEM's GRPO training: prompts from the live bank, rewards, commits and the step log.

:class:`MemoryEvolution` builds each task's prompt from the bank *as it is when the task is sampled*
(retrieval plus one executor attempt), is the trl reward function (format + marginal utility on
neighbours), commits the best candidate of each group when its gain is positive, and appends one
:class:`StepRecord` per step to :data:`STEP_LOG`. It knows nothing of trl's classes: the trainer in
:mod:`memwise.umem.grpo` calls :meth:`MemoryEvolution.refresh_prompts` and passes
:meth:`MemoryEvolution.utility_reward` as its reward function.

The retrieved entry ids travel as a row column (``entry_ids``) to the reward function, which maps
``UPDATE i`` to ``entry_ids[i]`` and so to the entry the prompt numbered ``i``.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from memwise.exceptions import ConfigError, StoreError
from memwise.runs.files import append_jsonl, read_jsonl, write_text_atomic
from memwise.umem.bank import BankEntry, InsightBank
from memwise.umem.bridge import AsyncBridge
from memwise.umem.loop import (
    Attempt,
    CandidateScore,
    ExecutorCost,
    StepGroup,
    UpdateConflict,
    UtilityScorer,
    attempt,
    commit_candidate,
    insight_digest,
    insights_of,
    update_conflicts,
)
from memwise.umem.refcache import RefKey
from memwise.umem.rewards import ExecResult
from memwise.umem.trainset import TrainSet

__all__ = ["STEP_LOG", "MemoryEvolution", "StepRecord", "keep_records"]

STEP_LOG = "umem_steps.jsonl"
"""Per-step records, one JSON object a line, in the output directory."""


@dataclass(frozen=True)
class StepRecord:
    """What one GRPO step cost and did to the bank (one line of :data:`STEP_LOG`).

    Rewards are over all completions; ``utility_mean`` only over well-formed ones (None when there
    were none). ``executor_*`` count reward work (scorer cost deltas); ``prompt_executor_*`` count
    the attempts that built the step's prompts, whose success rate is the executor's accuracy on
    the step's tasks under the bank of that moment. ``commit_conflicts`` counts winners whose UPDATE
    target an earlier commit of the step evicted; ``update_conflicts`` lists entries two or more
    winners chose to UPDATE (``entry_id``, the task ``kept``, the tasks ``dropped``): the higher
    reward was applied, the others were not (see :func:`~memwise.umem.loop.update_conflicts`).
    """

    step: int
    tasks: int
    completions: int
    reward_mean: float
    reward_std: float
    format_ok_rate: float
    utility_mean: float | None
    format_failures: dict[str, int]
    executor_runs: int
    reference_runs: int
    candidate_runs: int
    executor_tokens: int
    cache_hits: int
    prompt_executor_runs: int
    prompt_executor_tokens: int
    prompt_success_rate: float | None
    commits: int
    commit_conflicts: int
    bank_changes: dict[str, int]
    bank_size: int
    wall_time_s: float
    step_time_s: float
    update_conflicts: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, one line of the step log."""
        return asdict(self)


@dataclass
class _PromptBatch:
    runs: int = 0
    tokens: int = 0
    successes: int = 0


def _snapshot(cost: ExecutorCost) -> ExecutorCost:
    return ExecutorCost(
        cost.reference_runs, cost.candidate_runs, cost.cache_hits, cost.tokens, dict(cost.format_failures)
    )


def _completion_text(completion: Any) -> str:
    """A trl completion as text: conversational completions are a list with one assistant message."""
    if isinstance(completion, str):
        return completion
    return "".join(str(message["content"]) for message in completion)


def _groups(task_ids: Sequence[str], entry_ids: Sequence[Sequence[str]]) -> list[tuple[int, int]]:
    """``[start, stop)`` spans of consecutive rows of one task; trl lays each group out contiguously."""
    if len(task_ids) != len(entry_ids):
        raise ConfigError(f"got {len(task_ids)} task ids but {len(entry_ids)} entry id lists")
    spans: list[tuple[int, int]] = []
    start = 0
    for i in range(1, len(task_ids) + 1):
        if i == len(task_ids) or task_ids[i] != task_ids[start]:
            spans.append((start, i))
            start = i
        elif list(entry_ids[i]) != list(entry_ids[start]):
            raise ConfigError(f"rows of task {task_ids[start]!r} carry different entry ids; one prompt per group")
    return spans


class MemoryEvolution:
    """The bank's side of training: prompts from the live bank, rewards, commits and the step log.

    Args:
        trainset: the training tasks (their neighbourhoods must be the scorer's).
        scorer: rewards candidates; its bank is the bank that evolves (the paper starts it empty).
        bridge: the loop every async call runs on.
        log_path: where to append one :class:`StepRecord` per step as JSON (None: keep them in memory only).

    :meth:`utility_reward` is a trl reward function: ``(prompts, completions, task_id, entry_ids, ...)``.
    """

    def __init__(
        self,
        trainset: TrainSet,
        scorer: UtilityScorer,
        bridge: AsyncBridge,
        *,
        log_path: str | Path | None = None,
    ) -> None:
        missing = [task.id for task in trainset.tasks if task.id not in scorer.tasks]
        if missing:
            raise ConfigError(
                f"the scorer does not know training tasks {missing[:5]!r}; build it with trainset.scorer()"
            )
        known = set(scorer.neighbourhoods.task_ids)
        if any(task.id not in known for task in trainset.tasks):
            raise ConfigError(
                "the scorer's neighbourhoods do not cover the training set; build it with trainset.scorer()"
            )
        self.trainset = trainset
        self.scorer = scorer
        self.bridge = bridge
        self.log_path = Path(log_path) if log_path is not None else None
        self.records: list[StepRecord] = []
        self._batch = _PromptBatch()
        self._cost = _snapshot(scorer.cost)
        self._bank_stats = asdict(scorer.bank.stats)
        self._started = time.monotonic()
        self._last = self._started
        self._calls = 0

    @property
    def bank(self) -> InsightBank:
        """The insight bank the scorer reads and the GRPO steps update."""
        return self.scorer.bank

    # prompts

    def refresh_prompts(self, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Rows with ``prompt`` rebuilt from the live bank and ``entry_ids`` added (one attempt per task).

        The input rows are not modified. Rows of the same task share one attempt, so a group of G
        rows costs one executor run.
        """
        order = list(dict.fromkeys(str(row["task_id"]) for row in rows))
        attempts = self.bridge.run(self._attempt_all(order))
        refreshed = []
        for row in rows:
            tried = attempts[str(row["task_id"])]
            refreshed.append(
                {
                    **row,
                    "prompt": [message.to_dict() for message in tried.messages],
                    "entry_ids": [entry.id for entry in tried.entries],
                }
            )
        return refreshed

    async def _attempt_all(self, task_ids: Sequence[str]) -> dict[str, Attempt]:
        # The executor's model backend bounds the runs in flight (the policy role's max_concurrency).
        async def one(task_id: str) -> Attempt:
            return await attempt(self.bank, self.scorer.executor, self.trainset.task(task_id))

        done = await asyncio.gather(*(one(task_id) for task_id in task_ids))
        for tried in done:
            self._batch.runs += 1
            self._batch.tokens += tried.result.length
            self._batch.successes += int(tried.result.success)
            await self._remember(tried)
        return {tried.task.id: tried for tried in done}

    async def _remember(self, tried: Attempt) -> None:
        # The attempt is the greedy run of this task under what it was shown: exactly the reference
        # run a neighbour's candidate would otherwise pay for, so the cache keeps it.
        key = RefKey(tried.task.id, insight_digest(insights_of(tried.entries)))
        result = ExecResult(success=tried.result.success, length=tried.result.length)

        async def ready() -> ExecResult:
            return result

        await self.scorer.cache.get_or_run(key, ready)

    # rewards

    def utility_reward(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        task_id: Sequence[str],
        entry_ids: Sequence[Sequence[str]],
        *,
        trainer_state: Any = None,
        log_metric: Callable[[str, float], None] | None = None,
        **kwargs: Any,
    ) -> list[float | None]:
        """Reward function for trl: ``format_ok + mean gain on the neighbours`` per completion.

        Scores every group against the bank as the prompts showed it, then commits each group's
        best candidate (positive gain only) in batch order, then appends the step's record. Other
        trl keyword arguments (``completion_ids``, ``log_extra``...) are accepted and unused.
        """
        if len(prompts) != len(completions) or len(task_id) != len(completions):
            raise ConfigError(
                f"got {len(prompts)} prompts, {len(completions)} completions and {len(task_id)} task ids; "
                "trl passes one of each per completion"
            )
        texts = [_completion_text(c) for c in completions]
        spans = _groups([str(t) for t in task_id], entry_ids)
        scores, commits, conflicts, updates = self.bridge.run(self._score_and_commit(spans, task_id, entry_ids, texts))
        self._calls += 1
        step = int(trainer_state.global_step) + 1 if trainer_state is not None else self._calls
        record = self._record(step, len(spans), scores, commits, conflicts, updates)
        if log_metric is not None:
            log_metric("umem/format_ok_rate", record.format_ok_rate)
            log_metric("umem/utility", record.utility_mean if record.utility_mean is not None else 0.0)
            log_metric("umem/executor_runs", float(record.executor_runs + record.prompt_executor_runs))
            log_metric("umem/commits", float(record.commits))
            log_metric("umem/bank_size", float(record.bank_size))
        return [score.reward for score in scores]

    async def _score_and_commit(
        self,
        spans: Sequence[tuple[int, int]],
        task_ids: Sequence[str],
        entry_ids: Sequence[Sequence[str]],
        texts: Sequence[str],
    ) -> tuple[list[CandidateScore], int, int, list[UpdateConflict]]:
        tasks = [self.trainset.task(str(task_ids[a])) for a, _ in spans]
        # By id, in prompt order: entry_ids[i] is the entry the prompt numbered i.
        entries = [[self.bank.get(eid) for eid in entry_ids[a]] for a, _ in spans]
        grouped = await asyncio.gather(
            *(
                self.scorer.score(task, group_entries, texts[a:b])
                for task, group_entries, (a, b) in zip(tasks, entries, spans, strict=True)
            )
        )
        groups = [StepGroup(t, e, g) for t, e, g in zip(tasks, entries, grouped, strict=True)]
        winners, updates = update_conflicts(groups)
        commits = conflicts = 0
        for group, win in zip(groups, winners, strict=True):
            if win is None:
                continue
            try:
                written = await commit_candidate(self.bank, group.task, group.entries, win)
            except StoreError:
                # An earlier commit of this step may have evicted the entry this group's UPDATE targets.
                if all(self._exists(entry) for entry in group.entries):
                    raise
                conflicts += 1
                continue
            commits += written is not None
        return [score for scores in grouped for score in scores], commits, conflicts, updates

    def _exists(self, entry: BankEntry) -> bool:
        try:
            self.bank.get(entry.id)
        except StoreError:
            return False
        return True

    def _record(
        self,
        step: int,
        tasks: int,
        scores: Sequence[CandidateScore],
        commits: int,
        conflicts: int,
        updates: Sequence[UpdateConflict] = (),
    ) -> StepRecord:
        now = time.monotonic()
        cost = _snapshot(self.scorer.cost)
        before, self._cost = self._cost, cost
        stats = asdict(self.bank.stats)
        old_stats, self._bank_stats = self._bank_stats, stats
        batch, self._batch = self._batch, _PromptBatch()
        rewards = [score.reward for score in scores]
        ok = [score for score in scores if score.format_ok]
        mean = sum(rewards) / len(rewards) if rewards else 0.0
        failures = {
            reason: count - before.format_failures.get(reason, 0)
            for reason, count in cost.format_failures.items()
            if count != before.format_failures.get(reason, 0)
        }
        record = StepRecord(
            step=step,
            tasks=tasks,
            completions=len(scores),
            reward_mean=mean,
            reward_std=math.sqrt(sum((r - mean) ** 2 for r in rewards) / len(rewards)) if rewards else 0.0,
            format_ok_rate=len(ok) / len(scores) if scores else 0.0,
            utility_mean=sum(score.utility for score in ok) / len(ok) if ok else None,
            format_failures=failures,
            executor_runs=cost.executor_runs - before.executor_runs,
            reference_runs=cost.reference_runs - before.reference_runs,
            candidate_runs=cost.candidate_runs - before.candidate_runs,
            executor_tokens=cost.tokens - before.tokens,
            cache_hits=cost.cache_hits - before.cache_hits,
            prompt_executor_runs=batch.runs,
            prompt_executor_tokens=batch.tokens,
            prompt_success_rate=batch.successes / batch.runs if batch.runs else None,
            commits=commits,
            commit_conflicts=conflicts,
            update_conflicts=[asdict(c) for c in updates],
            bank_changes={k: stats[k] - old_stats[k] for k in ("added", "merged", "updated", "evicted")},
            bank_size=self.bank.count(),
            wall_time_s=round(now - self._started, 3),
            step_time_s=round(now - self._last, 3),
        )
        self._last = now
        self.records.append(record)
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            append_jsonl(self.log_path, record.to_dict())
        return record


def keep_records(log_path: Path, up_to: int) -> list[StepRecord]:
    """The step log's records up to a checkpoint's step; later lines belong to steps that will re-run."""
    names = {f.name for f in fields(StepRecord)}
    kept = [
        StepRecord(**{k: v for k, v in row.items() if k in names})
        for row in read_jsonl(log_path)
        if int(row.get("step", 0)) <= up_to
    ]
    write_text_atomic(log_path, "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in kept))
    return kept

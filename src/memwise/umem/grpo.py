"""GRPO training of the Mem-Optimizer with trl, the insight bank evolving while it trains.

What the paper's training loop needs, and where each piece lives:

- :class:`GRPOSettings`: the paper's hyper-parameters (G=8, 128 tasks per step, KL 0.001, clip 0.2,
  constant lr 1e-6, 3 epochs, rollout temperature 1.0), turned into a trl ``GRPOConfig``.
- :class:`AsyncBridge`: trl calls reward functions synchronously, memwise executors are async. One
  private event loop runs in a background thread for the whole run, so every executor, embedder and
  HTTP client is used from one loop (async clients are bound to the loop they first ran on).
- :class:`MemoryEvolution`: builds each task's prompt from the *live* bank (retrieval plus an
  executor attempt), is the reward function (format + marginal utility on neighbours), commits the
  best candidate of each group when its gain is positive, and writes one JSONL record per step.
- :class:`UMEMGRPOTrainer`: a ``GRPOTrainer`` that asks :class:`MemoryEvolution` for fresh prompts
  right before each generation.
- :func:`train_mem_optimizer`: the entry point.

Why prompts are rebuilt inside ``_generate_and_score_completions``: a prompt must show the bank as
it is when the task is sampled, after the previous step's commits. trl 1.16 offers no public hook
at that moment. A map-style dataset that builds prompts in ``__getitem__`` is called G times per
task (trl's ``RepeatSampler`` repeats each index) and one batch early (accelerate's
``DataLoaderShard`` prefetches the next batch before yielding the current one), so its prompts
would miss the previous step's commits. ``environment_factory.reset`` runs at the right time but
once per rollout, only appends to the last user message, and switches on trl's tool-calling path.
``rollout_func`` would mean re-implementing generation. ``_generate_and_score_completions(inputs)``
is called exactly once per generation batch, with the raw dataset rows, right before generating:
overriding it to rewrite ``prompt`` and add ``entry_ids`` is the smallest change. It is private, so
trl is pinned (``trl==1.16.0``) and a test checks that the method still exists with that signature.

The retrieved entry ids travel as a row column (``entry_ids``) to the reward function, which maps
``UPDATE i`` to ``entry_ids[i]`` and so to the entry the prompt numbered ``i``.

Single process only: trl may split a prompt group across processes, and each process would then
score and commit partial groups against one shared bank.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memwise.exceptions import ConfigError, StoreError
from memwise.runs.files import append_jsonl, read_jsonl, restore_sqlite, snapshot_sqlite, write_text_atomic
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

# GRPOConfig and GRPOTrainer come from their defining modules: trl's top level exports them lazily, which
# type checkers cannot follow (they are the same objects).
try:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl.trainer.grpo_config import GRPOConfig
    from trl.trainer.grpo_trainer import GRPOTrainer
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "memwise.umem.grpo needs the training extra: pip install 'memwise[train]' (trl, peft, datasets, pyarrow)"
    ) from exc

if TYPE_CHECKING:
    from peft import LoraConfig
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "BANK_SNAPSHOT",
    "STEP_LOG",
    "BankCheckpoint",
    "AsyncBridge",
    "GRPOSettings",
    "LoRASettings",
    "MemoryEvolution",
    "StepRecord",
    "TrainResult",
    "UMEMGRPOTrainer",
    "grpo_dataset",
    "latest_checkpoint",
    "restore_bank",
    "train_mem_optimizer",
]

STEP_LOG = "umem_steps.jsonl"
"""Per-step records, one JSON object a line, in the output directory."""

LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo")


# -- settings -----------------------------------------------------------------------------------


@dataclass
class LoRASettings:
    """Train a LoRA adapter instead of the full model (opt-in; the paper trains the full model)."""

    r: int = field(default=16, metadata={"help": "LoRA rank."})
    alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator (lora_alpha)."})
    dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    target_modules: tuple[str, ...] = field(
        default=("q_proj", "k_proj", "v_proj", "o_proj"),
        metadata={"help": "Module names to adapt; Llama/Qwen attention projections by default. Never lm_head."},
    )

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ConfigError(f"LoRASettings.r must be at least 1, got {self.r}")
        if self.alpha < 1:
            raise ConfigError(f"LoRASettings.alpha must be at least 1, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"LoRASettings.dropout must be in [0, 1), got {self.dropout}")
        self.target_modules = tuple(self.target_modules)
        if not self.target_modules:
            raise ConfigError(
                "LoRASettings.target_modules is empty; name the modules to adapt, e.g. ('q_proj', 'v_proj')"
            )
        if "lm_head" in self.target_modules:
            raise ConfigError("LoRASettings: trl computes log-probs from lm_head.weight directly; remove 'lm_head'")

    def to_peft_config(self) -> LoraConfig:
        """The peft ``LoraConfig`` (peft is imported here, so LoRA stays an optional dependency)."""
        from peft import LoraConfig

        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=list(self.target_modules),
            task_type="CAUSAL_LM",
        )


@dataclass
class GRPOSettings:
    """GRPO hyper-parameters for the Mem-Optimizer; defaults are the paper's.

    Example:
        >>> s = GRPOSettings(batch_tasks=4, group_size=4, micro_batch_size=8, max_steps=2)
        >>> s.gradient_accumulation_steps
        2
    """

    group_size: int = field(default=8, metadata={"help": "Completions per task (G); rewards are normalised per group."})
    batch_tasks: int = field(default=128, metadata={"help": "Tasks per optimizer step."})
    micro_batch_size: int = field(
        default=8,
        metadata={"help": "Completions per forward/backward pass; a memory knob that must divide G * batch_tasks."},
    )
    beta: float = field(default=0.001, metadata={"help": "KL coefficient (k3 estimator, as a loss term)."})
    epsilon: float = field(default=0.2, metadata={"help": "PPO clip range."})
    learning_rate: float = field(default=1e-6, metadata={"help": "Constant learning rate."})
    epochs: float = field(default=3.0, metadata={"help": "Passes over the training tasks."})
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many steps (-1: run all epochs)."})
    temperature: float = field(default=1.0, metadata={"help": "Rollout sampling temperature."})
    max_completion_length: int = field(default=1024, metadata={"help": "Token cap of one Mem-Optimizer output."})
    loss_type: str = field(
        default="dapo",
        metadata={"help": "trl loss aggregation; 'dapo' is verl's default token-mean over the batch."},
    )
    gradient_checkpointing: bool = field(default=True, metadata={"help": "Trade compute for activation memory."})
    model_dtype: str | None = field(
        default=None,
        metadata={"help": "dtype to load a model path in (e.g. 'bfloat16'); None keeps trl's float32."},
    )
    use_cpu: bool | None = field(default=None, metadata={"help": "Train on CPU; None: only when CUDA is absent."})
    bf16: bool | None = field(default=None, metadata={"help": "bf16 mixed precision; None: when the GPU has it."})
    seed: int = field(default=0, metadata={"help": "Seeds trl, sampling and the task order."})
    logging_steps: int = field(default=1, metadata={"help": "trl's own logging interval (memwise logs every step)."})
    report_to: str = field(default="none", metadata={"help": "trl/transformers trackers, e.g. 'wandb'."})
    save_model: bool = field(default=True, metadata={"help": "Save the trained model and tokenizer to <out>/final."})
    save_steps: int = field(
        default=0,
        metadata={"help": "Write a resumable checkpoint (model, optimizer, bank) every N steps; 0: none."},
    )
    save_total_limit: int = field(default=2, metadata={"help": "Checkpoints kept; older ones are deleted."})
    lora: LoRASettings | None = field(default=None, metadata={"help": "Train a LoRA adapter instead (opt-in)."})

    def __post_init__(self) -> None:
        if self.group_size < 2:
            raise ConfigError(f"group_size must be at least 2 (GRPO normalises within a group), got {self.group_size}")
        if self.batch_tasks < 1:
            raise ConfigError(f"batch_tasks must be at least 1, got {self.batch_tasks}")
        if self.micro_batch_size < 1 or (self.group_size * self.batch_tasks) % self.micro_batch_size:
            raise ConfigError(
                f"micro_batch_size ({self.micro_batch_size}) must divide group_size * batch_tasks "
                f"({self.group_size * self.batch_tasks}); pick a divisor such as {self.group_size}"
            )
        if self.beta < 0:
            raise ConfigError(f"beta is a KL coefficient and must be >= 0, got {self.beta}")
        if self.epsilon <= 0:
            raise ConfigError(f"epsilon (clip range) must be > 0, got {self.epsilon}")
        if self.learning_rate <= 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.epochs <= 0:
            raise ConfigError(f"epochs must be > 0, got {self.epochs}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ConfigError(f"max_steps must be positive, or -1 to run all epochs; got {self.max_steps}")
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be > 0 (GRPO needs diverse samples), got {self.temperature}")
        if self.max_completion_length < 1:
            raise ConfigError(f"max_completion_length must be at least 1, got {self.max_completion_length}")
        if self.loss_type not in LOSS_TYPES:
            raise ConfigError(f"loss_type must be one of {LOSS_TYPES}, got {self.loss_type!r}")
        if self.logging_steps < 1:
            raise ConfigError(f"logging_steps must be at least 1, got {self.logging_steps}")
        if self.save_steps < 0 or self.save_total_limit < 1:
            raise ConfigError("save_steps must be >= 0 and save_total_limit >= 1")

    @property
    def gradient_accumulation_steps(self) -> int:
        """Micro-batches per optimizer step: one optimizer step per batch of ``batch_tasks`` tasks."""
        return self.group_size * self.batch_tasks // self.micro_batch_size

    def resolved_device(self) -> tuple[bool, bool]:
        """``(use_cpu, bf16)`` with the automatic choices made: CPU without CUDA, bf16 where supported."""
        import torch

        cuda = torch.cuda.is_available()
        use_cpu = (not cuda) if self.use_cpu is None else self.use_cpu
        if self.bf16 is None:
            bf16 = (not use_cpu) and cuda and torch.cuda.is_bf16_supported()
        else:
            bf16 = self.bf16
        return use_cpu, bf16

    def to_grpo_config(self, output_dir: str | Path) -> GRPOConfig:
        """The trl ``GRPOConfig`` for these settings (vLLM off: generation uses the trained model)."""
        use_cpu, bf16 = self.resolved_device()
        return GRPOConfig(
            output_dir=str(output_dir),
            num_generations=self.group_size,
            per_device_train_batch_size=self.micro_batch_size,
            gradient_accumulation_steps=self.gradient_accumulation_steps,
            learning_rate=self.learning_rate,
            lr_scheduler_type="constant",
            num_train_epochs=self.epochs,
            max_steps=self.max_steps,
            beta=self.beta,
            epsilon=self.epsilon,
            temperature=self.temperature,
            max_completion_length=self.max_completion_length,
            loss_type=self.loss_type,
            scale_rewards="group",
            # Set under its new name: trl's `gradient_checkpointing` default is a deprecated alias.
            activation_checkpointing=self.gradient_checkpointing,
            use_cpu=use_cpu,
            bf16=bf16,
            model_init_kwargs={"dtype": self.model_dtype} if self.model_dtype else None,
            remove_unused_columns=False,  # the reward needs task_id and entry_ids
            report_to=self.report_to,
            logging_steps=self.logging_steps,
            save_strategy="steps" if self.save_steps else "no",
            save_steps=self.save_steps or 500,
            save_total_limit=self.save_total_limit,
            seed=self.seed,
        )


# -- bank evolution, rewards and the step log -----------------------------------------------------


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
        scores, commits, conflicts, updates = self.bridge.run(
            self._score_and_commit(spans, task_id, entry_ids, texts)
        )
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


# -- checkpoints ------------------------------------------------------------------------------------

BANK_SNAPSHOT = "umem_bank.sqlite3"
"""The bank as it was at a checkpoint's step, saved inside trl's ``checkpoint-N`` folder."""


class BankCheckpoint(TrainerCallback):
    """Saves the bank beside each trl checkpoint, so a resumed run continues with that step's bank.

    Without it a resumed run would pair the checkpoint's model with the bank of whatever step the
    process died at: commits made after the checkpoint would be kept but their steps re-run.
    """

    def __init__(self, bank_path: Path) -> None:
        self.bank_path = bank_path

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Save the bank beside each trainer checkpoint, so a resumed run gets the matching bank."""
        snapshot_sqlite(self.bank_path, Path(args.output_dir) / f"checkpoint-{state.global_step}" / BANK_SNAPSHOT)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest trl checkpoint under ``output_dir`` that also holds a bank snapshot, or None."""
    found = []
    for path in Path(output_dir).glob("checkpoint-*"):
        suffix = path.name.removeprefix("checkpoint-")
        if suffix.isdigit() and (path / BANK_SNAPSHOT).exists():
            found.append((int(suffix), path))
    return max(found)[1] if found else None


def restore_bank(checkpoint: str | Path, bank_path: str | Path) -> None:
    """Put a checkpoint's bank back at ``bank_path``; call it before the bank's store is opened."""
    restore_sqlite(Path(checkpoint) / BANK_SNAPSHOT, bank_path)


def _checkpoint_step(checkpoint: Path) -> int:
    return int(checkpoint.name.removeprefix("checkpoint-"))


def _keep_records(log_path: Path, up_to: int) -> list[StepRecord]:
    """The step log's records up to a checkpoint's step; later lines belong to steps that will re-run."""
    names = {f.name for f in fields(StepRecord)}
    kept = [
        StepRecord(**{k: v for k, v in row.items() if k in names})
        for row in read_jsonl(log_path)
        if int(row.get("step", 0)) <= up_to
    ]
    write_text_atomic(log_path, "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in kept))
    return kept


# -- trainer ----------------------------------------------------------------------------------------


class UMEMGRPOTrainer(GRPOTrainer):
    """A ``GRPOTrainer`` whose prompts are rebuilt from the live bank right before each generation.

    Pass ``evolution`` (a :class:`MemoryEvolution`) and ``reward_funcs=evolution.utility_reward``;
    every other argument is ``GRPOTrainer``'s. See the module docstring for why this hook.
    """

    def __init__(self, *args: Any, evolution: MemoryEvolution, **kwargs: Any) -> None:
        self.evolution = evolution
        super().__init__(*args, **kwargs)

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        return super()._generate_and_score_completions(self.evolution.refresh_prompts(inputs))


def grpo_dataset(trainset: TrainSet) -> Dataset:
    """The trl training dataset: ``task_id`` plus a placeholder ``prompt`` (the task alone).

    trl requires a ``prompt`` column; :class:`UMEMGRPOTrainer` replaces it at generation time with
    the Mem-Optimizer prompt built from the bank of that moment, so the placeholder is never trained on.
    """
    return Dataset.from_dict(
        {
            "prompt": [[{"role": "user", "content": task.prompt}] for task in trainset.tasks],
            "task_id": [task.id for task in trainset.tasks],
        }
    )


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced: where things are, the step records and the reward cost."""

    output_dir: Path
    model_dir: Path | None
    steps: int
    records: tuple[StepRecord, ...]
    bank_size: int
    cost: dict[str, object]
    metrics: dict[str, float]


def train_mem_optimizer(
    model: str | PreTrainedModel,
    trainset: TrainSet,
    scorer: UtilityScorer,
    *,
    output_dir: str | Path,
    settings: GRPOSettings | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    bridge: AsyncBridge | None = None,
    resume_from: str | Path | None = None,
) -> TrainResult:
    """Train a Mem-Optimizer with GRPO while its memory evolves (UMEM, section "GRPO training").

    Args:
        model: a Hugging Face causal LM path or id, or a built model (then pass ``tokenizer``; with
            ``beta > 0`` and no LoRA trl loads the frozen reference from the model's config path).
        trainset: tasks and neighbourhoods (:func:`~memwise.umem.trainset.build_trainset`).
        scorer: ``trainset.scorer(bank, executor, form=...)``; its bank evolves and is the result.
        output_dir: receives ``settings.json``, :data:`STEP_LOG` and ``final/`` (the trained model).
        settings: hyper-parameters (None: the paper's).
        tokenizer: the model's tokenizer, left-padded; None loads it from ``model``.
        bridge: the event loop the executor's clients live on; None makes one and closes it at the end.
        resume_from: a ``checkpoint-N`` folder (see :func:`latest_checkpoint`) to continue from. The
            bank must already be restored from it (:func:`restore_bank`, before its store was opened);
            the step log keeps steps up to N and the model, optimizer and data order resume at N.

    Example:
        >>> # bank, executor and tasks built elsewhere (see the CLI)
        >>> # trainset = bridge.run(build_trainset(tasks, embedder))
        >>> # train_mem_optimizer("Qwen/Qwen3-4B-Instruct-2507", trainset, trainset.scorer(bank, executor),
        >>> #                     output_dir="runs/umem", bridge=bridge)
    """
    settings = settings if settings is not None else GRPOSettings()
    if len(trainset) < settings.batch_tasks:
        raise ConfigError(
            f"the training set has {len(trainset)} tasks but a step takes batch_tasks={settings.batch_tasks}; "
            "lower batch_tasks or add tasks"
        )
    if tokenizer is not None and tokenizer.padding_side != "left":
        raise ConfigError("trl generates from left-padded prompts: set tokenizer.padding_side = 'left'")
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    config = settings.to_grpo_config(output)
    if config.world_size > 1:
        raise ConfigError(
            "train_mem_optimizer runs in one process: trl may split a group across processes, which would "
            "score and commit partial groups against one shared bank"
        )
    (output / "settings.json").write_text(json.dumps(asdict(settings), indent=1) + "\n", encoding="utf-8")
    log_path = output / STEP_LOG
    if resume_from is None:
        log_path.unlink(missing_ok=True)
        earlier: list[StepRecord] = []
    else:
        earlier = _keep_records(log_path, _checkpoint_step(Path(resume_from)))

    owned = bridge is None
    active = AsyncBridge() if bridge is None else bridge
    try:
        evolution = MemoryEvolution(
            trainset, scorer, active, log_path=log_path
        )
        trainer = UMEMGRPOTrainer(
            model=model,
            reward_funcs=evolution.utility_reward,
            args=config,
            train_dataset=grpo_dataset(trainset),
            processing_class=tokenizer,
            peft_config=settings.lora.to_peft_config() if settings.lora is not None else None,
            evolution=evolution,
            callbacks=[BankCheckpoint(scorer.bank.store.path)] if settings.save_steps else None,
        )
        evolution.records.extend(earlier)
        output_metrics = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None).metrics
        model_dir = None
        if settings.save_model:
            model_dir = output / "final"
            trainer.save_model(str(model_dir))
        return TrainResult(
            output_dir=output,
            model_dir=model_dir,
            steps=trainer.state.global_step,
            records=tuple(evolution.records),
            bank_size=scorer.bank.count(),
            cost=scorer.cost.as_dict(),
            metrics={k: float(v) for k, v in output_metrics.items()},
        )
    finally:
        if owned:
            active.close()

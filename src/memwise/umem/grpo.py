"""GRPO training of the Mem-Optimizer with trl, the insight bank evolving while it trains.

What the paper's training loop needs, and where each piece lives:

- :class:`~memwise.umem.grpo_settings.GRPOSettings`: the paper's hyper-parameters (G=8, 128 tasks per
  step, KL 0.001, clip 0.2, constant lr 1e-6, 3 epochs, rollout temperature 1.0), turned into a trl
  ``GRPOConfig``.
- :class:`~memwise.umem.bridge.AsyncBridge`: trl calls reward functions synchronously, memwise executors
  are async. One private event loop runs in a background thread for the whole run, so every executor,
  embedder and HTTP client is used from one loop (async clients are bound to the loop they first ran on).
- :class:`~memwise.umem.grpo_evolution.MemoryEvolution`: builds each task's prompt from the *live* bank,
  is the reward function, commits the best candidate of each group, and writes the step log.
- :mod:`memwise.umem.grpo_checkpoints` and :class:`BankCheckpoint`: the bank saved beside each trl
  checkpoint, so a resumed run continues with that step's bank.
- :class:`UMEMGRPOTrainer` (here): a ``GRPOTrainer`` that asks ``MemoryEvolution`` for fresh prompts
  right before each generation.
- :func:`train_mem_optimizer` (here): the entry point.

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

Single process only: trl may split a prompt group across processes, and each process would then
score and commit partial groups against one shared bank.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memwise.exceptions import ConfigError
from memwise.runs.files import snapshot_sqlite
from memwise.umem.bridge import AsyncBridge
from memwise.umem.grpo_checkpoints import BANK_SNAPSHOT, checkpoint_step
from memwise.umem.grpo_evolution import STEP_LOG, MemoryEvolution, StepRecord, keep_records
from memwise.umem.grpo_settings import GRPOSettings
from memwise.umem.loop import UtilityScorer
from memwise.umem.trainset import TrainSet

# GRPOTrainer comes from its defining module: trl's top level exports it lazily, which type checkers
# cannot follow (it is the same object).
try:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl.trainer.grpo_trainer import GRPOTrainer
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "memwise.umem.grpo needs the training extra: pip install 'memwise[train]' (trl, peft, datasets, pyarrow)"
    ) from exc

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "BankCheckpoint",
    "TrainResult",
    "UMEMGRPOTrainer",
    "grpo_dataset",
    "train_mem_optimizer",
]


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
        earlier = keep_records(log_path, checkpoint_step(Path(resume_from)))

    owned = bridge is None
    active = AsyncBridge() if bridge is None else bridge
    try:
        evolution = MemoryEvolution(trainset, scorer, active, log_path=log_path)
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

"""MetaMem end to end: train, validate every step, pick the best, test with and without the rules.

The result is written to ``<run>/metamem/result.json`` (atomically), next to the trainer's
checkpoint, so ``memwise metamem show|diff|answer`` and the report read one place.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memwise.exceptions import ConfigError
from memwise.llm.base import ChatModel
from memwise.metamem.data import MetaQuestion
from memwise.metamem.evaluate import EvalResult, evaluate_rules, select_best, validate_history
from memwise.metamem.rule_history import RuleHistory
from memwise.metamem.rules import RuleSet
from memwise.metamem.train_checkpoint import StepRecord
from memwise.metamem.train_config import TrainConfig, train_config_from_dict
from memwise.metamem.trainer import MetaMemTrainer
from memwise.runs.files import write_text_atomic
from memwise.runs.rundir import RunDir


@dataclass(frozen=True)
class MetaMemResult:
    """A trained meta-memory and the evidence for it."""

    history: RuleHistory
    steps: tuple[StepRecord, ...]
    validation: dict[int, EvalResult]
    best_step: int
    test_with_rules: EvalResult | None
    test_without_rules: EvalResult | None

    @property
    def rules(self) -> RuleSet:
        """The chosen rule set (the best validation step's)."""
        return self.history.at_step(self.best_step)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as written to :func:`result_path`."""
        return {
            "best_step": self.best_step,
            "rules": self.rules.to_dict(),
            "validation": {str(k): v.to_dict() for k, v in self.validation.items()},
            "test_with_rules": self.test_with_rules.to_dict() if self.test_with_rules else None,
            "test_without_rules": self.test_without_rules.to_dict() if self.test_without_rules else None,
            "steps": [vars(s) for s in self.steps],
            "history": self.history.to_dict(),
        }


def result_path(run_dir: str | Path) -> Path:
    """Where a run directory keeps the MetaMem result (``metamem/result.json``)."""
    return Path(run_dir) / "metamem" / "result.json"


def load_result_rules(run_dir: str | Path) -> RuleSet:
    """The chosen rules of a finished run; a clear error when the run never finished."""
    path = result_path(run_dir)
    if not path.exists():
        raise ConfigError(f"no trained meta-memory at {path}: run `memwise metamem train` first")
    return RuleSet.from_dict(json.loads(path.read_text())["rules"])


def load_train_config(run_dir: str | Path) -> TrainConfig | None:
    """The configuration a run trained with (from its checkpoint), or ``None`` when it has none.

    ``metamem answer`` and ``metamem eval`` read the answer style from it, so learned rules are served
    on the prompt style they were selected on unless the user asks otherwise.
    """
    path = Path(run_dir) / "metamem" / "history.json"
    if not path.exists():
        return None
    try:
        return train_config_from_dict(json.loads(path.read_text())["config"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"MetaMem checkpoint {path} has no readable config ({exc}); pass --answer-style") from exc


def load_history(run_dir: str | Path) -> RuleHistory:
    """Every version of a run's rules (from the trainer's checkpoint)."""
    path = Path(run_dir) / "metamem" / "history.json"
    if not path.exists():
        raise ConfigError(f"no MetaMem history at {path}: run `memwise metamem train` first")
    return RuleHistory.from_dict(json.loads(path.read_text())["history"])


async def train_and_select(
    train: Sequence[MetaQuestion],
    val: Sequence[MetaQuestion],
    test: Sequence[MetaQuestion] = (),
    *,
    policy: ChatModel,
    run: RunDir,
    judge: ChatModel | None = None,
    optimizer: ChatModel | None = None,
    metric: str = "judge",
    config: TrainConfig | None = None,
    on_step: Callable[[StepRecord], None] | None = None,
    on_call: Callable[[str], None] | None = None,
) -> MetaMemResult:
    """Train on ``train``, choose the best step on ``val``, and score ``test`` with and without it."""
    trainer = MetaMemTrainer(
        policy=policy,
        run=run,
        metric=metric,
        judge=judge,
        optimizer=optimizer,
        config=config,
        on_step=on_step,
        on_call=on_call,
    )
    history = await trainer.compile(train)
    cfg = trainer.config
    eval_model = trainer.models["eval"]
    answering = {"scorer": trainer.eval_scorer, "max_tokens": cfg.answer_tokens, "style": cfg.style}
    validation = await validate_history(history, val, policy=eval_model, **answering) if val else {}
    best = select_best({step: r.accuracy for step, r in validation.items()}) if validation else history.latest.step
    chosen = history.at_step(best)
    with_rules = without_rules = None
    if test:
        with_rules = await evaluate_rules(test, chosen, policy=eval_model, **answering)
        without_rules = await evaluate_rules(test, RuleSet(), policy=eval_model, **answering)
    result = MetaMemResult(
        history=history,
        steps=tuple(trainer.step_records()),
        validation=validation,
        best_step=best,
        test_with_rules=with_rules,
        test_without_rules=without_rules,
    )
    write_text_atomic(result_path(run.path), json.dumps(result.to_dict(), indent=1, ensure_ascii=False, default=str))
    return result

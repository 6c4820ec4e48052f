"""MetaMem training settings: hyper-parameters, per-stage output budgets, and reading old checkpoints' settings.

Kept apart from the trainer so the CLI, the reproduce driver and run records can build and compare
configs without the training machinery.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from memwise.exceptions import ConfigError
from memwise.facts.answer import AnswerStyle, check_answer_style

__all__ = [
    "JUDGE_MAX_TOKENS",
    "STAGES",
    "StageBudgets",
    "TrainConfig",
    "train_config_from_dict",
    "upgrade_config_dict",
]

JUDGE_MAX_TOKENS = 4096
"""The judge's output budget when none is set (:class:`~memwise.tasks.judge.LLMJudge`'s default)."""
STAGES = ("rollout", "judge", "reflection", "proposal", "consolidation")


@dataclass(frozen=True)
class StageBudgets:
    """Output tokens per call, per stage; ``None`` means :attr:`TrainConfig.max_tokens` (judge: 4096).

    Apart because the stages need very different room: a reasoning rollout may need thousands of tokens
    while a judge verdict needs a word, and one shared cap either starves the first or pays for the
    second. Validation and test answers use the rollout budget (they are rollouts at temperature 0)
    and their judge the judge budget.
    """

    rollout: int | None = field(default=None, metadata={"help": "output tokens per answer (rollouts, evaluation)"})
    judge: int | None = field(
        default=None, metadata={"help": f"output tokens per judge call (default {JUDGE_MAX_TOKENS})"}
    )
    reflection: int | None = field(default=None, metadata={"help": "output tokens per reflection"})
    proposal: int | None = field(default=None, metadata={"help": "output tokens per proposal"})
    consolidation: int | None = field(default=None, metadata={"help": "output tokens per consolidation"})

    def __post_init__(self) -> None:
        """Refuse a budget below one token; None keeps the stage's default."""
        for name in STAGES:
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"StageBudgets.{name} must be >= 1 (or None for the default), got {value}")


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters; defaults follow the paper's reference setup where it gives one."""

    epochs: int = field(default=5, metadata={"help": "passes over the training questions"})
    batch_size: int = field(default=50, metadata={"help": "questions per step"})
    samples: int = field(default=5, metadata={"help": "answers sampled per question"})
    temperature: float = field(default=0.7, metadata={"help": "rollout temperature"})
    max_tokens: int = field(
        default=1024, metadata={"help": "output tokens per call where no stage budget is set (reference: 4096)"}
    )
    answer_style: str = field(
        default="direct", metadata={"help": "answer prompt: direct, or reasoning (step by step, then an Answer: line)"}
    )
    budgets: StageBudgets = field(default_factory=StageBudgets)
    seed: int = field(default=0, metadata={"help": "seeds shuffles and sampling"})
    max_rules: int = field(default=30, metadata={"help": "cap on the rule count"})
    max_words: int = field(default=30, metadata={"help": "cap on words per rule"})
    fallback_limit: int = field(default=5, metadata={"help": "edits applied when consolidation fails"})

    @property
    def answer_tokens(self) -> int:
        """The output budget of one answer (rollouts, validation and test)."""
        return self.tokens("rollout")

    @property
    def style(self) -> AnswerStyle:
        """``answer_style``, typed (checked on construction)."""
        return check_answer_style(self.answer_style)

    def tokens(self, stage: str) -> int:
        """The output budget of one call of ``stage`` (one of :data:`STAGES`).

        Example:
            >>> cfg = TrainConfig(max_tokens=256, budgets=StageBudgets(rollout=2048))
            >>> [cfg.tokens(s) for s in STAGES]
            [2048, 4096, 256, 256, 256]
        """
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
        budget: int | None = getattr(self.budgets, stage)
        if budget is not None:
            return budget
        return JUDGE_MAX_TOKENS if stage == "judge" else self.max_tokens

    def __post_init__(self) -> None:
        """Refuse settings no run could use, before any model is called."""
        check_answer_style(self.answer_style)
        if not isinstance(self.budgets, StageBudgets):
            raise ConfigError(f"TrainConfig.budgets must be a StageBudgets, got {type(self.budgets).__name__}")
        for name in ("epochs", "batch_size", "samples", "max_tokens", "max_rules", "max_words"):
            if getattr(self, name) < 1:
                raise ConfigError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.temperature <= 2.0:
            raise ConfigError(f"TrainConfig.temperature must be in [0, 2], got {self.temperature}")


def upgrade_config_dict(saved: Any) -> Any:
    """A checkpoint's saved config in today's layout, so runs written before stage budgets still resume.

    Older checkpoints had ``answer_max_tokens`` (now ``budgets.rollout``) and neither ``answer_style``
    nor ``budgets``; their defaults are what those runs used. Anything else is returned unchanged.

    Example:
        >>> upgrade_config_dict({"max_tokens": 64, "answer_max_tokens": 32})["budgets"]["rollout"]
        32
    """
    if not isinstance(saved, dict) or "budgets" in saved:
        return saved
    out = dict(saved)
    budgets = asdict(StageBudgets())
    budgets["rollout"] = out.pop("answer_max_tokens", None)
    out.setdefault("answer_style", "direct")
    out["budgets"] = budgets
    return out


def train_config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """A :class:`TrainConfig` from its ``asdict`` form (a checkpoint's ``config``), old layouts included."""
    fields = dict(upgrade_config_dict(data))
    budgets = StageBudgets(**fields.pop("budgets"))
    return TrainConfig(**fields, budgets=budgets)

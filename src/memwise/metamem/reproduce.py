"""``memwise reproduce metamem``: the paper's protocol end to end, resumable, in one report.

Filled in below; the configuration comes first so the CLI can derive its options from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from memwise.exceptions import ConfigError

MEMORY_KINDS = ("memwise", "lightmem")


@dataclass(frozen=True)
class ReproduceConfig:
    """The protocol around training: folds, question set construction, scoring."""

    folds: int = field(default=5, metadata={"help": "k folds; every question is tested in exactly one"})
    val_frac: float = field(
        default=0.1, metadata={"help": "validation share of the whole set per fold (paper: 50 of 500)"}
    )
    seed: int = field(default=0, metadata={"help": "seeds the fold assignment"})
    memory: str = field(
        default="memwise", metadata={"help": "factual memory: memwise (hybrid) or lightmem (LLM facts, cosine top-k)"}
    )
    top_k: int = field(default=20, metadata={"help": "memory fragments retrieved per question"})
    metric: str = field(default="judge", metadata={"help": "how answers are scored: judge, f1 or em"})

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise ConfigError(f"reproduce needs at least 2 folds, got folds={self.folds}")
        if self.memory not in MEMORY_KINDS:
            raise ConfigError(f"memory must be one of {', '.join(MEMORY_KINDS)}, got {self.memory!r}")
        if self.top_k < 1:
            raise ConfigError(f"top_k must be >= 1, got {self.top_k}")

"""Settings of an online evolution run (`memwise umem evolve`) and the names its ledger and bank use."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from memwise.exceptions import ConfigError
from memwise.umem.baselines import MODES, Mode
from memwise.umem.executor import PROMPT_STYLES, PromptStyle

__all__ = ["ADDED_SETTINGS", "AGENT_ID", "EXECUTOR_STAGE", "OPTIMIZER_STAGE", "EvolveConfig"]

AGENT_ID = "umem-evolve"
EXECUTOR_STAGE = "executor"
OPTIMIZER_STAGE = "optimizer"


@dataclass(frozen=True)
class EvolveConfig:
    """Settings of one online evolution run (defaults from the paper and its released code)."""

    suite: str = field(metadata={"help": "suite name, used for labels and the resume check"})
    epochs: int = field(default=1, metadata={"help": "passes over the task stream; the bank carries over"})
    top_k: int = field(default=3, metadata={"help": "entries retrieved per task (paper: 3)"})
    similarity_floor: float = field(default=0.5, metadata={"help": "drop hits below this cosine (released: 0.5)"})
    max_entries: int = field(default=10_000, metadata={"help": "bank cap, least used evicted (released: 10,000)"})
    max_tokens: int = field(default=1024, metadata={"help": "executor completion budget (QA suites)"})
    optimizer_max_tokens: int = field(default=1024, metadata={"help": "Mem-Optimizer completion budget"})
    repair: bool = field(
        default=True,
        metadata={
            "help": "after a malformed reply, ask once more for the decision as schema-constrained JSON; the "
            "first reply's failure is still recorded (small models rarely hold the tag format)"
        },
    )
    mode: Mode = field(
        default="umem",
        metadata={
            "help": "umem (the Mem-Optimizer), no-memory (executor alone), no-train (the untrained base model "
            "as Mem-Optimizer), raw-trajectory (store and retrieve raw past attempts)"
        },
    )
    prompt_style: PromptStyle = field(
        default="generic",
        metadata={"help": "executor prompt: generic (an Answer: line) or paper (\\boxed{} / option letter)"},
    )

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"EvolveConfig: mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.prompt_style not in PROMPT_STYLES:
            raise ConfigError(
                f"EvolveConfig: prompt_style must be one of {', '.join(PROMPT_STYLES)}, got {self.prompt_style!r}"
            )
        if self.epochs < 1:
            raise ConfigError(f"EvolveConfig: epochs must be at least 1, got {self.epochs}")
        if self.top_k < 1:
            raise ConfigError(f"EvolveConfig: top_k must be at least 1, got {self.top_k}")
        if not -1.0 <= self.similarity_floor <= 1.0:
            raise ConfigError(f"EvolveConfig: similarity_floor is a cosine, so in [-1, 1]; got {self.similarity_floor}")
        if self.max_entries < 1:
            raise ConfigError(f"EvolveConfig: max_entries must be at least 1, got {self.max_entries}")
        if self.max_tokens < 1 or self.optimizer_max_tokens < 1:
            raise ConfigError("EvolveConfig: max_tokens and optimizer_max_tokens must be at least 1")

    def fixed(self) -> dict[str, Any]:
        """The settings a resumed run must share with the run it continues (all but ``epochs``)."""
        return {k: v for k, v in asdict(self).items() if k != "epochs"}


ADDED_SETTINGS = {"mode": "umem", "prompt_style": "generic"}
"""Settings added after runs were first recorded: a state file without them was run with these values."""

"""The option blocks more than one command takes, defined once (see :mod:`memwise.cli._config_options`).

``metamem train`` and ``reproduce metamem`` both train rules; ``umem evolve`` and ``reproduce umem``
both run the evolution loop. Each pair offers the same settings under the same flags, from here.
"""

from __future__ import annotations

from memwise.cli._config_options import ConfigOptions
from memwise.metamem.train_config import STAGES, StageBudgets, TrainConfig

STAGE_BUDGET_OPTIONS = ConfigOptions(StageBudgets, STAGES, names={stage: f"{stage}_tokens" for stage in STAGES})
"""``--rollout-tokens`` ... ``--consolidation-tokens``: the output budget of each training stage."""

TRAIN_FIELDS = ("epochs", "batch_size", "samples", "temperature", "max_tokens", "answer_style")


def train_options(*more: str) -> ConfigOptions:
    """The ``TrainConfig`` options every training command takes (``more`` adds fields), stage budgets included."""
    return ConfigOptions(TrainConfig, (*TRAIN_FIELDS, *more, "seed"), nested={"budgets": STAGE_BUDGET_OPTIONS})


EVOLVE_FIELDS = ("epochs", "top_k", "similarity_floor", "max_tokens", "optimizer_max_tokens", "repair")
"""The evolution settings `umem evolve` and `reproduce umem` share (their configs are different classes)."""

FLOOR = {"similarity_floor": "floor"}
"""``similarity_floor`` is offered as ``--floor``, the flag's name before the field had its own."""

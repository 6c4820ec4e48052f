"""The MetaMem training checkpoint: the rule history and one record per finished step, in one JSON file.

A re-run of the same command reads it to resume after the last finished step (the ledger replays the
calls of a step that was cut off). It is written atomically after every step, so a kill leaves the
previous checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from memwise.exceptions import ConfigError
from memwise.metamem.rule_history import RuleHistory
from memwise.metamem.train_config import TrainConfig, upgrade_config_dict
from memwise.runs.files import write_text_atomic

__all__ = ["StepRecord", "load_checkpoint", "save_checkpoint"]


@dataclass(frozen=True)
class StepRecord:
    """What one step did, for the report."""

    step: int
    epoch: int
    question_ids: tuple[str, ...]
    rollouts: int
    score_failures: int
    kept_questions: tuple[str, ...]
    reflections: int
    reflection_failures: int
    proposals: int
    proposal_failures: int
    consolidation: str  # "ok", "failed: <why>; fallback", or "skipped" (no proposals)
    applied: int
    rejected: int
    merged: int
    rules_after: int
    train_mean_score: float | None


def load_checkpoint(path: Path, config: TrainConfig) -> tuple[RuleHistory | None, list[StepRecord]]:
    """The history and step records saved at ``path`` (``None, []`` when there is none yet).

    Raises:
        ConfigError: the file is unreadable, or was written by a run with another configuration.
    """
    if not path.exists():
        return None, []
    try:
        data = json.loads(path.read_text())
        history = RuleHistory.from_dict(data["history"])
        records = [
            StepRecord(**{**r, "question_ids": tuple(r["question_ids"]), "kept_questions": tuple(r["kept_questions"])})
            for r in data["steps"]
        ]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        # Never start over silently from an unreadable checkpoint (a defect of the reference setup).
        raise ConfigError(f"MetaMem checkpoint {path} is unreadable ({exc}); move it away to retrain") from exc
    if upgrade_config_dict(data.get("config")) != asdict(config):
        raise ConfigError(f"MetaMem checkpoint {path} was written with another configuration; use a new run dir")
    return history, records


def save_checkpoint(path: Path, config: TrainConfig, history: RuleHistory, records: Sequence[StepRecord]) -> None:
    """Write the run's config, rule history and step records to ``path``, replacing it atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {
        "config": asdict(config),
        "history": history.to_dict(),
        "steps": [asdict(r) for r in records],
    }
    # Atomic: a kill leaves the previous checkpoint or the new one, never half of one.
    write_text_atomic(path, json.dumps(payload, indent=1, ensure_ascii=False))

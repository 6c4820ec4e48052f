"""UMEM: a Mem-Optimizer trained with GRPO to extract and manage memory, rewarded by utility on neighbouring tasks.

The pieces, in the order a run uses them:

- :class:`InsightBank`: task-keyed insights in SQLite, retrieved by cosine over keys (top-K, floor).
- :func:`make_executor`: the frozen executor for a suite (QA or a multi-turn environment).
- :func:`attempt`: retrieve, execute, and build the Mem-Optimizer prompt.
- :func:`parse_optimizer_output` / :func:`apply_action`: the strict reader of its ``<experience>``
  block, and ADD / UPDATE i on the bank.
- :func:`build_trainset` and :class:`UtilityScorer`: neighbourhoods and the marginal-utility reward.
- :func:`train_mem_optimizer` (needs ``memwise[train]``; imported on first use): GRPO with trl.
- :func:`memwise.umem.evolve.evolve`: online evolution over a task stream (a submodule and a
  function of the same name, so it is not re-exported here).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from memwise.umem.bank import BankEntry, InsightBank, Retrieval
from memwise.umem.evolve import EvolveResult
from memwise.umem.evolve_config import EvolveConfig
from memwise.umem.executor import EnvExecutor, Environment, ExecutionResult, Observation, QAExecutor
from memwise.umem.executors import make_executor
from memwise.umem.grpo_settings import GRPOSettings
from memwise.umem.loop import Attempt, CandidateScore, UtilityScorer, attempt, commit_best
from memwise.umem.neighbours import Neighbourhoods
from memwise.umem.optimizer import (
    OptimizerAction,
    OptimizerParseError,
    apply_action,
    build_optimizer_messages,
    parse_optimizer_output,
)
from memwise.umem.rewards import paper_gain, released_gain
from memwise.umem.trainset import TrainSet, build_trainset

if TYPE_CHECKING:
    from memwise.umem.grpo import TrainResult, train_mem_optimizer

__all__ = [
    "Attempt",
    "BankEntry",
    "CandidateScore",
    "EnvExecutor",
    "Environment",
    "EvolveConfig",
    "EvolveResult",
    "ExecutionResult",
    "GRPOSettings",
    "InsightBank",
    "Neighbourhoods",
    "Observation",
    "OptimizerAction",
    "OptimizerParseError",
    "QAExecutor",
    "Retrieval",
    "TrainResult",
    "TrainSet",
    "UtilityScorer",
    "apply_action",
    "attempt",
    "build_optimizer_messages",
    "build_trainset",
    "commit_best",
    "make_executor",
    "paper_gain",
    "parse_optimizer_output",
    "released_gain",
    "train_mem_optimizer",
]

_TRAINING = ("TrainResult", "train_mem_optimizer")


def __getattr__(name: str) -> Any:
    # trl and torch take seconds to import and are an extra; load them only when training is asked for.
    if name in _TRAINING:
        from memwise.umem import grpo

        return getattr(grpo, name)
    raise AttributeError(f"module 'memwise.umem' has no attribute {name!r}")

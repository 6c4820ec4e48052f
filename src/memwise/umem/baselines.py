"""Baselines of online evolution, run on the same stream and recorded like UMEM's own steps.

The paper compares UMEM with an executor that has no memory and with memory systems that store and
retrieve past experience without a trained extractor. Three run modes of
:func:`~memwise.umem.evolve.evolve` stand for them (see :data:`MODES`):

- ``"no-memory"``: the executor alone; no retrieval, no Mem-Optimizer, the bank stays empty.
- ``"no-train"``: the UMEM step unchanged, with the untrained base model in the Mem-Optimizer role
  (the caller passes that model as ``optimizer``): what the training adds over the prompt alone.
- ``"raw-trajectory"``: every finished attempt is stored as it is (outcome and trajectory, cut to
  :data:`RAW_TRAJECTORY_CHARS`) under the task's key and retrieved by task similarity, in the spirit
  of the trajectory-memory baselines the paper compares (Memp and kin); no optimizer call.

``"umem"`` is the trained Mem-Optimizer. Both steps here return what the shared record builder
needs, so every mode's records, summaries and plots have one shape.

Over several epochs a raw-trajectory task retrieves its own earlier attempt, answer included, where
UMEM's lessons pass the answer-leak screen; read later-epoch raw-trajectory accuracy with that in
mind (the paper repeats only ALFWorld, whose games have no answer to copy).
"""

from __future__ import annotations

from typing import Literal

from memwise.tasks.types import Task
from memwise.umem.bank import BankEntry, InsightBank, Retrieval
from memwise.umem.loop import Attempt, Executor, attempt
from memwise.umem.optimizer import OptimizerAction

__all__ = ["MODES", "OPTIMIZER_MODES", "RAW_TRAJECTORY_CHARS", "Mode", "no_memory_step", "raw_trajectory_step"]

Mode = Literal["umem", "no-memory", "no-train", "raw-trajectory"]
MODES: tuple[Mode, ...] = ("umem", "no-memory", "no-train", "raw-trajectory")
OPTIMIZER_MODES: frozenset[str] = frozenset({"umem", "no-train"})
"""Modes that call a Mem-Optimizer each task."""

RAW_TRAJECTORY_CHARS = 1500
"""How much of a trajectory a raw-trajectory entry keeps: enough for the method, bounded like a lesson list."""


def raw_trajectory_value(tried: Attempt, limit: int = RAW_TRAJECTORY_CHARS) -> str:
    """The stored form of one attempt: its outcome, then the trajectory (the end cut past ``limit``).

    Example:
        >>> from memwise.umem.executor import ExecutionResult
        >>> done = ExecutionResult("t", "2+2 is 4. Answer: B", "B", True, 6)
        >>> raw_trajectory_value(Attempt(Task("t", "mmlu", "2+2?", "B"), Retrieval([], 0), done, []))
        'Past attempt (CORRECT): 2+2 is 4. Answer: B'
    """
    text = " ".join(tried.result.trajectory.split())
    if len(text) > limit:
        text = text[:limit].rstrip() + " ..."
    status = "CORRECT" if tried.result.success else "INCORRECT"
    return f"Past attempt ({status}): {text}"


async def no_memory_step(executor: Executor, task: Task) -> Attempt:
    """The executor alone on ``task``: nothing retrieved, nothing shown, nothing stored."""
    result = await executor.run(task, [])
    return Attempt(task=task, retrieval=Retrieval([], 0), result=result, messages=[])


async def raw_trajectory_step(
    bank: InsightBank, executor: Executor, task: Task
) -> tuple[Attempt, OptimizerAction, BankEntry]:
    """Attempt ``task`` with the most similar stored trajectories shown, then store this one (ADD)."""
    tried = await attempt(bank, executor, task)
    action = OptimizerAction("ADD", None, [raw_trajectory_value(tried)])
    written = await bank.add(task.key(), action.values)
    return tried, action, written

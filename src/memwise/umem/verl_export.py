"""Export a UMEM training set as verl-style parquet, for training with the authors' verl setup.

verl's RL datasets are parquet files with one row per prompt: ``data_source``, ``prompt`` (chat
messages), ``ability``, ``reward_model`` (``{"style": "rule", "ground_truth": ...}``) and a free
``extra_info`` dict that reaches the reward function. A UMEM row's prompt is the Mem-Optimizer
prompt built from an executor attempt (:func:`~memwise.umem.loop.attempt`), and its ``extra_info``
carries what a marginal-utility reward needs: the task's neighbours (question and gold answer)
and the ids of the retrieved entries the prompt numbers, so ``UPDATE i`` can be mapped back.

verl reads the prompt column once, so an exported prompt reflects the bank *at export time*
(usually empty: ADD only). :mod:`memwise.umem.grpo` instead rebuilds each prompt from the live bank
at generation time; re-export between epochs to approximate that with verl.

The schema is written explicitly: with type inference an all-empty ``entry_ids`` column (an empty
bank retrieves nothing) would become ``list<null>`` and differ from file to file.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from memwise.exceptions import ConfigError
from memwise.umem.bank import InsightBank
from memwise.umem.loop import Attempt, Executor, attempt
from memwise.umem.trainset import TrainSet

__all__ = ["VERL_ABILITY", "VERL_SCHEMA_FIELDS", "export_verl", "verl_rows", "verl_schema", "write_verl_parquet"]

VERL_ABILITY = "memory-optimization"
"""The ``ability`` tag of UMEM rows (verl uses it only to group metrics)."""

VERL_SCHEMA_FIELDS = ("data_source", "prompt", "ability", "reward_model", "extra_info")


def verl_schema() -> Any:
    """The pyarrow schema of an exported file (pyarrow is imported here, so the module imports without it)."""
    import pyarrow as pa

    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    neighbour = pa.struct([("task_id", pa.string()), ("question", pa.string()), ("answer", pa.string())])
    extra_info = pa.struct(
        [
            ("index", pa.int64()),
            ("task_id", pa.string()),
            ("suite", pa.string()),
            ("split", pa.string()),
            ("neighbours", pa.list_(neighbour)),
            ("entry_ids", pa.list_(pa.string())),
            ("executor_success", pa.bool_()),
        ]
    )
    return pa.schema(
        [
            ("data_source", pa.string()),
            ("prompt", pa.list_(message)),
            ("ability", pa.string()),
            ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
            ("extra_info", extra_info),
        ]
    )


def verl_rows(
    trainset: TrainSet,
    attempts: Mapping[str, Attempt],
    *,
    split: str = "train",
    data_source: str = "memwise/umem",
) -> list[dict[str, Any]]:
    """One verl row per task of ``trainset``, in training-set order (pure).

    ``attempts`` maps task id to the attempt whose Mem-Optimizer prompt the row carries; every task
    needs one. ``reward_model.ground_truth`` is the task's gold answer (the task's own success
    signal); the utility reward itself is computed on ``extra_info.neighbours``.
    """
    missing = [task.id for task in trainset.tasks if task.id not in attempts]
    if missing:
        raise ConfigError(f"verl_rows: no attempt for tasks {missing[:5]!r} (and {max(len(missing) - 5, 0)} more)")
    rows = []
    for index, row in enumerate(trainset.rows()):
        tried = attempts[row.task_id]
        rows.append(
            {
                "data_source": data_source,
                "prompt": [message.to_dict() for message in tried.messages],
                "ability": VERL_ABILITY,
                "reward_model": {"style": "rule", "ground_truth": row.answer},
                "extra_info": {
                    "index": index,
                    "task_id": row.task_id,
                    "suite": row.suite,
                    "split": split,
                    "neighbours": [
                        {"task_id": nb.task_id, "question": nb.question, "answer": nb.answer} for nb in row.neighbours
                    ],
                    "entry_ids": [entry.id for entry in tried.entries],
                    "executor_success": tried.result.success,
                },
            }
        )
    return rows


def write_verl_parquet(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Write rows from :func:`verl_rows` to ``path`` with the fixed :func:`verl_schema`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([dict(row) for row in rows], schema=verl_schema())
    pq.write_table(table, target)
    return target


async def export_verl(
    trainset: TrainSet,
    bank: InsightBank,
    executor: Executor,
    path: str | Path,
    *,
    split: str = "train",
    data_source: str = "memwise/umem",
) -> Path:
    """Attempt every task under ``bank`` and write the verl parquet file; returns its path.

    Attempts do not count as bank usage (an export is not a use of the memory). The executor's model
    backend bounds the runs in flight (the policy role's ``max_concurrency``).
    """

    async def one(task_id: str) -> tuple[str, Attempt]:
        return task_id, await attempt(bank, executor, trainset.task(task_id), count_usage=False)

    done = await asyncio.gather(*(one(task.id) for task in trainset.tasks))
    return write_verl_parquet(verl_rows(trainset, dict(done), split=split, data_source=data_source), path)

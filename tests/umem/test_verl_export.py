"""verl parquet export: the layout verl reads, Mem-Optimizer prompts, neighbours and entry ids."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tests.umem._unit_tasks import UNIT_TASKS

from memwise.exceptions import ConfigError
from memwise.store.sqlite import SQLiteStore
from memwise.tasks.types import Task
from memwise.testing import FakeEmbedder
from memwise.umem.bank import InsightBank
from memwise.umem.executor import ExecutionResult
from memwise.umem.trainset import TrainSet, build_trainset
from memwise.umem.verl_export import VERL_ABILITY, VERL_SCHEMA_FIELDS, export_verl, verl_rows, verl_schema

# Three unit conversions that neighbour each other, and one task about nothing the bank knows.
TASKS = [
    *UNIT_TASKS[:3],
    Task("p1", "mmlu", "Which poet wrote about autumn leaves?", "A", text="poet who wrote about autumn leaves"),
]


class UnitsExecutor:
    """Solves a task iff a shown lesson mentions units."""

    async def run(self, task: Task, insights: Sequence[str] = ()) -> ExecutionResult:
        ok = any("units" in text for text in insights)
        return ExecutionResult(task.id, f"worked on {task.id}", None, ok, 10)


@pytest.fixture
def bank(tmp_path: Path) -> Iterator[InsightBank]:
    with SQLiteStore(tmp_path / "bank.db") as store:
        yield InsightBank(store, FakeEmbedder(dim=256), agent_id="umem", similarity_floor=0.5)


@pytest.fixture
async def trainset() -> TrainSet:
    return await build_trainset(TASKS, FakeEmbedder(dim=256), neighbours=2)


async def test_export_layout_reads_back(tmp_path: Path, bank: InsightBank, trainset: TrainSet) -> None:
    entry = await bank.add("convert metres to millimetres", ["Check the units first."])
    path = await export_verl(
        trainset, bank, UnitsExecutor(), tmp_path / "out" / "train.parquet", data_source="umem/mmlu"
    )

    table = pq.read_table(path)
    assert tuple(table.column_names) == VERL_SCHEMA_FIELDS
    assert table.schema.equals(verl_schema())
    assert table.num_rows == len(TASKS)
    rows = table.to_pylist()
    by_id = {row["extra_info"]["task_id"]: row for row in rows}

    row = by_id["u1"]
    assert row["data_source"] == "umem/mmlu" and row["ability"] == VERL_ABILITY
    assert row["reward_model"] == {"style": "rule", "ground_truth": "B"}
    assert [m["role"] for m in row["prompt"]] == ["system", "user"]
    user = row["prompt"][1]["content"]
    assert TASKS[0].prompt in user and "Entry 0:\n  - Check the units first." in user and "CORRECT" in user
    info = row["extra_info"]
    assert info["entry_ids"] == [entry.id] and info["executor_success"] is True
    assert info["split"] == "train" and info["index"] == 0 and info["suite"] == "mmlu"
    expected = [
        {"task_id": t.id, "question": t.prompt, "answer": t.answer}
        for t in (trainset.task(i) for i in trainset.neighbourhoods.of("u1"))
    ]
    assert info["neighbours"] == expected

    poem = by_id["p1"]["extra_info"]
    assert poem["entry_ids"] == [] and poem["executor_success"] is False  # nothing above the floor
    assert "(none: the memory had nothing close" in by_id["p1"]["prompt"][1]["content"]
    assert [r["extra_info"]["index"] for r in rows] == list(range(len(TASKS)))
    assert bank.get(entry.id).usage == 0  # exporting is not a use of the memory


async def test_empty_entry_ids_keep_their_type(tmp_path: Path, bank: InsightBank, trainset: TrainSet) -> None:
    path = await export_verl(trainset, bank, UnitsExecutor(), tmp_path / "empty.parquet", split="val")
    table = pq.read_table(path)
    extra = table.schema.field("extra_info").type
    assert extra.field("entry_ids").type == pa.list_(pa.string())
    assert {row["extra_info"]["split"] for row in table.to_pylist()} == {"val"}


async def test_every_task_needs_an_attempt(trainset: TrainSet) -> None:
    with pytest.raises(ConfigError, match="no attempt"):
        verl_rows(trainset, {})

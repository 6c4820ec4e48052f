"""The UMEM training set: one embedding pass, neighbourhoods without self, JSON round trip, export rows."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from memwise.exceptions import ConfigError, DatasetError
from memwise.store.sqlite import SQLiteStore
from memwise.tasks.types import Task
from memwise.testing import FakeEmbedder
from memwise.umem.bank import InsightBank
from memwise.umem.executor import ExecutionResult
from memwise.umem.loop import UtilityScorer
from memwise.umem.neighbours import Neighbourhoods
from memwise.umem.trainset import FORMAT_VERSION, TrainSet, build_trainset

UNITS = [
    Task("u1", "mmlu", "Convert 3 metres to centimetres. A) 30 B) 300", "B", text="convert metres to centimetres"),
    Task("u2", "mmlu", "Convert 5 kilograms to grams. A) 500 B) 5000", "B", text="convert kilograms to grams"),
    Task("u3", "mmlu", "Convert 2 hours to minutes. A) 120 B) 200", "A", text="convert hours to minutes"),
    Task("u4", "mmlu", "Convert 7 litres to millilitres. A) 70 B) 7000", "B", text="convert litres to millilitres"),
]
POEMS = [
    Task("p1", "mmlu", "Which poet wrote about autumn leaves?", "A", text="poet who wrote about autumn leaves"),
    Task("p2", "mmlu", "Which poet wrote about falling autumn rain?", "B", text="poet who wrote about autumn rain"),
]
TASKS = UNITS + POEMS


class NullExecutor:
    async def run(self, task: Task, insights: Sequence[str] = ()) -> ExecutionResult:
        return ExecutionResult(task.id, "", None, False, 1)


async def test_neighbourhoods_exclude_self_and_follow_meaning() -> None:
    embedder = FakeEmbedder(dim=256)
    ts = await build_trainset(TASKS, embedder, neighbours=3)
    assert embedder.calls == 1 and embedder.texts_embedded == len(TASKS)  # every key embedded once
    assert ts.embedder == embedder.name
    for task in TASKS:
        nbs = ts.neighbourhoods.of(task.id)
        assert len(nbs) == 3 and task.id not in nbs
    assert set(ts.neighbourhoods.of("u1")) <= {"u2", "u3", "u4"}
    assert ts.neighbourhoods.of("p1")[0] == "p2"


async def test_batched_embedding_gives_the_same_neighbourhoods() -> None:
    whole = await build_trainset(TASKS, FakeEmbedder(dim=256))
    embedder = FakeEmbedder(dim=256)
    batched = await build_trainset(TASKS, embedder, batch_size=4)
    assert embedder.calls == 2
    assert batched == whole


async def test_json_round_trip_and_layout(tmp_path: Path) -> None:
    ts = await build_trainset(TASKS, FakeEmbedder(dim=256))
    path = ts.save(tmp_path / "sub" / "trainset.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["version"] == FORMAT_VERSION and len(data["rows"]) == len(TASKS)
    first = data["rows"][0]
    assert first["id"] == "u1" and first["answer"] == "B" and first["neighbour_ids"] == list(ts.neighbourhoods.of("u1"))
    assert TrainSet.load(path) == ts


async def test_rows_spell_out_neighbours() -> None:
    ts = await build_trainset(TASKS, FakeEmbedder(dim=256), neighbours=2)
    rows = {row.task_id: row for row in ts.rows()}
    row = rows["p1"]
    assert row.question == POEMS[0].prompt and row.answer == "A"
    assert row.neighbour_ids[0] == "p2"
    assert row.neighbours[0].question == POEMS[1].prompt and row.neighbours[0].answer == "B"
    assert [nb.task_id for nb in row.neighbours] == list(row.neighbour_ids)


async def test_scorer_judges_on_the_stored_neighbourhoods(tmp_path: Path) -> None:
    ts = await build_trainset(TASKS, FakeEmbedder(dim=256))
    with SQLiteStore(tmp_path / "bank.db") as store:
        bank = InsightBank(store, FakeEmbedder(dim=256), agent_id="umem")
        scorer = ts.scorer(bank, NullExecutor(), form="released")
        assert isinstance(scorer, UtilityScorer) and scorer.form == "released"
        assert [t.id for t in scorer.neighbours(UNITS[0])] == list(ts.neighbourhoods.of("u1"))


def test_malformed_files_raise_dataset_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(DatasetError, match="bad.json"):
        TrainSet.load(bad)
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"version": 0, "rows": []}), encoding="utf-8")
    with pytest.raises(DatasetError, match="version"):
        TrainSet.load(old)


def test_neighbourhoods_must_match_the_tasks() -> None:
    nb = Neighbourhoods(("u1", "u2"), (("u2",), ("u1",)))
    with pytest.raises(ConfigError, match="same order"):
        TrainSet((UNITS[1], UNITS[0]), nb)


def test_unserialisable_metadata_is_named(tmp_path: Path) -> None:
    task = Task("x", "mmlu", "q", "A", metadata={"when": object()})
    ts = TrainSet((task,), Neighbourhoods(("x",), ((),)))
    with pytest.raises(ConfigError, match="JSON-serialisable"):
        ts.save(tmp_path / "t.json")


async def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="no tasks"):
        await build_trainset([], FakeEmbedder(dim=64))
    with pytest.raises(ConfigError, match="neighbours"):
        await build_trainset(TASKS, FakeEmbedder(dim=64), neighbours=0)


async def test_copied_tasks_never_judge_each_other() -> None:
    from memwise.testing import FakeEmbedder
    from memwise.umem.trainset import build_trainset

    texts = [
        "Which gas do plants absorb for photosynthesis?",
        "which gas do plants absorb for photosynthesis",  # the same task, punctuation and case aside
        "What is the derivative of x squared?",
        "Which planet is known as the red planet?",
        "Name the largest ocean on Earth.",
    ]
    tasks = [Task(f"t{i}", "mmlu", text, "A", text=text) for i, text in enumerate(texts)]
    ts = await build_trainset(tasks, FakeEmbedder(dim=64), neighbours=3)
    assert "t1" not in ts.neighbourhoods.of("t0") and "t0" not in ts.neighbourhoods.of("t1")
    assert len(ts.neighbourhoods.of("t0")) == 3 and ts.duplicates_excluded == 1
    assert TrainSet.from_dict(ts.to_dict()).duplicates_excluded == 1
    # without the exclusion the copy would be t0's nearest judge
    vectors = await FakeEmbedder(dim=64).embed([t.key() for t in tasks])
    assert Neighbourhoods.build([t.id for t in tasks], vectors, k=3).of("t0")[0] == "t1"


async def test_without_snm_a_memory_is_judged_on_its_own_task(tmp_path: Path) -> None:
    tasks = [Task(f"t{i}", "demo", f"convert {i} metres to centimetres", "x") for i in range(4)]
    ts = await build_trainset(tasks, FakeEmbedder(dim=64), neighbours=2)
    with SQLiteStore(tmp_path / "b.db") as store:
        bank = InsightBank(store, FakeEmbedder(dim=64), agent_id="u")
        assert [t.id for t in ts.scorer(bank, Echo(), snm=False).neighbours(tasks[0])] == ["t0"]
        assert len(ts.scorer(bank, Echo()).neighbours(tasks[0])) == 2


class Echo:
    async def run(self, task: Task, insights: Sequence[str] = ()) -> ExecutionResult:
        return ExecutionResult(task.id, "", None, False, 1)

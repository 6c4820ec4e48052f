"""The UMEM training set: tasks plus their semantic neighbourhoods, computed once and stored.

Neighbourhoods depend only on the task embeddings, never on the model being trained or on the
bank, so embedding ~2,000 task keys once before training and reloading the JSON for every epoch
(and every resumed run) saves an embedding pass per run and pins the judges of each task: two runs
on one stored training set reward the same memory on the same neighbours.

The stored file is one row per task (the task's fields and its neighbour ids), so it is readable
on its own; :meth:`TrainSet.rows` adds the neighbours' questions and answers for exports.

Example:
    >>> import asyncio
    >>> from memwise.tasks.types import Task
    >>> from memwise.testing import FakeEmbedder
    >>> tasks = [Task(f"t{i}", "demo", f"convert {i} metres to centimetres", "x") for i in range(4)]
    >>> ts = asyncio.run(build_trainset(tasks, FakeEmbedder(dim=64), neighbours=2))
    >>> len(ts), len(ts.neighbourhoods.of("t0"))
    (4, 2)
    >>> TrainSet.from_dict(ts.to_dict()) == ts
    True
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from memwise.embed.base import Embedder
from memwise.exceptions import ConfigError, DatasetError
from memwise.tasks.types import Task
from memwise.umem.neighbours import Neighbourhoods, count_duplicates

if TYPE_CHECKING:
    from memwise.umem.bank import InsightBank
    from memwise.umem.loop import Executor, UtilityScorer
    from memwise.umem.refcache import ReferenceCache
    from memwise.umem.rewards import GainForm

__all__ = ["FORMAT_VERSION", "Neighbour", "TrainRow", "TrainSet", "build_trainset"]

FORMAT_VERSION = 1
"""Version of the stored JSON layout; bumped when a field changes meaning."""

DEFAULT_EMBED_BATCH = 256
DEFAULT_NEAR_DUPLICATE = 0.95
"""Cosine above which another task is taken for a reworded copy and is not a neighbour."""


@dataclass(frozen=True, slots=True)
class Neighbour:
    """A neighbour as an export shows it: enough to run and grade it without the task file."""

    task_id: str
    question: str
    answer: str


@dataclass(frozen=True, slots=True)
class TrainRow:
    """One training task with its judges (the N nearest other tasks)."""

    task_id: str
    suite: str
    question: str
    answer: str
    neighbour_ids: tuple[str, ...]
    neighbours: tuple[Neighbour, ...]


def _task_to_dict(task: Task) -> dict[str, Any]:
    return {**asdict(task), "choices": list(task.choices)}  # JSON has no tuples


def _task_from_dict(data: Mapping[str, Any]) -> Task:
    return Task(
        id=str(data["id"]),
        suite=str(data["suite"]),
        prompt=str(data["prompt"]),
        answer=str(data["answer"]),
        text=str(data.get("text", "")),
        choices=tuple(str(c) for c in data.get("choices", ())),
        metadata=dict(data.get("metadata", {})),
    )


@dataclass(frozen=True)
class TrainSet:
    """Training tasks and their precomputed neighbourhoods (self excluded).

    Args:
        tasks: the tasks, in training-set order (their ids are unique).
        neighbourhoods: neighbour ids per task, listing exactly the ids of ``tasks``.
        embedder: name of the embedder that produced the neighbourhoods, kept so a run report can
            say which geometry chose the judges.
        neighbours: the N the neighbourhoods were built with (a task may have fewer, see below).
        near_duplicate: the cosine above which another task counted as a copy and was not a
            neighbour (None: only identical normalised texts were excluded).
        duplicates_excluded: how many (task, other task) pairs were excluded as copies; a task with
            many copies may be left with fewer than N neighbours.
    """

    tasks: tuple[Task, ...]
    neighbourhoods: Neighbourhoods
    embedder: str = ""
    neighbours: int = 3
    near_duplicate: float | None = None
    duplicates_excluded: int = 0
    _by_id: dict[str, Task] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ids = tuple(task.id for task in self.tasks)
        if ids != self.neighbourhoods.task_ids:
            raise ConfigError(
                "TrainSet: the neighbourhoods must list exactly the tasks' ids, in the same order; "
                "rebuild them with build_trainset(tasks, embedder)"
            )
        # Frozen, so set the lookup table directly (uniqueness is checked by Neighbourhoods).
        object.__setattr__(self, "_by_id", {task.id: task for task in self.tasks})

    def __len__(self) -> int:
        return len(self.tasks)

    def task(self, task_id: str) -> Task:
        """The task with id ``task_id``; raises KeyError naming it when absent."""
        try:
            return self._by_id[task_id]
        except KeyError:
            raise KeyError(f"task {task_id!r} is not in this training set") from None

    def task_map(self) -> dict[str, Task]:
        """Tasks by id, as :class:`~memwise.umem.loop.UtilityScorer` takes them."""
        return dict(self._by_id)

    def rows(self) -> list[TrainRow]:
        """One row per task, with each neighbour's question and gold answer spelled out."""
        rows = []
        for task in self.tasks:
            ids = self.neighbourhoods.of(task.id)
            neighbours = tuple(Neighbour(nb.id, nb.prompt, nb.answer) for nb in (self._by_id[i] for i in ids))
            rows.append(TrainRow(task.id, task.suite, task.prompt, task.answer, ids, neighbours))
        return rows

    def scorer(
        self,
        bank: InsightBank,
        executor: Executor,
        *,
        form: GainForm = "paper",
        cache: ReferenceCache | None = None,
        snm: bool = True,
    ) -> UtilityScorer:
        """A :class:`~memwise.umem.loop.UtilityScorer` judging this set's tasks on its neighbourhoods.

        ``snm=False`` is the paper's ablation without Semantic Neighbourhood Modelling: each memory is
        judged on the task it was written for.
        """
        from memwise.umem.loop import UtilityScorer

        return UtilityScorer(bank, executor, self.task_map(), self.neighbourhoods, form=form, cache=cache, snm=snm)

    # -- storage --------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: one row per task carrying the task's fields and its neighbour ids."""
        rows = []
        for task in self.tasks:
            row = _task_to_dict(task)
            row["neighbour_ids"] = list(self.neighbourhoods.of(task.id))
            rows.append(row)
        return {
            "version": FORMAT_VERSION,
            "embedder": self.embedder,
            "neighbours": self.neighbours,
            "near_duplicate": self.near_duplicate,
            "duplicates_excluded": self.duplicates_excluded,
            "rows": rows,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainSet:
        """Inverse of :meth:`to_dict`; validation happens in the constructors."""
        version = data.get("version")
        if version != FORMAT_VERSION:
            raise ConfigError(f"training set format version {version!r}; this memwise reads version {FORMAT_VERSION}")
        rows = list(data["rows"])
        tasks = tuple(_task_from_dict(row) for row in rows)
        neighbourhoods = Neighbourhoods(
            tuple(task.id for task in tasks),
            tuple(tuple(str(i) for i in row["neighbour_ids"]) for row in rows),
        )
        near = data.get("near_duplicate")
        return cls(
            tasks,
            neighbourhoods,
            embedder=str(data.get("embedder", "")),
            neighbours=int(data.get("neighbours", max((len(n) for n in neighbourhoods.neighbour_ids), default=0))),
            near_duplicate=None if near is None else float(near),
            duplicates_excluded=int(data.get("duplicates_excluded", 0)),
        )

    def save(self, path: str | Path) -> Path:
        """Write the training set as JSON (UTF-8); returns the path."""
        target = Path(path)
        try:
            blob = json.dumps(self.to_dict(), ensure_ascii=False, indent=1)
        except TypeError as exc:
            raise ConfigError(f"TrainSet.save: task metadata must be JSON-serialisable ({exc})") from exc
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(blob + "\n", encoding="utf-8")
        return target

    @classmethod
    def load(cls, path: str | Path) -> TrainSet:
        """Read a training set written by :meth:`save`; a malformed file raises DatasetError."""
        source = Path(path)
        try:
            data = json.loads(source.read_text(encoding="utf-8"))
            return cls.from_dict(data)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, ConfigError) as exc:
            raise DatasetError(f"not a UMEM training set: {exc}", path=str(source)) from exc


async def build_trainset(
    tasks: Sequence[Task],
    embedder: Embedder,
    *,
    neighbours: int = 3,
    batch_size: int = DEFAULT_EMBED_BATCH,
    near_duplicate: float | None = DEFAULT_NEAR_DUPLICATE,
) -> TrainSet:
    """Embed every task key once and find each task's ``neighbours`` nearest other tasks (paper: N=3).

    Keys (``Task.key()``) are what the insight bank embeds too, so neighbourhoods live in the same
    geometry as retrieval, which is what makes neighbours good judges. ``batch_size`` bounds one
    embedding request. Copies of a task are never its judges: tasks whose normalised key text is
    the same, or whose cosine is above ``near_duplicate`` (None: exact copies only), are excluded,
    and the pairs excluded are counted in ``duplicates_excluded``. Training sets scraped from the
    web hold such copies, and a lesson that restates a copy's answer would otherwise earn full
    utility on it.
    """
    if not tasks:
        raise ConfigError("build_trainset: no tasks given")
    if neighbours < 1:
        raise ConfigError(f"build_trainset: neighbours must be at least 1 (paper: 3), got {neighbours}")
    if batch_size < 1:
        raise ConfigError(f"build_trainset: batch_size must be at least 1, got {batch_size}")
    if near_duplicate is not None and not -1.0 <= near_duplicate <= 1.0:
        raise ConfigError(f"build_trainset: near_duplicate is a cosine in [-1, 1] or None, got {near_duplicate}")
    keys = [task.key() for task in tasks]
    blocks = [await embedder.embed(keys[i : i + batch_size]) for i in range(0, len(keys), batch_size)]
    vectors = np.concatenate(blocks, axis=0)
    ids = [task.id for task in tasks]
    labels: dict[str, int] = {}
    groups = [labels.setdefault(normalise_text(key), len(labels)) for key in keys]
    neighbourhoods = Neighbourhoods.build(ids, vectors, k=neighbours, near_duplicate=near_duplicate, groups=groups)
    excluded = sum(count_duplicates(vectors, near_duplicate=near_duplicate, groups=groups)) // 2
    return TrainSet(
        tuple(tasks),
        neighbourhoods,
        embedder=embedder.name,
        neighbours=neighbours,
        near_duplicate=near_duplicate,
        duplicates_excluded=excluded,
    )


def normalise_text(text: str) -> str:
    """Lower case, punctuation dropped, spaces collapsed: two tasks equal under it are copies.

    Example:
        >>> normalise_text("  What is 2+2? ") == normalise_text("what is 2 + 2")
        True
    """
    return " ".join(re.sub(r"[^\w]+", " ", text.lower()).split())

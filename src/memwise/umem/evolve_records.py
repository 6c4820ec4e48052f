"""One task of an evolution stream as a record: built purely from the attempt, kept as a JSON line.

``records.jsonl`` is the run's commit log: a task counts as done once its record is appended, and a
resumed run reads the records back to know where to continue (see :mod:`memwise.umem.evolve`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from memwise.exceptions import StoreError
from memwise.runs.files import append_jsonl, read_jsonl
from memwise.umem.bank import BankEntry, BankStats
from memwise.umem.evolve_report import WRITE_COUNTERS
from memwise.umem.loop import Attempt
from memwise.umem.optimizer import OptimizerAction

__all__ = ["TaskRecord", "append_record", "bank_changes", "build_record", "describe_action", "read_records"]


@dataclass(frozen=True)
class TaskRecord:
    """What happened on one task of the stream: one line of ``records.jsonl``.

    ``epoch`` counts from 1, ``index`` is the task's place in the file (from 0) and ``position``
    its place in the whole stream (from 0). ``tokens`` are the executor's completion tokens,
    ``optimizer_tokens`` the Mem-Optimizer's. ``action`` is ``"ADD"`` or ``"UPDATE i"`` when the
    reply was well formed, else None with the reason in ``format_failure``. ``repaired`` is True when
    the first reply was malformed (its reason stays in ``format_failure``) and the schema-constrained
    second request gave the action that was applied. ``bank_changes`` counts
    the bank writes the task caused (added, merged, updated, evicted) and ``bank_size`` is the size
    after it. ``progress`` is set for environment tasks only.
    """

    epoch: int
    index: int
    position: int
    task_id: str
    success: bool
    answer: str | None
    gold: str
    tokens: int
    steps: int
    progress: float | None
    retrieved: int
    retrieved_ids: tuple[str, ...]
    similarities: tuple[float, ...]
    dropped_by_floor: int
    optimizer_tokens: int
    action: str | None
    format_failure: str | None
    written_id: str | None
    bank_size: int
    bank_changes: dict[str, int] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    repaired: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, one line of ``records.jsonl``."""
        out = asdict(self)
        out["retrieved_ids"] = list(self.retrieved_ids)
        out["similarities"] = list(self.similarities)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskRecord:
        """The inverse of :meth:`to_dict`; keys this version does not know are ignored."""
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["retrieved_ids"] = tuple(values.get("retrieved_ids", ()))
        values["similarities"] = tuple(values.get("similarities", ()))
        return cls(**values)


def bank_changes(before: BankStats, after: BankStats) -> dict[str, int]:
    """The bank writes between two snapshots of :attr:`InsightBank.stats`."""
    return {name: getattr(after, name) - getattr(before, name) for name in WRITE_COUNTERS}


def describe_action(action: OptimizerAction) -> str:
    """``"ADD"`` or ``"UPDATE i"``, as the Mem-Optimizer wrote it."""
    return "ADD" if action.op == "ADD" else f"UPDATE {action.target}"


def build_record(
    tried: Attempt,
    parsed: OptimizerAction | str | None,
    written: BankEntry | None,
    *,
    epoch: int,
    index: int,
    position: int,
    optimizer_tokens: int,
    bank_size: int,
    changes: Mapping[str, int],
    first_failure: str | None = None,
) -> TaskRecord:
    """The record of one task from its attempt and the parsed optimizer reply (a str is a failure reason).

    ``parsed`` is None when the mode asks no Mem-Optimizer and writes nothing (``"no-memory"``).
    ``first_failure`` is the reason the first reply was malformed when ``parsed`` comes from the repair
    request; it is what ``format_failure`` keeps, so repairs never hide a format failure.
    """
    result = tried.result
    if parsed is None:
        action, failure = None, None
    elif isinstance(parsed, str):
        action, failure = None, parsed
    else:
        action, failure = describe_action(parsed), None
    if first_failure is not None:
        failure = first_failure
    return TaskRecord(
        epoch=epoch,
        index=index,
        position=position,
        task_id=tried.task.id,
        success=result.success,
        answer=result.answer,
        gold=tried.task.answer,
        tokens=result.length,
        steps=result.steps,
        progress=result.progress,
        retrieved=len(tried.entries),
        retrieved_ids=tuple(e.id for e in tried.entries),
        similarities=tuple(round(s, 6) for s in tried.retrieval.similarities),
        dropped_by_floor=tried.retrieval.dropped_by_floor,
        optimizer_tokens=optimizer_tokens,
        action=action,
        format_failure=failure,
        written_id=None if written is None else written.id,
        bank_size=bank_size,
        bank_changes=dict(changes),
        metadata=dict(result.metadata),
        repaired=first_failure is not None and action is not None,
    )


def append_record(path: Path, record: TaskRecord) -> None:
    """Append one record as a JSON line, flushed to disk before returning: this is the task's commit."""
    append_jsonl(path, record.to_dict())


def read_records(path: Path) -> list[TaskRecord]:
    """The complete records of ``records.jsonl``; a torn last line (a write cut short) is removed.

    A line that is not a task record means the file was edited, which is refused rather than guessed around.
    """
    records: list[TaskRecord] = []
    for number, row in enumerate(read_jsonl(path), start=1):
        try:
            records.append(TaskRecord.from_dict(row))
        except (TypeError, AttributeError) as exc:
            raise StoreError(f"{path}: line {number} is not a task record ({exc}); use a fresh --run-dir") from exc
    return records

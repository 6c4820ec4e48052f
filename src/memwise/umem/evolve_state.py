"""The run directory of an evolution run: where each part lives, the resume checks, bank checkpoints.

A resumed run must continue the run that is on disk: same settings (epochs may grow), same task
stream, records in stream order. The live bank is rewound to its snapshot after the last record,
since a task killed part-way may already have touched it (see :mod:`memwise.umem.evolve`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from memwise.exceptions import ConfigError, StoreError
from memwise.runs.files import remove_sqlite, restore_sqlite, snapshot_sqlite, write_text_atomic
from memwise.tasks.types import Task
from memwise.umem.evolve_config import ADDED_SETTINGS, EvolveConfig
from memwise.umem.evolve_records import TaskRecord

__all__ = ["EvolvePaths", "check_records", "check_state", "rewind_bank", "snapshot_bank"]


@dataclass(frozen=True)
class EvolvePaths:
    """Where a run directory keeps each part of an evolution run."""

    root: Path

    @property
    def state(self) -> Path:
        """The run's fixed settings and task stream digest; a resume with other settings is refused."""
        return self.root / "evolve.json"

    @property
    def records(self) -> Path:
        """One JSON line per finished task, in order."""
        return self.root / "records.jsonl"

    @property
    def bank(self) -> Path:
        """The live insight bank."""
        return self.root / "bank.sqlite3"

    def checkpoint(self, done: int) -> Path:
        """The bank's snapshot after ``done`` records, which a resumed run restores."""
        return self.root / f"bank.ckpt-{done:06d}.sqlite3"

    def checkpoints(self) -> list[Path]:
        """Every snapshot on disk, oldest first (the zero-padded count sorts by name)."""
        return sorted(self.root.glob("bank.ckpt-*.sqlite3"))


def _stream_digest(tasks: Sequence[Task]) -> str:
    blob = json.dumps([[t.id, t.prompt, t.answer] for t in tasks], ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:24]


def check_state(paths: EvolvePaths, config: EvolveConfig, tasks: Sequence[Task]) -> None:
    """Write the run's fixed settings on first use; refuse to continue a run started differently."""
    expected = {**config.fixed(), "tasks": len(tasks), "stream": _stream_digest(tasks)}
    if not paths.state.exists():
        write_text_atomic(paths.state, json.dumps(expected, indent=2) + "\n")
        return
    found = json.loads(paths.state.read_text(encoding="utf-8"))
    found = {**ADDED_SETTINGS, **found}
    changed = [f"{k} was {found.get(k)!r}, now {v!r}" for k, v in expected.items() if found.get(k) != v]
    if changed:
        raise ConfigError(
            f"run directory {paths.root} holds an evolution run started differently ({'; '.join(changed)}): "
            "resume with the same settings and tasks, or use a fresh --run-dir"
        )


def check_records(records: Sequence[TaskRecord], tasks: Sequence[Task], total: int, root: Path) -> None:
    """Refuse records that cannot be this run's first ones: more than asked for, or out of stream order."""
    if len(records) > total:
        raise ConfigError(
            f"run directory {root} already holds {len(records)} task records, more than the {total} asked for: "
            "raise --epochs or use a fresh --run-dir"
        )
    for position, record in enumerate(records):
        epoch, index = divmod(position, len(tasks))
        if (record.epoch, record.index, record.task_id) != (epoch + 1, index, tasks[index].id):
            raise ConfigError(
                f"{root}: record {position} is task {record.task_id!r} (epoch {record.epoch}, index {record.index}), "
                f"expected {tasks[index].id!r} (epoch {epoch + 1}, index {index}): use a fresh --run-dir"
            )


def snapshot_bank(paths: EvolvePaths, done: int) -> None:
    """Snapshot the bank as it is after ``done`` records, then drop older snapshots."""
    keep = paths.checkpoint(done)
    snapshot_sqlite(paths.bank, keep)
    for old in paths.checkpoints():
        if old != keep:
            old.unlink(missing_ok=True)


def rewind_bank(paths: EvolvePaths, done: int) -> None:
    """Bring the live bank to its state after ``done`` records (see :mod:`memwise.umem.evolve`)."""
    if done == 0:
        remove_sqlite(paths.bank)  # whatever a killed first task wrote
        for old in paths.checkpoints():
            old.unlink(missing_ok=True)
        return
    saved = paths.checkpoint(done)
    if saved.exists():
        restore_sqlite(saved, paths.bank)
        return
    # No snapshot for the last record: the run stopped between writing that record and the snapshot,
    # and the live bank has not been touched since. Anything else means files were removed by hand.
    if not paths.bank.exists():
        raise StoreError(f"{paths.root}: {done} task records but neither a bank nor its checkpoint; use a fresh run")
    snapshot_bank(paths, done)

"""Resumable GRPO runs: the bank snapshot kept inside each trl ``checkpoint-N`` folder.

A trl checkpoint holds the model and optimizer; UMEM's state also includes the bank, which must be the
bank of that same step. These helpers find a resumable checkpoint and put its bank back; saving the
snapshot is :class:`~memwise.umem.grpo.BankCheckpoint`, a trl callback. Nothing here imports trl, so the
CLI and :mod:`memwise.umem.workspace` can restore a bank before training starts.
"""

from __future__ import annotations

from pathlib import Path

from memwise.runs.files import restore_sqlite

__all__ = ["BANK_SNAPSHOT", "checkpoint_step", "latest_checkpoint", "restore_bank"]

BANK_SNAPSHOT = "umem_bank.sqlite3"
"""The bank as it was at a checkpoint's step, saved inside trl's ``checkpoint-N`` folder."""


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest trl checkpoint under ``output_dir`` that also holds a bank snapshot, or None."""
    found = []
    for path in Path(output_dir).glob("checkpoint-*"):
        suffix = path.name.removeprefix("checkpoint-")
        if suffix.isdigit() and (path / BANK_SNAPSHOT).exists():
            found.append((int(suffix), path))
    return max(found)[1] if found else None


def restore_bank(checkpoint: str | Path, bank_path: str | Path) -> None:
    """Put a checkpoint's bank back at ``bank_path``; call it before the bank's store is opened."""
    restore_sqlite(Path(checkpoint) / BANK_SNAPSHOT, bank_path)


def checkpoint_step(checkpoint: Path) -> int:
    """The global step a ``checkpoint-N`` folder was saved at (``N``)."""
    return int(checkpoint.name.removeprefix("checkpoint-"))

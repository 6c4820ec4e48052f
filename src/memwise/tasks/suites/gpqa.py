"""GPQA (Diamond) from the official CSV.

The CSV lists the correct answer in its own column, so presenting the options in file order would
put the right answer first every time. Options are therefore shuffled with a generator seeded by
``"{seed}:{record id}"``: the order is the same for a task on every run with the same seed (results
are comparable and cacheable), differs between seeds (position bias can be averaged out), and does
not depend on which other records are in the file.
"""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

from memwise.exceptions import DatasetError
from memwise.tasks.suites._io import LETTERS, existing_file, lettered, read_text, require_str
from memwise.tasks.types import Task

SUITE = "gpqa"
QUESTION = "Question"
CORRECT = "Correct Answer"
INCORRECT = ("Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3")
REQUIRED = (QUESTION, CORRECT, *INCORRECT)


def shuffled_options(correct: str, incorrect: tuple[str, ...], *, seed: int, key: str) -> tuple[tuple[str, ...], str]:
    """The options in their presented order and the letter of the correct one.

    Positions, not texts, are shuffled, so the letter stays right even if a distractor repeats the
    correct text.
    """
    options = (correct, *incorrect)
    order = list(range(len(options)))
    random.Random(f"{seed}:{key}").shuffle(order)
    return tuple(options[i] for i in order), LETTERS[order.index(0)]


def parse_gpqa_row(row: dict[str, str | None], *, path: Path, index: int, seed: int) -> Task:
    """One CSV row as a :class:`Task` with shuffled, lettered options."""
    question = require_str(row, QUESTION, path, index)
    correct = require_str(row, CORRECT, path, index)
    incorrect = tuple(require_str(row, column, path, index) for column in INCORRECT)
    record_id = (row.get("Record ID") or "").strip()
    choices, letter = shuffled_options(correct, incorrect, seed=seed, key=record_id or str(index))
    metadata = {"record_id": record_id or None, "seed": seed}
    for column, name in (("High-level domain", "domain"), ("Subdomain", "subdomain")):
        value = (row.get(column) or "").strip()
        if value:
            metadata[name] = value
    return Task(
        id=f"{SUITE}-{record_id or index}",
        suite=SUITE,
        prompt=lettered(question, choices),
        answer=letter,
        text=question,
        choices=choices,
        metadata=metadata,
    )


def load_gpqa(path: str | Path, *, seed: int = 0) -> list[Task]:
    """Every row of a GPQA CSV; record indices count data rows from 0 (the header is not a record)."""
    p = existing_file(path)
    try:
        reader = csv.DictReader(io.StringIO(read_text(p), newline=""))
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(f"missing GPQA columns {missing}", path=str(p))
        return [parse_gpqa_row(row, path=p, index=i, seed=seed) for i, row in enumerate(reader)]
    except csv.Error as exc:
        raise DatasetError(f"invalid CSV: {exc}", path=str(p)) from exc

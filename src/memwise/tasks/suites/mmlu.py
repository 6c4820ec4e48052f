"""MMLU multiple choice from JSONL records ``{question, type, choices, answer}``.

The gold ``answer`` in the file is an index; the task keeps the letter instead, because the letter is
what the executor is asked to write and what :mod:`memwise.tasks.suites.answers` extracts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from memwise.exceptions import DatasetError
from memwise.tasks.suites._io import LETTERS, existing_file, lettered, read_jsonl, require_str
from memwise.tasks.types import Task

SUITE = "mmlu"


def parse_mmlu_record(record: dict[str, Any], *, path: Path, index: int) -> Task:
    """One MMLU record as a :class:`Task` (id ``mmlu-<index>``, since the file carries no ids)."""
    question = require_str(record, "question", path, index)
    choices = record.get("choices")
    if (
        not isinstance(choices, list)
        or not 2 <= len(choices) <= len(LETTERS)
        or not all(isinstance(c, str) and c.strip() for c in choices)
    ):
        raise DatasetError(
            f"field 'choices' must be a list of 2-{len(LETTERS)} non-empty strings, got {choices!r}",
            path=str(path),
            index=index,
        )
    answer = record.get("answer")
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
        raise DatasetError(
            f"field 'answer' must be a choice index in 0..{len(choices) - 1}, got {answer!r}",
            path=str(path),
            index=index,
        )
    subject = record.get("type", record.get("subject", ""))
    options = tuple(c.strip() for c in choices)
    return Task(
        id=f"{SUITE}-{index}",
        suite=SUITE,
        prompt=lettered(question, options),
        answer=LETTERS[answer],
        text=question,
        choices=options,
        metadata={"subject": subject if isinstance(subject, str) else str(subject)},
    )


def load_mmlu(path: str | Path, *, seed: int = 0) -> list[Task]:
    """Every record of an MMLU JSONL file, in file order. ``seed`` is unused: MMLU keeps its order."""
    del seed
    p = existing_file(path)
    return [parse_mmlu_record(r, path=p, index=i) for i, r in enumerate(read_jsonl(p))]

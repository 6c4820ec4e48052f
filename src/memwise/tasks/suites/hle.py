"""Humanity's Last Exam (HLE) from its official release, read from a path the user gives.

The release is a table of records ``{id, question, image, answer, answer_type, category, ...}`` with
``answer_type`` ``"exactMatch"`` or ``"multipleChoice"`` (the options are written inside the
question, under "Answer Choices:", and the answer is their letter). It ships as parquet; JSON (one
array, or ``{"data": [...]}``) and JSONL exports of it are read too. Our executors read text only,
so records that carry an image are skipped and counted (:class:`HLEFile`), never silently dropped:
the paper's HLE subset is text-only for the same reason.

Exact-match answers are compared after SQuAD normalisation, stricter than the official judge model,
which accepts equivalent forms; a report on HLE should say so.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memwise.exceptions import ConfigError, DatasetError
from memwise.tasks.suites._io import LETTERS, existing_file, read_jsonl, read_text, require_str
from memwise.tasks.types import Task

SUITE = "hle"
ANSWER_TYPES = ("exactMatch", "multipleChoice")
_CHOICES_HEADER = re.compile(r"^\s*answer\s+choices\s*:?\s*$", re.IGNORECASE | re.MULTILINE)
_CHOICE_LINE = re.compile(r"^\s*\(?([A-J])[.)]\s+(.+?)\s*$")


@dataclass(frozen=True)
class HLEFile:
    """The text-only tasks of an HLE file and how many records were skipped for carrying an image."""

    tasks: list[Task]
    skipped_images: int


def options_of(question: str) -> tuple[str, ...]:
    r"""The options listed under "Answer Choices:" (``A. text`` lines), in order; () when there are none.

    Example:
        >>> options_of("Which?\n\nAnswer Choices:\nA. red\nB. blue")
        ('red', 'blue')
    """
    headers = list(_CHOICES_HEADER.finditer(question))
    if not headers:
        return ()
    header = headers[-1]
    options: list[str] = []
    for line in question[header.end() :].splitlines():
        match = _CHOICE_LINE.match(line)
        if match is None:
            if options and line.strip():
                break
            continue
        if match.group(1) != LETTERS[len(options)]:
            break
        options.append(match.group(2))
    return tuple(options)


def _records(path: Path) -> list[Any]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise ConfigError(
                f"{path} is parquet, which needs pyarrow: pip install pyarrow, or export the file as JSONL"
            ) from exc
        try:
            return pq.read_table(path).to_pylist()
        except (OSError, ValueError) as exc:
            raise DatasetError(f"not a readable parquet file ({exc})", path=str(path)) from exc
    if suffix == ".jsonl":
        return list(read_jsonl(path))
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"invalid JSON: {exc.msg} (line {exc.lineno})", path=str(path)) from exc
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DatasetError(f"expected a JSON array of HLE records, got {type(data).__name__}", path=str(path))
    return data


def parse_hle_record(record: Any, *, path: Path, index: int) -> Task:
    """One text-only HLE record as a :class:`Task` (the caller has already skipped image records)."""
    question = require_str(record, "question", path, index)
    answer = require_str(record, "answer", path, index)
    raw_id = str(record.get("id") or "").strip()
    kind = record.get("answer_type")
    if kind not in ANSWER_TYPES:
        raise DatasetError(
            f"field 'answer_type' must be one of {', '.join(ANSWER_TYPES)}, got {kind!r}", path=str(path), index=index
        )
    choices: tuple[str, ...] = ()
    if kind == "multipleChoice":
        answer = answer.strip("()[]. ").upper()
        if len(answer) != 1 or answer not in LETTERS:
            raise DatasetError(
                f"a multipleChoice answer must be one option letter, got {record.get('answer')!r}",
                path=str(path),
                index=index,
            )
        choices = options_of(question)
    metadata: dict[str, Any] = {"answer_type": kind, "record_id": raw_id or None}
    category = record.get("category")
    if isinstance(category, str) and category.strip():
        metadata["category"] = category.strip()
    return Task(
        id=f"{SUITE}-{raw_id or index}",
        suite=SUITE,
        prompt=question,
        answer=answer,
        text=question,
        choices=choices,
        metadata=metadata,
    )


def read_hle(path: str | Path) -> HLEFile:
    """Every text-only record of an HLE file, in file order, and the count of image records skipped.

    Record indices in errors count records from 0 (image records included), as the file lists them.
    """
    p = existing_file(path)
    tasks: list[Task] = []
    skipped = 0
    for index, record in enumerate(_records(p)):
        if not isinstance(record, dict):
            raise DatasetError(f"expected an object, got {type(record).__name__}", path=str(p), index=index)
        image = record.get("image")
        if image not in (None, ""):
            skipped += 1
            continue
        tasks.append(parse_hle_record(record, path=p, index=index))
    return HLEFile(tasks, skipped)


def load_hle(path: str | Path, *, seed: int = 0) -> list[Task]:
    """The text-only tasks of an HLE file (see :func:`read_hle` for the count of skipped image records)."""
    del seed
    return read_hle(path).tasks


def hle_kind(task: Task) -> str:
    """``"choice"`` for a multiple-choice HLE task, else ``"span"`` (exact match)."""
    return "choice" if task.metadata.get("answer_type") == "multipleChoice" else "span"

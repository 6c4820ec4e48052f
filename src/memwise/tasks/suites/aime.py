r"""AIME problems from JSONL records ``{problem, answer, id?}``.

AIME answers are integers from 0 to 999, so the gold is kept as a canonical integer string ("073"
and "$\boxed{73}$" both become "73"); predictions go through the same normalisation before the
comparison, which makes scoring a plain string equality.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from memwise.exceptions import DatasetError
from memwise.tasks.suites._io import existing_file, read_jsonl, require_str
from memwise.tasks.types import Task

SUITE = "aime"
_WRAPPERS = re.compile(r"\\boxed|\\text|\\mathrm|\\mathbf|\\displaystyle|\\[!,;: ]|[${}\s]")
_INTEGER = re.compile(r"[+-]?\d+")
_INSTRUCTION = re.compile(r"\s*Please reason step by step.*$", re.DOTALL | re.IGNORECASE)


def normalize_integer_answer(raw: object) -> str | None:
    r"""The integer an answer states, as a string without leading zeros; ``None`` if it is not one.

    Thousands separators and LaTeX wrappers (``$``, ``\boxed{}``, ``\text{}``) are dropped, and a
    trailing ``.0`` or full stop is tolerated, since models and files write integers in all these ways.

    Example:
        >>> normalize_integer_answer("$\\boxed{073}$")
        '73'
        >>> normalize_integer_answer("1,000") , normalize_integer_answer("3/4")
        ('1000', None)
    """
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return str(raw)
    if not isinstance(raw, str):
        return None
    text = _WRAPPERS.sub("", raw).replace(",", "").rstrip(".")
    if text.endswith(".0"):
        text = text[:-2]
    if not _INTEGER.fullmatch(text):
        return None
    return str(int(text))


def parse_aime_record(record: dict[str, Any], *, path: Path, index: int, prefix: str) -> Task:
    """One AIME record as a :class:`Task`; the gold must be an integer in 0..999."""
    problem = require_str(record, "problem", path, index)
    answer = normalize_integer_answer(record.get("answer"))
    if answer is None or not 0 <= int(answer) <= 999:
        raise DatasetError(
            f"field 'answer' must be an integer in 0..999, got {record.get('answer')!r}", path=str(path), index=index
        )
    raw_id = record.get("id")
    task_id = f"{prefix}-{raw_id}" if raw_id not in (None, "") else f"{prefix}-{index}"
    return Task(
        id=task_id,
        suite=SUITE,
        prompt=problem,
        answer=answer,
        text=_INSTRUCTION.sub("", problem),  # embed the mathematics, not the shared boilerplate
        metadata={"source": prefix},
    )


def load_aime(path: str | Path, *, seed: int = 0) -> list[Task]:
    """Every problem of an AIME JSONL file; ids are ``<file stem>-<id or index>`` (``aime24-0``)."""
    del seed
    p = existing_file(path)
    return [parse_aime_record(r, path=p, index=i, prefix=p.stem) for i, r in enumerate(read_jsonl(p))]

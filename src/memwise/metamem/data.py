"""MetaMem's question files: one record per question, carrying its gold answer and retrieved fragments.

Training reflects against the gold answer, so a gold that goes missing does not fail loudly; it turns
every verdict and every lesson into noise. The public reference setup lost all its gold answers that
way (its preprocessing wrote one field name and training read another). So the loader here:

* accepts our field names and the reference's (``problem``, ``groundtruth``, ``task``,
  ``related_memories``), and when a record spells a field both ways the two values must agree;
* treats a missing or blank gold answer as a :class:`~memwise.exceptions.DatasetError` naming the
  file, the record and the field, never as an empty string;
* requires the memories field too (an explicit empty list is fine), for the same reason;
* keeps the question date, the dataset's own text plus its parsed form when it parses;
* rejects duplicate ``question_id`` values, since everything downstream groups by id.

Files are JSON (a list of records, or ``{"questions": [...]}``) or JSONL. For JSONL, a record's index
is its 0-based physical line number (blank lines are skipped but counted), as the conversation
readers number them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from memwise._datafile import read_text
from memwise.exceptions import DatasetError
from memwise.facts.readers import parse_datetime
from memwise.runs.files import write_text_atomic
from memwise.tasks.question_types import GENERIC, canonical_question_type

PathLike = str | os.PathLike[str]

# Every accepted spelling of each field: ours first, then the public reference setup's.
ALIASES: dict[str, tuple[str, ...]] = {
    "question_id": ("question_id",),
    "question": ("question", "problem"),
    "answer": ("answer", "groundtruth"),
    "question_type": ("question_type", "task"),
    "question_date": ("question_date",),
    "memories": ("memories", "related_memories"),
}
_KNOWN_KEYS = frozenset(name for names in ALIASES.values() for name in names) | {"metadata"}


@dataclass(frozen=True, slots=True)
class MetaQuestion:
    """One training or evaluation question for MetaMem.

    ``question_date`` is the dataset's own text ("today" for the question), kept verbatim so nothing
    is lost in a round trip; ``question_datetime`` is derived from it when it parses (LoCoMo,
    LongMemEval or ISO 8601 forms) and is ``None`` otherwise. ``memories`` are the retrieved fragments,
    already rendered for a prompt.

    Example:
        >>> q = MetaQuestion("q1", "When did I move?", "May 2023", "temporal-reasoning",
        ...                  "2023/06/01 (Thu) 10:00", ("2023-05-02 09:00 Tuesday user: I moved to Lisbon.",))
        >>> q.question_datetime
        datetime.datetime(2023, 6, 1, 10, 0)
    """

    question_id: str
    question: str
    answer: str
    question_type: str
    question_date: str | None = None
    memories: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    question_datetime: datetime | None = field(init=False, default=None, compare=False)

    def __post_init__(self) -> None:
        # Derived here, not passed in, so the text and its parsed form can never disagree.
        object.__setattr__(self, "memories", tuple(self.memories))
        object.__setattr__(self, "question_datetime", parse_question_date(self.question_date))

    def to_dict(self) -> dict[str, Any]:
        """The JSON record :func:`save_questions` writes and :func:`load_questions` reads back."""
        return {
            "question_id": self.question_id,
            "question": self.question,
            "answer": self.answer,
            "question_type": self.question_type,
            "question_date": self.question_date,
            "memories": list(self.memories),
            "metadata": self.metadata,
        }


def parse_question_date(text: str | None) -> datetime | None:
    """The parsed form of a question date, or ``None`` when there is none or it does not parse.

    An unparsable date is not an error: the text still reaches the prompt, which is what matters.
    """
    if text is None:
        return None
    try:
        return parse_datetime(text)
    except ValueError:
        return None


class _FieldError(Exception):
    """A problem with one field of one record, before the loader attaches file and index."""

    def __init__(self, name: str, message: str) -> None:
        self.name = name
        super().__init__(f"field {name!r}: {message}")


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _as_id(value: Any, name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _FieldError(name, f"expected a string, got {_type_name(value)}")
    text = str(value).strip()
    if not text:
        raise _FieldError(name, "empty id")
    return text


def _as_nonblank(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise _FieldError(name, f"expected a string, got {_type_name(value)}")
    if not value.strip():
        raise _FieldError(name, "empty text")
    return value


def _as_gold(value: Any, name: str) -> str:
    # Numbers are accepted: LongMemEval and LoCoMo store answers such as 2022 as JSON numbers.
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _FieldError(name, f"expected a string or number, got {_type_name(value)}")
    text = str(value)
    if not text.strip():
        raise _FieldError(name, "empty gold answer; training would reflect against nothing")
    return text


def _as_type(value: Any, name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _FieldError(name, f"expected a string, got {_type_name(value)}")
    try:
        return canonical_question_type(value)
    except ValueError as exc:
        raise _FieldError(name, str(exc)) from None


def _as_date(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise _FieldError(name, f"expected a string, got {_type_name(value)}")
    return value


def _as_memories(value: Any, name: str) -> tuple[str, ...]:
    """A list of fragments, or one string with a fragment per line (how the reference stores them)."""
    if isinstance(value, str):
        return tuple(line.strip() for line in value.splitlines() if line.strip())
    if not isinstance(value, list):
        raise _FieldError(name, f"expected a string or a list of strings, got {_type_name(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise _FieldError(f"{name}[{i}]", f"expected a string, got {_type_name(item)}")
    return tuple(value)


def _pick(record: dict[str, Any], canonical: str, convert: Callable[[Any, str], Any]) -> tuple[bool, Any]:
    """``(found, value)`` for a field under any of its spellings; spellings that disagree are an error.

    ``null`` counts as absent, as in the conversation readers.
    """
    found: list[tuple[str, Any]] = [
        (name, convert(record[name], name)) for name in ALIASES[canonical] if record.get(name) is not None
    ]
    if not found:
        return False, None
    first_name, first = found[0]
    for name, value in found[1:]:
        if value != first:
            raise _FieldError(name, f"disagrees with {first_name!r} ({value!r} != {first!r})")
    return True, first


def _require(record: dict[str, Any], canonical: str, convert: Callable[[Any, str], Any], what: str) -> Any:
    found, value = _pick(record, canonical, convert)
    if not found:
        names = " or ".join(repr(n) for n in ALIASES[canonical])
        raise _FieldError(canonical, f"missing {what} (expected {names})")
    return value


def _metadata(record: dict[str, Any]) -> dict[str, Any]:
    """The record's ``metadata`` plus any unknown top-level keys, so nothing in the file is dropped."""
    raw = record.get("metadata")
    if raw is not None and not isinstance(raw, dict):
        raise _FieldError("metadata", f"expected an object, got {_type_name(raw)}")
    metadata = dict(raw or {})
    for key, value in record.items():
        if key in _KNOWN_KEYS:
            continue
        if key in metadata and metadata[key] != value:
            raise _FieldError(key, "given both at top level and in 'metadata', with different values")
        metadata[key] = value
    return metadata


def _from_record(record: Any) -> MetaQuestion:
    """One decoded record as a :class:`MetaQuestion`.

    ``question_type`` falls back to ``generic`` only when the record has none under any spelling; the
    fallback is noted as ``metadata["question_type_defaulted"] = True``.

    Raises :class:`_FieldError` naming the field at fault; the loader adds the file and index.
    """
    if not isinstance(record, dict):
        raise _FieldError("record", f"expected an object, got {_type_name(record)}")
    question_id = _require(record, "question_id", _as_id, "question id")
    question = _require(record, "question", _as_nonblank, "question text")
    answer = _require(record, "answer", _as_gold, "gold answer")
    memories = _require(record, "memories", _as_memories, "memories")
    _, question_date = _pick(record, "question_date", _as_date)
    metadata = _metadata(record)
    has_type, question_type = _pick(record, "question_type", _as_type)
    if not has_type:
        question_type = GENERIC
        metadata["question_type_defaulted"] = True
    return MetaQuestion(question_id, question, answer, question_type, question_date, memories, metadata)


def _records(text: str, path: str) -> list[tuple[int, Any]]:
    """``(index, record)`` pairs from JSON or JSONL text; the index is what errors report."""
    stripped = text.strip()
    if not stripped:
        raise DatasetError("empty file; expected JSON or JSONL question records", path=path)
    if stripped[0] == "[":
        try:
            items = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"invalid JSON ({exc.msg}) at line {exc.lineno}", path=path) from None
        return list(enumerate(items))
    try:
        whole = json.loads(stripped)
    except json.JSONDecodeError:
        whole = None  # several objects: JSONL
    if isinstance(whole, dict) and "questions" in whole:
        items = whole["questions"]
        if not isinstance(items, list):
            raise DatasetError(f"'questions' must be a list, got {_type_name(items)}", path=path)
        return list(enumerate(items))
    pairs: list[tuple[int, Any]] = []
    for index, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        try:
            pairs.append((index, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise DatasetError(f"line {index + 1}: not JSON ({exc.msg})", path=path, index=index) from None
    return pairs


def load_questions(path: PathLike) -> list[MetaQuestion]:
    """Read a JSON or JSONL question file, strictly.

    Raises:
        ConfigError: the file does not exist, or is a directory.
        DatasetError: text that is not UTF-8 (naming the byte offset and line), a malformed record
            (naming the file, record index and field), a missing or blank gold answer, spellings of
            one field that disagree, or a repeated ``question_id``.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "q.jsonl"
        >>> _ = p.write_text('{"question_id": "q1", "problem": "Who?", "groundtruth": "Ann", "related_memories": []}')
        >>> [(q.question, q.answer, q.question_type) for q in load_questions(p)]
        [('Who?', 'Ann', 'generic')]
    """
    name = os.fspath(path)
    text = read_text(name, "question file")
    questions: list[MetaQuestion] = []
    first_seen: dict[str, int] = {}
    for index, record in _records(text, name):
        try:
            question = _from_record(record)
        except _FieldError as err:
            raise DatasetError(f"{_record_label(record)}{err}", path=name, index=index) from None
        if question.question_id in first_seen:
            raise DatasetError(
                f"duplicate question_id {question.question_id!r} (first at record {first_seen[question.question_id]})",
                path=name,
                index=index,
            )
        first_seen[question.question_id] = index
        questions.append(question)
    return questions


def _record_label(record: Any) -> str:
    """The record's id as an error prefix, when it has a usable one: easier to grep for than an index."""
    if isinstance(record, dict) and isinstance(record.get("question_id"), str):
        return f"{record['question_id']!r}: "
    return ""


def check_unique_ids(questions: Iterable[MetaQuestion], *, path: str = "<questions>") -> None:
    """Raise :class:`DatasetError` at the first repeated ``question_id``."""
    seen: set[str] = set()
    for index, question in enumerate(questions):
        if question.question_id in seen:
            raise DatasetError(f"duplicate question_id {question.question_id!r}", path=path, index=index)
        seen.add(question.question_id)


def save_questions(path: PathLike, questions: Sequence[MetaQuestion]) -> Path:
    """Write ``questions`` as JSONL, atomically: a crash leaves the old file or the new one, never half.

    Raises:
        DatasetError: when two questions share an id (the file could not be loaded back).
    """
    target = Path(path)
    check_unique_ids(questions, path=os.fspath(target))
    lines = "".join(json.dumps(question.to_dict(), ensure_ascii=False) + "\n" for question in questions)
    return write_text_atomic(target, lines)

"""File reading and record checks shared by the suite loaders.

Every loader reports problems the same way: a missing file is the caller's mistake (``ConfigError``),
a malformed file or record is the data's fault (``DatasetError`` naming the file and the record), so
a bad line in a benchmark file is found at load time and not halfway through an expensive run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from memwise.exceptions import ConfigError, DatasetError

LETTERS = "ABCDEFGHIJ"


def existing_file(path: str | Path) -> Path:
    """The path as a ``Path``, or ``ConfigError`` when no such file exists."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"dataset file not found: {p}")
    return p


def read_text(path: Path) -> str:
    """The file's text; undecodable bytes are a malformed file, not a crash."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"not valid UTF-8 ({exc.reason})", path=str(path)) from exc


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """One JSON object per non-blank line; record indices count non-blank lines from 0."""
    records: list[dict[str, Any]] = []
    for line in read_text(path).splitlines():
        if not line.strip():
            continue
        index = len(records)
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"invalid JSON: {exc.msg}", path=str(path), index=index) from exc
        if not isinstance(record, dict):
            raise DatasetError(f"expected a JSON object, got {type(record).__name__}", path=str(path), index=index)
        records.append(record)
    return records


def read_json_list(path: Path) -> list[Any]:
    """A file holding one JSON array (HotpotQA's layout)."""
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"invalid JSON: {exc.msg} (line {exc.lineno})", path=str(path)) from exc
    if not isinstance(data, list):
        raise DatasetError(f"expected a JSON array of records, got {type(data).__name__}", path=str(path))
    return data


def require_str(record: Any, key: str, path: Path, index: int) -> str:
    """A non-blank string field, stripped; anything else is a malformed record."""
    if not isinstance(record, dict):
        raise DatasetError(f"expected an object, got {type(record).__name__}", path=str(path), index=index)
    value = record.get(key)
    if not isinstance(value, str) or not value.strip():
        raise DatasetError(f"field {key!r} must be a non-empty string, got {value!r}", path=str(path), index=index)
    return value.strip()


def lettered(question: str, choices: tuple[str, ...]) -> str:
    """The question followed by one ``A) option`` line per choice, the form the executor answers."""
    lines = [question, ""] + [f"{LETTERS[i]}) {choice}" for i, choice in enumerate(choices)]
    return "\n".join(lines)

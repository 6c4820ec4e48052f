"""File reading and record checks shared by the suite loaders.

Every loader reports problems the same way: a missing file, or a directory where a file belongs, is
the caller's mistake (``ConfigError`` saying which), a malformed file or record is the data's fault
(``DatasetError`` naming the file and the record, or the byte offset of text that is not UTF-8), so
a bad line in a benchmark file is found at load time and not halfway through an expensive run. The
opening and decoding are :mod:`memwise._datafile`'s, the same as the conversation readers'.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from memwise import _datafile
from memwise.exceptions import DatasetError

LETTERS = "ABCDEFGHIJ"


def existing_file(path: str | Path) -> Path:
    """The path as a ``Path``, or ``ConfigError`` saying whether it is missing or a directory."""
    return _datafile.existing_file(path)


def read_text(path: Path) -> str:
    """The file's text; undecodable bytes are a malformed file (named by offset and line), not a crash."""
    return _datafile.read_text(path)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """One JSON object per non-blank line; record indices count non-blank lines from 0.

    A line that is not UTF-8 or is over the record limit raises the reader's error as is: it names the
    physical line, which is what an editor shows.
    """
    records: list[dict[str, Any]] = []
    for _, line in _datafile.iter_lines(path):
        if isinstance(line, DatasetError):
            raise line
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


def read_json_file(path: Path) -> Any:
    """The one JSON value a file holds; malformed JSON is a :class:`DatasetError` naming its line."""
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"invalid JSON: {exc.msg} (line {exc.lineno})", path=str(path)) from exc


def read_json_list(path: Path) -> list[Any]:
    """A file holding one JSON array (HotpotQA's layout)."""
    data = read_json_file(path)
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

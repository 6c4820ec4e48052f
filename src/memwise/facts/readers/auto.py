"""Pick the right reader for a file by looking at its first record.

Sniffing decodes only the first array element (or the first line), never the whole file.
"""

from __future__ import annotations

import codecs
import json
from typing import Any, Literal

from memwise._datafile import iter_lines, locate_invalid_utf8
from memwise.exceptions import ConfigError, DatasetError
from memwise.facts.readers._common import ConversationStream, ErrorMode, PathLike, check_readable
from memwise.facts.readers._jsonstream import iter_json_array
from memwise.facts.readers.jsonl import iter_sessions_jsonl
from memwise.facts.readers.locomo import iter_locomo
from memwise.facts.readers.longmemeval import iter_longmemeval
from memwise.facts.types import Conversation

Format = Literal["locomo", "longmemeval", "jsonl"]
FORMATS: tuple[Format, ...] = ("locomo", "longmemeval", "jsonl")
_SNIFF_CHARS = 4096


def _format_of_record(record: Any) -> Format | None:
    if not isinstance(record, dict):
        return None
    if "conversation" in record and "qa" in record:
        return "locomo"
    if "haystack_sessions" in record or "question_id" in record:
        return "longmemeval"
    if "turns" in record and "session_id" in record:
        return "jsonl"
    return None


def _first_line(path: PathLike) -> tuple[int, str]:
    """The first non-blank line and its index, read within the record limit like the JSONL reader."""
    lines = iter_lines(path)
    try:
        for index, line in lines:
            if isinstance(line, DatasetError):
                raise line
            if line.strip():
                return index, line
    finally:
        lines.close()
    return 0, ""


def detect_format(path: PathLike) -> Format:
    """Name the format of ``path``; an empty JSON array reads as LoCoMo (either reader yields nothing).

    Only the first non-blank byte is looked at before handing over to the format's own decoding, so
    a byte that is not UTF-8 is reported by that reader, with its line (JSONL) or offset (JSON).

    Raises:
        DatasetError: when the content matches none of the formats, or is not UTF-8 text.
    """
    check_readable(path)
    name = str(path)
    with open(path, "rb") as raw:
        start = raw.read(_SNIFF_CHARS).removeprefix(codecs.BOM_UTF8).lstrip()
    if not start:
        raise DatasetError("empty file; cannot tell its format", path=name)
    if start.startswith(b"{"):
        index, first_line = _first_line(path)
        try:
            found = _format_of_record(json.loads(first_line))
        except json.JSONDecodeError as exc:
            raise DatasetError(f"first line is not JSON ({exc.msg})", path=name, index=index) from None
        if found == "jsonl":
            return found
    elif start.startswith(b"["):
        with open(path, encoding="utf-8-sig") as handle:
            records = iter_json_array(handle, path=name)
            first = next(records, None)
            records.close()
        if first is None:
            return "locomo"
        found = _format_of_record(first[1])
        if found in ("locomo", "longmemeval"):
            return found
    elif (not_text := locate_invalid_utf8(path)) is not None:
        raise DatasetError(not_text, path=name)
    raise DatasetError("unrecognised format; expected LoCoMo JSON, LongMemEval JSON or JSONL sessions", path=name)


def iter_conversations(
    path: PathLike, format: Format | Literal["auto"] = "auto", *, errors: ErrorMode = "raise"
) -> ConversationStream:
    """Stream conversations from any supported file, sniffing the format unless told."""
    chosen = detect_format(path) if format == "auto" else format
    if chosen == "locomo":
        return iter_locomo(path, errors=errors)
    if chosen == "longmemeval":
        return iter_longmemeval(path, errors=errors)
    if chosen == "jsonl":
        return iter_sessions_jsonl(path, errors=errors)
    raise ConfigError(f"unknown dataset format {format!r}; expected 'auto' or one of {', '.join(FORMATS)}")


def read_conversations(path: PathLike, format: Format | Literal["auto"] = "auto") -> list[Conversation]:
    """Read every conversation of a file, failing on the first malformed record."""
    with iter_conversations(path, format) as stream:
        return list(stream)

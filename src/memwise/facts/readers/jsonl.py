"""Reader for plain JSONL session logs, memwise's own interchange format.

One JSON object a line::

    {"session_id": "s1", "timestamp": "2024-03-01T09:00:00", "conversation_id": "c1", "user_id": "u1",
     "turns": [{"speaker": "alice", "content": "hi"}, {"role": "assistant", "text": "hello"}]}

Choices:

* Grouping: lines with the same ``conversation_id`` (or, when it is absent, the same ``user_id``) form
  one :class:`Conversation`, sessions in file order. Such lines must be contiguous: that is what lets
  the reader stream with one conversation in memory; a conversation that resumes after another one is
  an error. A line with neither id is a conversation of its own, named after its ``session_id``.
* ``timestamp`` is optional (LoCoMo, LongMemEval and ISO 8601 forms are accepted); a turn may carry its
  own, otherwise it inherits the session's. Turn ids are ``<session_id>:<index>``; unknown turn keys
  go to ``Turn.metadata``.
* Record indexes are 0-based physical line numbers (blank lines are skipped but counted), so
  ``index + 1`` is the line an editor shows.
* A bad line inside a conversation discards that whole conversation (strict mode raises before
  yielding it; collect mode records the error and moves on). A line that is not a JSON object at all
  cannot be assigned to a conversation, so collect mode skips just that line; so is a line that is
  not UTF-8 or is longer than the record limit (32 MiB unless ``MEMWISE_MAX_RECORD_MB`` says
  otherwise), which is never read whole.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from memwise._datafile import DEFAULT_MAX_TURN_CHARS, iter_lines, max_turn_chars
from memwise.exceptions import DatasetError
from memwise.facts.readers._common import (
    ConversationStream,
    ErrorMode,
    Outcome,
    PathLike,
    RecordError,
    as_datetime,
    as_dict,
    as_list,
    as_str,
    as_turn_text,
    check_readable,
    join,
    require,
)
from memwise.facts.types import Conversation, Session, Turn

GroupKey = tuple[str, str] | None
_TURN_FIELDS = ("speaker", "role", "content", "text", "timestamp")


@dataclass
class _Group:
    """The conversation being assembled while its lines stream past."""

    key: GroupKey
    first_line: int
    user_id: str | None
    sessions: list[Session] = field(default_factory=list)
    poisoned: bool = False


def _optional_str(record: dict[str, Any], key: str) -> str | None:
    value = record.get(key)
    return None if value is None else as_str(value, key)


def _first(record: dict[str, Any], keys: tuple[str, str], where: str) -> str:
    for key in keys:
        if record.get(key) is not None:
            return as_str(record[key], join(where, key))
    raise RecordError(where, f"missing required field: {keys[0]!r} or {keys[1]!r}")


def parse_session(record: dict[str, Any], *, max_turn_chars: int = DEFAULT_MAX_TURN_CHARS) -> Session:
    """Convert one decoded line into a session; raises :class:`RecordError` naming the field at fault."""
    session_id = as_str(require(record, "session_id", ""), "session_id")
    raw_date = _optional_str(record, "timestamp")
    timestamp = None if raw_date is None else as_datetime(raw_date, "timestamp")
    turns = []
    for i, raw in enumerate(as_list(require(record, "turns", ""), "turns")):
        where = join("turns", i)
        turn = as_dict(raw, where)
        speaker = _first(turn, ("speaker", "role"), where)
        text_key = "content" if turn.get("content") is not None else "text"
        text = as_turn_text(_first(turn, ("content", "text"), where), join(where, text_key), max_turn_chars)
        own = turn.get("timestamp")
        when = timestamp if own is None else as_datetime(own, join(where, "timestamp"))
        metadata = {key: value for key, value in turn.items() if key not in _TURN_FIELDS}
        turns.append(Turn(f"{session_id}:{i}", speaker, text, session_id, i, when, metadata))
    return Session(session_id, tuple(turns), timestamp, raw_date)


def _decode(line: str) -> tuple[dict[str, Any], GroupKey, str | None]:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        raise RecordError("", f"invalid JSON ({exc.msg} at column {exc.colno})") from None
    record = as_dict(value, "line")
    conversation_id = _optional_str(record, "conversation_id")
    user_id = _optional_str(record, "user_id")
    if conversation_id is not None:
        return record, ("conversation", conversation_id), user_id
    if user_id is not None:
        return record, ("user", user_id), user_id
    return record, None, None


def _conversation(group: _Group) -> Conversation:
    speakers = tuple(dict.fromkeys(t.speaker for s in group.sessions for t in s.turns))
    name = group.key[1] if group.key else group.sessions[0].id
    metadata: dict[str, Any] = {"source": "jsonl", "first_line": group.first_line}
    if group.user_id is not None:
        metadata["user_id"] = group.user_id
    return Conversation(name, tuple(group.sessions), (), speakers, metadata)


def _add(group: _Group, record: dict[str, Any], user_id: str | None, max_turn: int) -> None:
    session = parse_session(record, max_turn_chars=max_turn)
    if any(s.id == session.id for s in group.sessions):
        raise RecordError("session_id", f"duplicate session_id {session.id!r} in this conversation")
    if user_id is not None and group.user_id is not None and user_id != group.user_id:
        raise RecordError("user_id", f"{user_id!r} differs from {group.user_id!r} earlier in this conversation")
    group.user_id = group.user_id or user_id
    group.sessions.append(session)


def _error(err: RecordError, path: str, index: int, group: _Group | None = None) -> DatasetError:
    suffix = f" (conversation {group.key[1]!r} skipped)" if group and group.key else ""
    return DatasetError(f"line {index + 1}: {err}{suffix}", path=path, index=index)


def _outcomes(path: PathLike) -> Iterator[Outcome]:
    name = str(path)
    group: _Group | None = None
    finished: set[tuple[str, str]] = set()
    max_turn = max_turn_chars()
    for index, line in iter_lines(path):
        if isinstance(line, DatasetError):
            yield line
            continue
        if not line.strip():
            continue
        try:
            record, key, user_id = _decode(line)
        except RecordError as err:
            yield _error(err, name, index)
            continue
        if group is not None and (key is None or key != group.key):
            if group.key is not None:
                finished.add(group.key)
            if not group.poisoned:
                yield _conversation(group)
            group = None
        if key is not None and key in finished:
            problem = RecordError(
                key[0] + "_id", f"{key[1]!r} resumes after other lines; keep a conversation's lines together"
            )
            yield _error(problem, name, index)
            continue
        group = group or _Group(key, index, None)
        try:
            _add(group, record, user_id, max_turn)
        except RecordError as err:
            group.poisoned = True
            yield _error(err, name, index, group)
    if group is not None and not group.poisoned:
        yield _conversation(group)


def iter_sessions_jsonl(path: PathLike, *, errors: ErrorMode = "raise") -> ConversationStream:
    """Stream the conversations of a JSONL session log, holding one conversation in memory at a time."""
    check_readable(path)
    return ConversationStream(_outcomes(path), errors)


def read_sessions_jsonl(path: PathLike) -> list[Conversation]:
    """Read a whole JSONL session log, failing on the first malformed line."""
    with iter_sessions_jsonl(path) as stream:
        return list(stream)

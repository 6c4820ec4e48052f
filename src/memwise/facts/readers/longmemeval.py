"""Reader for the official LongMemEval JSON (``longmemeval_s/m/oracle``): a list of questions.

Each question comes with its own haystack of chat sessions, so each becomes one
:class:`Conversation` holding one :class:`Question`; both take the ``question_id`` as id.

Choices:

* Turn ids are ``<session_id>:<index>`` (0-based within the session); speakers are the roles.
* Evidence is the turns marked ``has_answer``; when a question marks none, every turn of its
  ``answer_session_ids`` sessions. ``metadata["evidence_source"]`` says which rule applied.
* The released LongMemEval-S repeats a few filler sessions within one haystack (same id, same content,
  different date). Both copies are kept, as the benchmark presents them; the repeat's id gets a
  ``#2`` suffix so turn ids stay unique, and ``metadata["duplicate_session_ids"]`` lists the ids.
* Question ids ending in ``_abs`` are abstention questions (the answer is not in the haystack):
  ``metadata["abstention"]`` is true.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from memwise._datafile import DEFAULT_MAX_TURN_CHARS
from memwise.facts.readers._common import (
    ConversationStream,
    ErrorMode,
    PathLike,
    RecordError,
    as_datetime,
    as_dict,
    as_flag,
    as_list,
    as_str,
    as_str_list,
    as_text,
    as_turn_text,
    join,
    require,
    stream_json_array,
)
from memwise.facts.readers._jsonstream import DEFAULT_CHUNK
from memwise.facts.types import Conversation, Question, Session, Turn

_TURN_FIELDS = ("role", "content", "has_answer")
_PARALLEL = ("haystack_dates", "haystack_session_ids", "haystack_sessions")


def _session(raw: Any, where: str, session_id: str, raw_date: str, timestamp: datetime, max_turn: int) -> Session:
    turns = []
    for i, raw_turn in enumerate(as_list(raw, where)):
        at = join(where, i)
        turn = as_dict(raw_turn, at)
        role = as_str(require(turn, "role", at), join(at, "role"))
        content = as_turn_text(require(turn, "content", at), join(at, "content"), max_turn)
        metadata = {key: value for key, value in turn.items() if key not in _TURN_FIELDS}
        if turn.get("has_answer") is not None:
            metadata["has_answer"] = as_flag(turn["has_answer"], join(at, "has_answer"))
        turns.append(Turn(f"{session_id}:{i}", role, content, session_id, i, timestamp, metadata))
    return Session(session_id, tuple(turns), timestamp, raw_date)


def _haystack(record: dict[str, Any], max_turn: int) -> tuple[list[Session], list[str], list[str]]:
    """Return the sessions, each session's id as the file gives it, and the ids that repeat."""
    dates = as_str_list(require(record, "haystack_dates", ""), "haystack_dates")
    ids = as_str_list(require(record, "haystack_session_ids", ""), "haystack_session_ids")
    raw_sessions = as_list(require(record, "haystack_sessions", ""), "haystack_sessions")
    lengths = (len(dates), len(ids), len(raw_sessions))
    if len(set(lengths)) != 1:
        counts = ", ".join(f"{name}={n}" for name, n in zip(_PARALLEL, lengths, strict=True))
        raise RecordError("haystack_sessions", f"parallel lists differ in length ({counts})")
    sessions: list[Session] = []
    seen: dict[str, int] = {}
    duplicates: list[str] = []
    for i, (raw_date, original, raw) in enumerate(zip(dates, ids, raw_sessions, strict=True)):
        seen[original] = seen.get(original, 0) + 1
        session_id = original if seen[original] == 1 else f"{original}#{seen[original]}"
        if seen[original] == 2:
            duplicates.append(original)
        timestamp = as_datetime(raw_date, join("haystack_dates", i))
        sessions.append(_session(raw, join("haystack_sessions", i), session_id, raw_date, timestamp, max_turn))
    return sessions, ids, duplicates


def longmemeval_conversation(record: Any, *, max_turn_chars: int = DEFAULT_MAX_TURN_CHARS) -> Conversation:
    """Convert one decoded LongMemEval question; raises :class:`RecordError` naming the field at fault."""
    item = as_dict(record, "record")
    question_id = as_str(require(item, "question_id", ""), "question_id")
    question_type = as_str(require(item, "question_type", ""), "question_type")
    text = as_str(require(item, "question", ""), "question")
    answer = as_text(require(item, "answer", ""), "answer")
    question_date = as_datetime(require(item, "question_date", ""), "question_date")
    answer_sessions = as_str_list(require(item, "answer_session_ids", ""), "answer_session_ids")
    sessions, original_ids, duplicates = _haystack(item, max_turn_chars)

    evidence = tuple(t.id for s in sessions for t in s.turns if t.metadata.get("has_answer"))
    source = "has_answer"
    if not evidence:
        wanted = set(answer_sessions)
        evidence = tuple(
            t.id for s, orig in zip(sessions, original_ids, strict=True) if orig in wanted for t in s.turns
        )
        source = "answer_sessions" if evidence else "none"
    metadata = {
        "abstention": question_id.endswith("_abs"),
        "answer_session_ids": tuple(answer_sessions),
        "evidence_source": source,
    }
    question = Question(question_id, text, answer, question_type, evidence, question_date, metadata)
    speakers = tuple(dict.fromkeys(t.speaker for s in sessions for t in s.turns))
    conversation_metadata = {
        "source": "longmemeval",
        "question_type": question_type,
        "duplicate_session_ids": tuple(duplicates),
    }
    return Conversation(question_id, tuple(sessions), (question,), speakers, conversation_metadata)


def iter_longmemeval(
    path: PathLike, *, errors: ErrorMode = "raise", chunk_size: int = DEFAULT_CHUNK
) -> ConversationStream:
    """Stream a LongMemEval file one question (and its haystack) at a time; LongMemEval-M is gigabytes."""

    def convert(record: Any, max_turn: int) -> Conversation:
        return longmemeval_conversation(record, max_turn_chars=max_turn)

    return stream_json_array(path, convert, id_key="question_id", errors=errors, chunk_size=chunk_size)


def read_longmemeval(path: PathLike) -> list[Conversation]:
    """Read a whole LongMemEval file, failing on the first malformed question."""
    with iter_longmemeval(path) as stream:
        return list(stream)

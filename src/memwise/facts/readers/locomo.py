"""Reader for the official LoCoMo JSON (``locomo10.json``): a list of samples, one conversation each.

Choices, each driven by what the real file contains:

* Photos: 1-in-5 turns carry a ``blip_caption`` (and often ``img_url``/``query``). The caption is part
  of what was communicated and questions ask about it ("the bowl in the photo"), so by default it is
  appended to ``Turn.text`` as ``[shares a photo: <caption>]``; the untouched utterance stays in
  ``metadata["raw_text"]`` and every extra turn field is kept in metadata. Pass ``render_photos=False``
  for the bare text.
* Evidence: a few references are malformed (``"D8:6; D9:17"`` in one string, ``"D:11:26"``) or point
  at turns that do not exist (``"D10:19"`` in a 16-turn session, a bare ``"D"``). References are split
  and normalised to ``D<session>:<turn>``; those that still match no turn are left out of
  ``Question.evidence`` and listed in ``metadata["unresolved_evidence"]``; the conversation counts
  them in ``metadata["unresolved_evidence_count"]``.
* Answers: category 5 (adversarial) questions usually only have ``adversarial_answer``; that becomes
  the answer, and ``metadata["adversarial"]`` is true for every category 5 question. Numeric answers
  (``2022``) become strings.
* ``session_N_date_time`` keys with no ``session_N`` (conv-26 lists 35 dates for 19 sessions) are
  ignored and counted in ``metadata["unused_session_dates"]``.
* LoCoMo has no per-question date, so ``Question.question_date`` is ``None``.
"""

from __future__ import annotations

import re
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

_SESSION_KEY = re.compile(r"session_(\d+)")
_DATE_KEY = re.compile(r"session_(\d+)_date_time")
_EVIDENCE_SPLIT = re.compile(r"[;,\s]+")
_EVIDENCE_ID = re.compile(r"D:?(\d+):(\d+)", re.IGNORECASE)
_TURN_FIELDS = ("speaker", "dia_id", "text")
CATEGORIES = frozenset(range(1, 6))
ADVERSARIAL = 5


def normalise_evidence(refs: list[str]) -> list[str]:
    """Split and canonicalise raw evidence references; unrecognised tokens pass through unchanged."""
    out: list[str] = []
    for ref in refs:
        for token in _EVIDENCE_SPLIT.split(ref.strip()):
            if not token:
                continue
            match = _EVIDENCE_ID.fullmatch(token)
            canonical = f"D{int(match[1])}:{int(match[2])}" if match else token
            if canonical not in out:
                out.append(canonical)
    return out


def _turn(raw: Any, where: str, session_id: str, index: int, timestamp: datetime, render: bool, max_turn: int) -> Turn:
    record = as_dict(raw, where)
    speaker, dia_id = (as_str(require(record, key, where), join(where, key)) for key in ("speaker", "dia_id"))
    text = as_turn_text(require(record, "text", where), join(where, "text"), max_turn)
    metadata = {key: value for key, value in record.items() if key not in _TURN_FIELDS}
    caption = metadata.get("blip_caption")
    if caption is not None:
        caption = as_str(caption, join(where, "blip_caption"))
        if render:
            metadata["raw_text"] = text
            text = f"{text} [shares a photo: {caption}]"
    return Turn(dia_id, speaker, text, session_id, index, timestamp, metadata)


def _sessions(conversation: dict[str, Any], render: bool, max_turn: int) -> tuple[list[Session], int]:
    numbers = sorted(int(m[1]) for key in conversation if (m := _SESSION_KEY.fullmatch(key)))
    dated = {int(m[1]) for key in conversation if (m := _DATE_KEY.fullmatch(key))}
    sessions: list[Session] = []
    seen: set[str] = set()
    for number in numbers:
        key, date_key = f"session_{number}", f"session_{number}_date_time"
        raw_date = as_str(require(conversation, date_key, "conversation"), join("conversation", date_key))
        timestamp = as_datetime(raw_date, join("conversation", date_key))
        where = join("conversation", key)
        turns = []
        for i, raw in enumerate(as_list(conversation[key], where)):
            turn = _turn(raw, join(where, i), key, i, timestamp, render, max_turn)
            if turn.id in seen:
                raise RecordError(join(join(where, i), "dia_id"), f"duplicate dia_id {turn.id!r}")
            seen.add(turn.id)
            turns.append(turn)
        sessions.append(Session(key, tuple(turns), timestamp, raw_date))
    return sessions, len(dated - set(numbers))


def _question(raw: Any, index: int, sample_id: str, turn_ids: set[str]) -> Question:
    where = join("qa", index)
    record = as_dict(raw, where)
    text = as_str(require(record, "question", where), join(where, "question"))
    category = require(record, "category", where)
    if isinstance(category, bool) or category not in CATEGORIES:
        raise RecordError(join(where, "category"), f"expected an integer 1-5, got {category!r}")
    if record.get("answer") is not None:
        answer = as_text(record["answer"], join(where, "answer"))
    elif record.get("adversarial_answer") is not None:
        answer = as_text(record["adversarial_answer"], join(where, "adversarial_answer"))
    else:
        raise RecordError(where, "missing required field: neither 'answer' nor 'adversarial_answer'")
    refs = normalise_evidence(as_str_list(record.get("evidence", []), join(where, "evidence")))
    metadata: dict[str, Any] = {"adversarial": category == ADVERSARIAL}
    if record.get("adversarial_answer") is not None:
        metadata["adversarial_answer"] = as_text(record["adversarial_answer"], join(where, "adversarial_answer"))
    unresolved = tuple(ref for ref in refs if ref not in turn_ids)
    if unresolved:
        metadata["unresolved_evidence"] = unresolved
    evidence = tuple(ref for ref in refs if ref in turn_ids)
    return Question(f"{sample_id}:q{index}", text, answer, str(category), evidence, None, metadata)


def locomo_conversation(
    record: Any, *, render_photos: bool = True, max_turn_chars: int = DEFAULT_MAX_TURN_CHARS
) -> Conversation:
    """Convert one decoded LoCoMo sample; raises :class:`RecordError` naming the field at fault."""
    sample = as_dict(record, "record")
    sample_id = as_str(require(sample, "sample_id", ""), "sample_id")
    conversation = as_dict(require(sample, "conversation", ""), "conversation")
    speakers = tuple(
        as_str(require(conversation, key, "conversation"), join("conversation", key))
        for key in ("speaker_a", "speaker_b")
    )
    sessions, unused_dates = _sessions(conversation, render_photos, max_turn_chars)
    turn_ids = {turn.id for session in sessions for turn in session.turns}
    questions = tuple(
        _question(raw, i, sample_id, turn_ids) for i, raw in enumerate(as_list(require(sample, "qa", ""), "qa"))
    )
    unresolved = sum(len(q.metadata.get("unresolved_evidence", ())) for q in questions)
    metadata = {"source": "locomo", "unresolved_evidence_count": unresolved, "unused_session_dates": unused_dates}
    return Conversation(sample_id, tuple(sessions), questions, speakers, metadata)


def iter_locomo(
    path: PathLike, *, errors: ErrorMode = "raise", render_photos: bool = True, chunk_size: int = DEFAULT_CHUNK
) -> ConversationStream:
    """Stream the conversations of a LoCoMo file, decoding one sample at a time."""

    def convert(record: Any, max_turn: int) -> Conversation:
        return locomo_conversation(record, render_photos=render_photos, max_turn_chars=max_turn)

    return stream_json_array(path, convert, id_key="sample_id", errors=errors, chunk_size=chunk_size)


def read_locomo(path: PathLike, *, render_photos: bool = True) -> list[Conversation]:
    """Read a whole LoCoMo file, failing on the first malformed sample."""
    with iter_locomo(path, render_photos=render_photos) as stream:
        return list(stream)

"""Memory units: how turns and extracted facts become store records, and how records read in prompts.

A unit's id is derived from its scope and source, so ingesting the same conversation twice (a retry
after a crash, a resumed run) writes nothing new instead of duplicating it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime

from memwise.facts._text import day_label
from memwise.facts.types import Turn
from memwise.store.base import Record

TURN = "turn"
FACT = "fact"


def unit_id(*parts: str | None) -> str:
    """A stable id from the unit's scope and source parts."""
    blob = "\x1f".join(p or "" for p in parts)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


def to_epoch(when: datetime | None) -> float | None:
    """Seconds since the epoch; naive datetimes (dataset wall-clock times) are read as UTC.

    Reading them as UTC rather than local time keeps a store file's timestamps the same on every machine.
    """
    if when is None:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def from_epoch(ts: float) -> datetime:
    """The inverse of :func:`to_epoch`: a naive wall-clock datetime."""
    return datetime.fromtimestamp(ts, tz=UTC).replace(tzinfo=None)


def index_text_for_turn(turn: Turn) -> str:
    """What a turn is embedded and full-text indexed under: session day, speaker, utterance.

    A bare utterance ("I went yesterday, it was so powerful") does not say who spoke or when;
    questions nearly always name the person and often the time. ``turn.text`` already carries a
    photo caption when the reader rendered one.

    Example:
        >>> index_text_for_turn(Turn("D1:3", "Caroline", "I went to a support group.", "s1", 2,
        ...                          timestamp=datetime(2023, 5, 8, 13, 56)))
        '[8 May 2023] Caroline: I went to a support group.'
    """
    prefix = f"[{day_label(turn.timestamp)}] " if turn.timestamp is not None else ""
    return f"{prefix}{turn.speaker}: {turn.text}"


def turn_record(
    turn: Turn,
    *,
    conversation_id: str,
    user_id: str,
    agent_id: str | None = None,
    run_id: str | None = None,
    text: str | None = None,
) -> Record:
    """One turn as a memory unit (mode ``turns``): ``Speaker: utterance``, timestamp and source id kept.

    The speaker is part of the shown text because an answer needs to know who said it; the session
    day is added only to the index text, since prompts show the timestamp on their own.
    """
    return Record(
        id=unit_id(user_id, agent_id, run_id, conversation_id, TURN, turn.id),
        kind=TURN,
        text=f"{turn.speaker}: {turn.text}" if text is None else text,
        index_text=index_text_for_turn(turn),
        user_id=user_id,
        agent_id=agent_id,
        run_id=run_id,
        ts=to_epoch(turn.timestamp),
        metadata={
            "speaker": turn.speaker,
            "conversation_id": conversation_id,
            "session_id": turn.session_id,
            "source_ids": [turn.id],
            "timestamp": turn.timestamp.isoformat() if turn.timestamp else None,
        },
    )


def fact_record(
    text: str,
    *,
    speaker: str,
    source_ids: Sequence[str],
    timestamp: datetime | None,
    conversation_id: str,
    session_id: str,
    user_id: str,
    agent_id: str | None = None,
    run_id: str | None = None,
    ordinal: int = 0,
) -> Record:
    """One extracted fact as a memory unit (mode ``facts``)."""
    return Record(
        id=unit_id(user_id, agent_id, run_id, conversation_id, FACT, ",".join(source_ids), str(ordinal), text),
        kind=FACT,
        text=text,
        index_text=f"[{day_label(timestamp)}] {text}" if timestamp is not None else None,
        user_id=user_id,
        agent_id=agent_id,
        run_id=run_id,
        ts=to_epoch(timestamp),
        metadata={
            "speaker": speaker,
            "conversation_id": conversation_id,
            "session_id": session_id,
            "source_ids": list(source_ids),
            "timestamp": timestamp.isoformat() if timestamp else None,
        },
    )


def render_for_prompt(record: Record) -> str:
    """``<timestamp> <weekday> <text>``, as answer prompts show a memory.

    Source ids are never shown: they are the dataset's own (LongMemEval names its evidence sessions
    ``answer_...``), so printing them would tell the model which fragments are the gold evidence. A
    prompt numbers its fragments instead and the caller keeps each number's record id.

    Example:
        >>> r = Record(text="Caroline: I went to a support group.", ts=to_epoch(datetime(2023, 5, 8, 13, 56)),
        ...            metadata={"source_ids": ["answer_ab12_1:3"]})
        >>> render_for_prompt(r)
        '2023-05-08 13:56 Monday Caroline: I went to a support group.'
    """
    parts: list[str] = []
    if record.ts is not None:
        parts.append(from_epoch(record.ts).strftime("%Y-%m-%d %H:%M %A"))
    parts.append(record.text)
    return " ".join(parts)

r"""Memory units: how turns and extracted facts become store records, and how records read in prompts.

A unit's id is derived from its scope, its source and what was said, so ingesting the same conversation
twice (a retry after a crash, a resumed run) writes nothing new instead of duplicating it, while a turn
id that comes back with other words is a new unit, never mistaken for the old one.

Stores written before ids were built by :func:`unit_id`'s structured encoding (parts joined with
``"\x1f"``, ``None`` read as ``""``) keep their old ids; nothing migrates them. Re-ingesting a
conversation into such a store finds no receipt under the new ids and writes it again beside the old
units; start a fresh store to avoid the duplicates.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Sequence
from datetime import UTC, datetime

from memwise.exceptions import ConfigError
from memwise.facts._text import day_label
from memwise.facts.types import Session, Turn
from memwise.store.base import Record

TURN = "turn"
FACT = "fact"

IdPart = str | None | Sequence[str]


def unit_id(*parts: IdPart) -> str:
    r"""A stable id from the unit's scope and source parts, distinct for every distinct list of parts.

    The parts are hashed as one JSON array, not joined by a separator: no text inside a part can shift
    a boundary (``("alice", "\x1fC")`` and ``("alice\x1f", "C")`` differ), ``None`` differs from
    ``""``, and a sequence part (a fact's source ids) stays a list rather than text that could also
    be read as one id with a comma in it.

    Example:
        >>> unit_id("alice", None) == unit_id("alice", "")
        False
    """
    encoded = [p if p is None or isinstance(p, str) else list(p) for p in parts]
    blob = json.dumps(encoded, ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("ascii")).hexdigest()[:32]


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when is not None else None


def session_digest(session: Session) -> str:
    """A digest of everything of a session that its units keep: ids, speakers, words and times.

    The ingest receipt is keyed by it, so a session seen before (same content) is skipped without a
    model call, while new or changed content under a known conversation or session id is stored.
    """
    turns = [[t.id, t.session_id, t.speaker, t.text, _iso(t.timestamp)] for t in session.turns]
    return unit_id(session.id, _iso(session.timestamp), json.dumps(turns, ensure_ascii=True))


def check_scope_id(name: str, value: object, *, optional: bool = False) -> None:
    r"""Refuse a scope id a store could not keep apart from another.

    Refused: not a string, empty, or with a control character (ids are compared, printed and
    logged; a ``\x1f`` or a newline inside one is always a caller's bug, not a name).

    ``optional`` ids (``agent_id``, ``run_id``) may be None, meaning "not scoped by this"; an empty
    string would be a second spelling of the same thing and is refused too.
    """
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a string{' or None' if optional else ''}, got {type(value).__name__}")
    if not value:
        hint = "pass None to leave it unset" if optional else "pass a non-empty id"
        raise ConfigError(f"{name} is an empty string: {hint}")
    bad = next((ch for ch in value if unicodedata.category(ch) == "Cc"), None)
    if bad is not None:
        raise ConfigError(f"{name} {value!r} contains the control character {bad!r}; use printable characters only")


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
    # The words and time are part of the id: a turn id reused with other words is another unit.
    said = (turn.id, turn.session_id, turn.speaker, turn.text, _iso(turn.timestamp))
    return Record(
        id=unit_id(user_id, agent_id, run_id, conversation_id, TURN, *said),
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
    origin: str | None = None,
) -> Record:
    """One extracted fact as a memory unit (mode ``facts``).

    ``origin`` is the :func:`session_digest` of the session it was extracted from, part of the id so
    the same sentence drawn from a different telling of a session (its id reused with other words) is
    kept as its own unit.
    """
    return Record(
        id=unit_id(user_id, agent_id, run_id, conversation_id, FACT, origin, list(source_ids), str(ordinal), text),
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

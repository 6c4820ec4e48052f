"""The records every conversation reader produces and every ingest mode consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class Turn:
    """One utterance. ``id`` is the dataset's own id (LoCoMo ``dia_id``) or ``<session>:<index>``."""

    id: str
    speaker: str
    text: str
    session_id: str
    index: int
    timestamp: datetime | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Session:
    """Consecutive turns sharing one session timestamp."""

    id: str
    turns: tuple[Turn, ...]
    timestamp: datetime | None = None
    raw_timestamp: str | None = None


@dataclass(frozen=True, slots=True)
class Question:
    """A question asked about a conversation, with its gold answer and evidence turn ids."""

    id: str
    question: str
    answer: str
    category: str
    evidence: tuple[str, ...] = ()
    question_date: datetime | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Conversation:
    """One conversation (LoCoMo sample, LongMemEval haystack, or a JSONL group of sessions)."""

    id: str
    sessions: tuple[Session, ...]
    questions: tuple[Question, ...] = ()
    speakers: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)

    def turns(self) -> list[Turn]:
        """All turns in order."""
        return [t for s in self.sessions for t in s.turns]

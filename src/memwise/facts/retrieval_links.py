"""Index-time data of the hybrid retriever: the neighbour links and metadata keys each turn record carries.

A turn's neighbours (up to ``window`` each side, same session, nearest first) are written into its
metadata when it is stored, so the retriever's context step follows ids without knowing how they are
made; each record also gets its entity keys (:mod:`memwise.facts.entities`). Links never cross a
session: a new session is a new topic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from memwise.exceptions import ConfigError
from memwise.facts.entities import ENTITIES, extract_entities
from memwise.facts.types import Conversation
from memwise.facts.units import index_text_for_turn, turn_record
from memwise.store.base import Record

CONTEXT_BEFORE = "context_before"
"""Metadata key: ids of the preceding turns of the same session, nearest first."""
CONTEXT_AFTER = "context_after"
"""Metadata key: ids of the following turns of the same session, nearest first."""
SPEAKER = "speaker"
"""Metadata key: who said the turn (written by :func:`memwise.facts.units.turn_record`)."""
SESSION = "session_id"
"""Metadata key: the session a turn belongs to (written by :func:`memwise.facts.units.turn_record`)."""

Links = tuple[tuple[str, ...], tuple[str, ...]]

render_turn_for_index = index_text_for_turn


def link_sessions(records: Sequence[Record], window: int = 2) -> list[Record]:
    """:func:`link_context` applied within each session (``metadata["session_id"]``), order kept.

    Units of different sessions never link: a new session is a new topic.
    """
    groups: dict[tuple[object, object], list[int]] = {}
    for i, record in enumerate(records):
        key = (record.metadata.get("conversation_id"), record.metadata.get("session_id"))
        groups.setdefault(key, []).append(i)
    out = list(records)
    for rows in groups.values():
        for row, linked in zip(rows, link_context([records[i] for i in rows], window), strict=True):
            out[row] = linked
    return out


def link_context(records: Sequence[Record], window: int = 2) -> list[Record]:
    """Copies of one session's records (in order) with the ids of up to ``window`` neighbours each side.

    Each copy also carries its entity keys (:func:`~memwise.facts.entities.extract_entities`), for
    the entity step.
    """
    if window < 0:
        raise ConfigError(f"link_context: window must be >= 0, got {window}")
    ids = [record.id for record in records]
    out: list[Record] = []
    for i, record in enumerate(records):
        before = ids[max(0, i - window) : i][::-1]
        after = ids[i + 1 : i + 1 + window]
        entities = list(extract_entities(record.indexed_text))
        metadata = {**record.metadata, CONTEXT_BEFORE: before, CONTEXT_AFTER: after, ENTITIES: entities}
        out.append(replace(record, metadata=metadata))
    return out


def index_records(
    conversation: Conversation,
    *,
    user_id: str,
    agent_id: str | None = None,
    run_id: str | None = None,
    window: int = 2,
) -> list[Record]:
    """Every turn of a conversation as a record ready for :meth:`HybridRetriever.index`.

    Text is :func:`render_turn_for_index`; metadata is :func:`~memwise.facts.units.turn_record`'s
    plus the neighbour links the context step follows (links never cross a session boundary: a new
    session is a new topic).
    """
    records: list[Record] = []
    for session in conversation.sessions:
        session_records = [
            turn_record(turn, conversation_id=conversation.id, user_id=user_id, agent_id=agent_id, run_id=run_id)
            for turn in session.turns
        ]
        records.extend(link_context(session_records, window))
    return records


def context_links(record: Record, window: int) -> Links:
    """The record's neighbour ids (before, after; nearest first), cut to ``window`` each side."""
    before = record.metadata.get(CONTEXT_BEFORE) or ()
    after = record.metadata.get(CONTEXT_AFTER) or ()
    return tuple(str(i) for i in before[:window]), tuple(str(i) for i in after[:window])

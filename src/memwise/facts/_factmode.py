"""Mode ``facts`` of the ingest: segments, concurrent extraction, and the units that come out of it.

Only model calls and embeddings happen here; nothing touches the store (the caller writes the whole
conversation at once).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from memwise.embed.base import Embedder, Vectors
from memwise.exceptions import LLMError, ParseError
from memwise.facts.extract import STAGE, FactCheck, extract_facts
from memwise.facts.report import IngestReport
from memwise.facts.segment import SegmentConfig, segment_turns
from memwise.facts.types import Conversation, Session, Turn
from memwise.facts.units import check_scope_id, fact_record, session_digest, turn_record
from memwise.llm.base import ChatModel
from memwise.runs.ledger import Ledger
from memwise.store.base import Record

BackendErrors = Literal["fallback", "raise"]
"""What a failed model call (LLMError) does to an ingest in mode ``facts``: store the raw turns, or stop it."""


@dataclass(frozen=True, slots=True)
class Scope:
    """Whose memory the units are; checked on construction.

    Every unit id and receipt is built from it, and an ill-formed id (empty, or with a control
    character) would be stored for good.
    """

    user_id: str
    agent_id: str | None = None
    run_id: str | None = None

    def __post_init__(self) -> None:
        check_scope_id("user_id", self.user_id)
        check_scope_id("agent_id", self.agent_id, optional=True)
        check_scope_id("run_id", self.run_id, optional=True)


def turn_unit(turn: Turn, conversation_id: str, scope: Scope) -> Record:
    """A turn as a unit: the utterance as said, the speaker in metadata.

    This is ``turn_record``'s layout, which retrieval and the memory API read.
    """
    return turn_record(
        turn, conversation_id=conversation_id, user_id=scope.user_id, agent_id=scope.agent_id, run_id=scope.run_id
    )


async def embed_all(embedder: Embedder, texts: Sequence[str]) -> Vectors:
    """All of a conversation's texts in one call.

    Embedders bound their own work (the remote one splits requests by its ``batch_size`` and sends
    several at once; MiniLM groups passes by length and a token budget), so splitting here only hurt:
    it serialised the remote requests and made MiniLM pad each slice on its own (about 30% more
    padded tokens on LoCoMo with slices of 256).
    """
    if not texts:
        return np.zeros((0, embedder.dim), dtype=np.float32)
    return np.asarray(await embedder.embed(list(texts)), dtype=np.float32)


async def _extract(
    llm: ChatModel, session: Session, turns: list[Turn], ledger: Ledger | None, *, backend_errors: BackendErrors
) -> FactCheck | str:
    """The segment's checked facts, or why there are none.

    Only a misbehaving model (ParseError) or backend (LLMError) turns into a fallback; anything else
    is a bug or a misconfiguration and must stop the ingest. With ``backend_errors="raise"`` a backend
    failure stops it too (nothing is written), for a caller that can simply retry later.
    """
    try:
        return await extract_facts(llm, turns, session_time=session.timestamp or turns[0].timestamp, ledger=ledger)
    except ParseError as exc:  # complete_structured counted it in the ledger already
        return f"unparseable reply: {exc}"
    except LLMError as exc:
        if ledger is not None:
            ledger.record_failure(stage=STAGE, kind="llm_error", detail=str(exc))
        if backend_errors == "raise":
            raise
        return f"model call failed: {exc}"


def session_rows(conv: Conversation) -> list[list[int]]:
    """Per session, the positions of its turns in ``conv.turns()``.

    Rows are found by position, never by turn id: a dataset (or a session id given twice) may repeat a
    turn id with other words, and a lookup by id would give both turns the vector and unit of one.
    """
    out: list[list[int]] = []
    start = 0
    for session in conv.sessions:
        out.append(list(range(start, start + len(session.turns))))
        start += len(session.turns)
    return out


def _segments(conv: Conversation, vectors: Vectors, config: SegmentConfig) -> list[tuple[int, list[int]]]:
    """(session index, turn rows) per topic segment, sessions in order."""
    jobs: list[tuple[int, list[int]]] = []
    for index, rows in enumerate(session_rows(conv)):
        if rows:
            jobs.extend((index, [rows[i] for i in indices]) for indices in segment_turns(vectors[rows], config))
    return jobs


async def plan_facts(
    conv: Conversation,
    turn_units: Sequence[Record],
    turn_vectors: Vectors,
    *,
    llm: ChatModel,
    embedder: Embedder,
    scope: Scope,
    ledger: Ledger | None,
    segmenting: SegmentConfig,
    report: IngestReport,
    backend_errors: BackendErrors = "fallback",
) -> tuple[list[Record], Vectors, list[int]]:
    """Units and vectors for mode ``facts``: extracted facts, or a segment's raw turns where that failed.

    ``turn_units``/``turn_vectors`` are row-aligned with ``conv.turns()``; the turn vectors serve both
    segmentation and the fallback units. The third list says, per unit, the index in ``conv.sessions``
    of the session it came from (the receipt of that session lists it). Counts go into ``report``.
    """
    all_turns = conv.turns()
    jobs = [(index, [all_turns[r] for r in rows], rows) for index, rows in _segments(conv, turn_vectors, segmenting)]
    report.segments = len(jobs)
    try:  # a task group, so the first error that stops the ingest also cancels the calls still running
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(_extract(llm, conv.sessions[i], turns, ledger, backend_errors=backend_errors))
                for i, turns, _ in jobs
            ]
    except ExceptionGroup as errors:
        raise errors.exceptions[0] from None
    outcomes = [task.result() for task in tasks]
    digests = [session_digest(session) for session in conv.sessions]

    records: list[Record] = []
    owners: list[int] = []
    rows: list[int | None] = []  # a fallback turn's vector row, or None for a fact still to embed
    for (index, turns, turn_rows), outcome in zip(jobs, outcomes, strict=True):
        session = conv.sessions[index]
        if isinstance(outcome, FactCheck):
            report.dropped_source_ids += outcome.dropped_source_ids
            report.unsourced_facts += outcome.unsourced
            report.rejected_facts += outcome.rejected
            report.facts += len(outcome.facts)
        if isinstance(outcome, FactCheck) and outcome.facts:
            for ordinal, fact in enumerate(outcome.facts):
                unit = fact_record(
                    fact.text,
                    speaker=fact.speaker,
                    source_ids=fact.source_ids,
                    timestamp=session.timestamp or turns[0].timestamp,
                    conversation_id=conv.id,
                    session_id=session.id,
                    user_id=scope.user_id,
                    agent_id=scope.agent_id,
                    run_id=scope.run_id,
                    ordinal=ordinal,
                    origin=digests[index],
                )
                records.append(unit)
                owners.append(index)
                rows.append(None)
            continue
        report.fallbacks += 1
        span = f"session {session.id}, turns {turns[0].id}..{turns[-1].id}"
        if isinstance(outcome, str):
            report.extraction_failures += 1
            report.failures.append(f"{span}: {outcome[:300]}")
        else:
            report.failures.append(f"{span}: no usable fact in the reply; stored the raw turns")
        for row in turn_rows:
            records.append(turn_units[row])
            owners.append(index)
            rows.append(row)

    fact_texts = [r.indexed_text for r, row in zip(records, rows, strict=True) if row is None]
    fact_vectors = iter(await embed_all(embedder, fact_texts))
    vectors = [next(fact_vectors) if row is None else turn_vectors[row] for row in rows]
    stacked = np.stack(vectors) if vectors else np.zeros((0, embedder.dim), dtype=np.float32)
    return records, stacked, owners

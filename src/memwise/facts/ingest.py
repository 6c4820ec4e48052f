"""Conversations into memory units, all or nothing per conversation.

Every model call and every embedding of a conversation is made first; only then is the conversation
written, in one store transaction. A failure (or a killed process) at any point before the commit
leaves nothing of it in the store, so a re-run never meets half a conversation.

The transaction ends with one *ingest receipt* per session: a bookkeeping record of kind ``"ingest"``
whose metadata lists the units written for that session. It belongs to no user (``user_id`` None; the
scope is in its metadata and its id), has empty text and no vector, so no user-scoped read and no
search ever returns it. Its id hashes the scope, the conversation id, the mode and a digest of the
session's content (:func:`memwise.facts.units.session_digest`), so:

- re-ingesting the same content finds every receipt (and all their units), asks no model and writes
  nothing; without receipts, that would depend on the model repeating itself word for word (fact ids
  hash the fact text);
- a new session under a known conversation id is stored, and the sessions already in are skipped
  (not re-extracted, so never duplicated);
- a session id, or turn id, that comes back with other words is new content and is stored too (the
  words are part of the unit ids), instead of being mistaken for what was said before.

Mode ``turns`` needs no model: every turn is a unit. Mode ``facts`` segments each session by topic,
extracts facts per segment concurrently, and stores those; a segment whose extraction fails, or yields
no usable fact, is stored as its raw turns instead, and counted, so nothing said is ever dropped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from memwise.embed.base import Embedder, Vectors
from memwise.exceptions import ConfigError
from memwise.facts._factmode import BackendErrors, Scope, embed_all, plan_facts, session_rows, turn_unit
from memwise.facts.report import IngestReport, IngestSummary, Mode
from memwise.facts.retrieval_links import CONTEXT_AFTER, CONTEXT_BEFORE, link_context
from memwise.facts.segment import SegmentConfig
from memwise.facts.types import Conversation, Session
from memwise.facts.units import session_digest, unit_id
from memwise.llm.base import ChatModel
from memwise.runs.ledger import Ledger
from memwise.store.base import Record, Store

__all__ = ["RECEIPT", "IngestReport", "IngestSummary", "Mode", "ingest_conversation", "ingest_many", "receipt_id"]

RECEIPT = "ingest"
_WRITE_BATCH = 256


def receipt_id(
    session: Session,
    conversation_id: str,
    mode: Mode,
    *,
    user_id: str,
    agent_id: str | None = None,
    run_id: str | None = None,
) -> str:
    """The id of the receipt an ingest of this session, exactly as it reads now, leaves behind.

    One per conversation, scope and mode.
    """
    return unit_id(RECEIPT, user_id, agent_id, run_id, conversation_id, mode, session_digest(session))


def _receipt(conv: Conversation, session: Session, mode: Mode, scope: Scope, unit_ids: list[str]) -> Record:
    return Record(
        id=receipt_id(session, conv.id, mode, user_id=scope.user_id, agent_id=scope.agent_id, run_id=scope.run_id),
        kind=RECEIPT,
        text="",
        metadata={
            "user_id": scope.user_id,
            "agent_id": scope.agent_id,
            "run_id": scope.run_id,
            "conversation_id": conv.id,
            "session_id": session.id,
            "mode": mode,
            "unit_ids": unit_ids,
            "turns": len(session.turns),
        },
    )


DELETED = "deleted"
"""Metadata flag on a unit its user deleted (``delete``/``delete_all``), as opposed to one that
consolidation or an edit retired: saying the same thing again after a delete must store it again."""


def _already_in(store: Store, rid: str) -> list[str] | None:
    """The units an earlier ingest wrote, if they all still stand.

    That is: its receipt and every unit it lists are still there, and none of them was deleted by
    its user since.
    """
    receipt = store.get(rid)
    if receipt is None:
        return None
    ids: list[str] = receipt.metadata.get("unit_ids", [])
    units = store.get_many(ids)
    if len(units) != len(ids) or any(u.metadata.get(DELETED) for u in units):
        return None
    return ids


def _fresh_ids(store: Store, records: list[Record]) -> dict[str, str]:
    """New ids for records whose id belongs to a unit its user deleted.

    Each is derived from the old id and the deletion, so a re-add is stored again while the deleted
    version stays in history. The ids are looked up together first (one read per record was 10% of
    a conversation's write); only a deleted one is followed, one read per re-add.
    """
    deleted = {r.id for r in store.get_many(dict.fromkeys(r.id for r in records)) if r.metadata.get(DELETED)}
    renamed: dict[str, str] = {}
    for record in records:
        if record.id not in deleted or record.id in renamed:
            continue
        rid = record.id
        while (old := store.get(rid)) is not None and old.metadata.get(DELETED):
            rid = unit_id(rid, "re-added after delete", repr(old.valid_to))
        renamed[record.id] = rid
    return renamed


def _rename(record: Record, renamed: dict[str, str]) -> Record:
    """``record`` under its new id, with its context links and (for a receipt) unit list following."""
    metadata = dict(record.metadata)
    for key in (CONTEXT_BEFORE, CONTEXT_AFTER, "unit_ids"):
        if isinstance(metadata.get(key), list):
            metadata[key] = [renamed.get(i, i) for i in metadata[key]]
    return replace(record, id=renamed.get(record.id, record.id), metadata=metadata)


def _found(store: Store, rids: list[str]) -> list[list[str] | None]:
    return [_already_in(store, rid) for rid in rids]


def _write(
    store: Store, records: list[Record], vectors: Vectors, owners: list[int], receipts: list[Record]
) -> tuple[int, int] | None:
    """Write the new sessions of a conversation in one transaction.

    Returns ``(written, present)``, or None if a concurrent ingest committed all of them first.

    ``owners[i]`` is the index in ``receipts`` of the session that unit ``i`` came from. A session a
    concurrent ingest committed meanwhile is left out with its units (its model may have said other
    words, which must not be stored twice). Units already present (a turn stored earlier by mode
    ``turns``, say) are left as they are, and not re-added: consolidation may have changed their
    metadata since. The first unit per id is written, so content repeated in a conversation can't make
    the write conflict with itself. A unit its user deleted is written again under a new id (the lists
    ``records`` and ``receipts`` are updated in place to say so).
    """
    with store.transaction():
        done = {i for i, receipt in enumerate(receipts) if _already_in(store, receipt.id) is not None}
        if len(done) == len(receipts):
            return None
        renamed = _fresh_ids(store, records)
        if renamed:
            records[:] = [_rename(r, renamed) for r in records]
            receipts[:] = [_rename(r, renamed) for r in receipts]
        first: dict[str, int] = {}
        for i, record in enumerate(records):
            if owners[i] not in done:
                first.setdefault(record.id, i)
        present = {r.id for r in store.get_many(first)}
        fresh = [i for rid, i in first.items() if rid not in present]
        for start in range(0, len(fresh), _WRITE_BATCH):
            chunk = fresh[start : start + _WRITE_BATCH]
            store.add([records[i] for i in chunk], vectors[chunk])
        for i, receipt in enumerate(receipts):
            if i in done:
                continue
            if store.get(receipt.id) is not None:  # an old receipt whose units went missing
                store.delete(receipt.id)
            store.add([receipt])
    return len(fresh), len(present)


def _link(records: list[Record], owners: list[int]) -> list[Record]:
    """Neighbour links for the retriever's context step, within each session (a new session is a new topic)."""
    groups: dict[int, list[int]] = {}
    for i, owner in enumerate(owners):
        groups.setdefault(owner, []).append(i)
    out = list(records)
    for rows in groups.values():
        for row, linked in zip(rows, link_context([records[i] for i in rows]), strict=True):
            out[row] = linked
    return out


async def _ingest(
    conv: Conversation,
    *,
    store: Store,
    embedder: Embedder,
    scope: Scope,
    mode: Mode,
    llm: ChatModel | None,
    ledger: Ledger | None,
    segmenting: SegmentConfig,
    metadata: Mapping[str, Any] | None = None,
    backend_errors: BackendErrors = "fallback",
) -> IngestReport:
    started = time.perf_counter()
    report = IngestReport(conversation_id=conv.id, mode=mode, turns=len(conv.turns()))
    rids = [
        receipt_id(s, conv.id, mode, user_id=scope.user_id, agent_id=scope.agent_id, run_id=scope.run_id)
        for s in conv.sessions
    ]
    found = await asyncio.to_thread(_found, store, rids)
    report.sessions_present = sum(1 for ids in found if ids is not None)
    report.units_present = sum(len(ids) for ids in found if ids is not None)
    report.unit_ids = [uid for ids in found if ids is not None for uid in ids]
    todo = [s for s, n in zip(conv.sessions, found, strict=True) if n is None]
    if not todo:
        report.skipped = bool(conv.sessions)
        report.seconds = time.perf_counter() - started
        return report

    part = replace(conv, sessions=tuple(todo))  # only what is not in the store yet is embedded or extracted
    turn_units = [turn_unit(t, conv.id, scope) for t in part.turns()]
    turn_vectors = await embed_all(embedder, [r.indexed_text for r in turn_units])
    if mode == "turns" or llm is None:
        records, vectors = turn_units, turn_vectors
        owners = [index for index, rows in enumerate(session_rows(part)) for _ in rows]
    else:
        records, vectors, owners = await plan_facts(
            part,
            turn_units,
            turn_vectors,
            llm=llm,
            embedder=embedder,
            scope=scope,
            ledger=ledger,
            segmenting=segmenting,
            report=report,
            backend_errors=backend_errors,
        )
    records = _link(records, owners)
    if metadata:  # the caller's labels on every unit; memwise's own keys win (callers may not use them)
        records = [replace(r, metadata={**metadata, **r.metadata}) for r in records]
    unit_ids: list[list[str]] = [[] for _ in todo]
    for record, owner in zip(records, owners, strict=True):
        unit_ids[owner].append(record.id)
    receipts = [_receipt(conv, s, mode, scope, list(dict.fromkeys(unit_ids[i]))) for i, s in enumerate(todo)]
    # In a worker thread: the write blocks on SQLite's lock, and the event loop must keep serving.
    outcome = await asyncio.to_thread(_write, store, records, vectors, owners, receipts)
    report.unit_ids.extend(dict.fromkeys(r.id for r in records))
    if outcome is None:
        report.skipped = True
        report.sessions_present = len(conv.sessions)
        report.units_present += len({r.id for r in records})
    else:
        written, present = outcome
        report.units_written = written
        report.units_present += present
    report.seconds = time.perf_counter() - started
    return report


def _check(mode: Mode, llm: ChatModel | None) -> None:
    if mode not in ("turns", "facts"):
        raise ConfigError(f"ingest mode must be 'turns' or 'facts', got {mode!r}")
    if mode == "facts" and llm is None:
        raise ConfigError("ingest mode 'facts' extracts facts with a model: pass llm=...")


async def ingest_conversation(
    conv: Conversation,
    *,
    store: Store,
    embedder: Embedder,
    user_id: str,
    mode: Mode = "turns",
    llm: ChatModel | None = None,
    ledger: Ledger | None = None,
    agent_id: str | None = None,
    run_id: str | None = None,
    segmenting: SegmentConfig | None = None,
    metadata: Mapping[str, Any] | None = None,
    backend_errors: BackendErrors = "fallback",
) -> IngestReport:
    """Store one conversation as memory units of ``user_id``, atomically; returns what happened.

    ``metadata`` (already checked by the caller) is merged into every unit written.
    ``backend_errors="raise"`` makes a failed model call (LLMError) stop the ingest with nothing written,
    instead of storing that segment's raw turns: a stored session is never extracted again, so a caller
    that can retry (the memory API's ``add``) should rather fail.
    Extraction calls in flight are bounded by the model backend (its role's ``max_concurrency``).
    Safe to repeat: a conversation already in the store with the same content (same scope and mode) is
    reported as ``skipped`` and costs no model call; one that has gained sessions since has only those
    stored (and only those cost model calls).

    Example:
        >>> report = await ingest_conversation(conv, store=store, embedder=embedder, user_id="u1")  # doctest: +SKIP
        >>> (report.turns, report.units_written)  # doctest: +SKIP
        (42, 42)
    """
    _check(mode, llm)
    return await _ingest(
        conv,
        store=store,
        embedder=embedder,
        scope=Scope(user_id, agent_id, run_id),
        mode=mode,
        llm=llm,
        ledger=ledger,
        segmenting=segmenting or SegmentConfig(),
        metadata=metadata,
        backend_errors=backend_errors,
    )


async def ingest_many(
    convs: Iterable[Conversation],
    *,
    store: Store,
    embedder: Embedder,
    user_id: str | Callable[[Conversation], str],
    mode: Mode = "turns",
    llm: ChatModel | None = None,
    ledger: Ledger | None = None,
    agent_id: str | None = None,
    run_id: str | None = None,
    parallel: int = 4,
    segmenting: SegmentConfig | None = None,
    on_report: Callable[[IngestReport], None] | None = None,
) -> list[IngestReport]:
    """Ingest a stream of conversations, ``parallel`` at a time, each one atomic; reports in input order.

    ``convs`` is consumed lazily, so a reader's iterator holds about ``parallel`` conversations in
    memory. ``user_id`` may be a function of the conversation (LoCoMo: one user per conversation).
    The model backend bounds extraction calls across all conversations together (``max_concurrency``
    of its role, one setting for every caller). The first error stops
    the run and is raised as itself; conversations committed before it stay, and a re-run skips them.
    ``IngestSummary.of(reports)`` totals the run.
    """
    _check(mode, llm)
    if parallel < 1:
        raise ConfigError(f"parallel must be >= 1, got {parallel}")
    config = segmenting or SegmentConfig()
    source = enumerate(convs)
    results: dict[int, IngestReport] = {}

    async def worker() -> None:
        for index, conv in source:  # one shared iterator: each worker takes the next conversation
            scope = Scope(user_id(conv) if callable(user_id) else user_id, agent_id, run_id)
            report = await _ingest(
                conv,
                store=store,
                embedder=embedder,
                scope=scope,
                mode=mode,
                llm=llm,
                ledger=ledger,
                segmenting=config,
            )
            results[index] = report
            if on_report is not None:
                on_report(report)

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(parallel):
                group.create_task(worker())
    except ExceptionGroup as errors:
        raise errors.exceptions[0] from None
    return [results[i] for i in sorted(results)]

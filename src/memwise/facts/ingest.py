"""Conversations into memory units, all or nothing per conversation.

Every model call and every embedding of a conversation is made first; only then is the conversation
written, in one store transaction. A failure (or a killed process) at any point before the commit
leaves nothing of it in the store, so a re-run never meets half a conversation.

The transaction ends with an *ingest receipt*: a bookkeeping record of kind ``"ingest"`` whose
metadata lists the units written. It belongs to no user (``user_id`` None; the scope is in its
metadata and its id), has empty text and no vector, so no user-scoped read and no search ever returns
it. A re-ingest that finds the receipt and all its units asks no model and writes nothing. Without it,
re-ingest would depend on the model repeating itself word for word (fact ids hash the fact text).

Mode ``turns`` needs no model: every turn is a unit. Mode ``facts`` segments each session by topic,
extracts facts per segment concurrently, and stores those; a segment whose extraction fails, or yields
no usable fact, is stored as its raw turns instead, and counted, so nothing said is ever dropped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

from memwise.embed.base import Embedder, Vectors
from memwise.exceptions import ConfigError
from memwise.facts._factmode import Scope, embed_all, plan_facts, turn_unit
from memwise.facts.report import IngestReport, IngestSummary, Mode
from memwise.facts.retrieve import link_sessions
from memwise.facts.segment import SegmentConfig
from memwise.facts.types import Conversation
from memwise.facts.units import unit_id
from memwise.llm.base import ChatModel
from memwise.runs.ledger import Ledger
from memwise.store.base import Record
from memwise.store.sqlite import SQLiteStore

__all__ = ["RECEIPT", "IngestReport", "IngestSummary", "Mode", "ingest_conversation", "ingest_many", "receipt_id"]

RECEIPT = "ingest"
_WRITE_BATCH = 256


def receipt_id(
    conversation_id: str, mode: Mode, *, user_id: str, agent_id: str | None = None, run_id: str | None = None
) -> str:
    """The id of the receipt an ingest of this conversation, scope and mode leaves behind."""
    return unit_id(user_id, agent_id, run_id, conversation_id, RECEIPT, mode)


def _receipt(conv: Conversation, mode: Mode, scope: Scope, records: list[Record], report: IngestReport) -> Record:
    return Record(
        id=receipt_id(conv.id, mode, user_id=scope.user_id, agent_id=scope.agent_id, run_id=scope.run_id),
        kind=RECEIPT,
        text="",
        metadata={
            "user_id": scope.user_id,
            "agent_id": scope.agent_id,
            "run_id": scope.run_id,
            "conversation_id": conv.id,
            "mode": mode,
            "unit_ids": [r.id for r in records],
            "turns": report.turns,
            "segments": report.segments,
            "fallbacks": report.fallbacks,
            "extraction_failures": report.extraction_failures,
        },
    )


def _already_in(store: SQLiteStore, rid: str) -> int | None:
    """How many units an earlier ingest wrote, if its receipt and every unit it lists are still there."""
    receipt = store.get(rid)
    if receipt is None:
        return None
    ids: list[str] = receipt.metadata.get("unit_ids", [])
    return len(ids) if len(store.get_many(ids)) == len(ids) else None


def _write(store: SQLiteStore, records: list[Record], vectors: Vectors, receipt: Record) -> tuple[int, int] | None:
    """Write a conversation in one transaction: ``(written, present)``, or None if it is in already.

    Units already present (a turn stored earlier by mode ``turns``, say) are left as they are, and not
    re-added: consolidation may have changed their metadata since.
    """
    with store.transaction():
        if _already_in(store, receipt.id) is not None:
            return None  # a concurrent ingest of the same conversation committed first
        present = {r.id for r in store.get_many(r.id for r in records)}
        fresh = [i for i, r in enumerate(records) if r.id not in present]
        for start in range(0, len(fresh), _WRITE_BATCH):
            chunk = fresh[start : start + _WRITE_BATCH]
            store.add([records[i] for i in chunk], vectors[chunk])
        if store.get(receipt.id) is not None:  # an old receipt whose units went missing
            store.delete(receipt.id)
        store.add([receipt])
    return len(fresh), len(present)


def _dedupe(records: list[Record], vectors: Vectors) -> tuple[list[Record], Vectors]:
    """First unit per id: a dataset that repeats a turn id must not make the write conflict with itself."""
    first: dict[str, int] = {}
    for i, record in enumerate(records):
        first.setdefault(record.id, i)
    keep = list(first.values())
    return [records[i] for i in keep], vectors[keep]


async def _ingest(
    conv: Conversation,
    *,
    store: SQLiteStore,
    embedder: Embedder,
    scope: Scope,
    mode: Mode,
    llm: ChatModel | None,
    ledger: Ledger | None,
    limiter: asyncio.Semaphore,
    segmenting: SegmentConfig,
) -> IngestReport:
    started = time.perf_counter()
    turns = conv.turns()
    report = IngestReport(conversation_id=conv.id, mode=mode, turns=len(turns))
    rid = receipt_id(conv.id, mode, user_id=scope.user_id, agent_id=scope.agent_id, run_id=scope.run_id)
    found = await asyncio.to_thread(_already_in, store, rid)
    if found is not None:
        report.skipped, report.units_present = True, found
        report.seconds = time.perf_counter() - started
        return report

    turn_units = [turn_unit(t, conv.id, scope) for t in turns]
    turn_vectors = await embed_all(embedder, [r.index_text or r.text for r in turn_units])
    if mode == "turns" or llm is None:
        records, vectors = turn_units, turn_vectors
    else:
        records, vectors = await plan_facts(
            conv,
            turn_units,
            turn_vectors,
            llm=llm,
            embedder=embedder,
            scope=scope,
            limiter=limiter,
            ledger=ledger,
            segmenting=segmenting,
            report=report,
        )
    records, vectors = _dedupe(records, vectors)
    records = link_sessions(records)  # neighbour links for the retriever's context step
    receipt = _receipt(conv, mode, scope, records, report)
    # In a worker thread: the write blocks on SQLite's lock, and the event loop must keep serving.
    outcome = await asyncio.to_thread(_write, store, records, vectors, receipt)
    if outcome is None:
        report.skipped, report.units_present = True, len(records)
    else:
        report.units_written, report.units_present = outcome
    report.seconds = time.perf_counter() - started
    return report


def _check(mode: Mode, llm: ChatModel | None, concurrency: int) -> None:
    if mode not in ("turns", "facts"):
        raise ConfigError(f"ingest mode must be 'turns' or 'facts', got {mode!r}")
    if mode == "facts" and llm is None:
        raise ConfigError("ingest mode 'facts' extracts facts with a model: pass llm=...")
    if concurrency < 1:
        raise ConfigError(f"concurrency must be >= 1, got {concurrency}")


async def ingest_conversation(
    conv: Conversation,
    *,
    store: SQLiteStore,
    embedder: Embedder,
    user_id: str,
    mode: Mode = "turns",
    llm: ChatModel | None = None,
    ledger: Ledger | None = None,
    agent_id: str | None = None,
    run_id: str | None = None,
    concurrency: int = 8,
    segmenting: SegmentConfig | None = None,
) -> IngestReport:
    """Store one conversation as memory units of ``user_id``, atomically; returns what happened.

    ``concurrency`` bounds the extraction calls in flight. Safe to repeat: a conversation already in
    the store (same scope and mode) is reported as ``skipped`` and costs no model call.

    Example:
        >>> report = await ingest_conversation(conv, store=store, embedder=embedder, user_id="u1")  # doctest: +SKIP
        >>> (report.turns, report.units_written)  # doctest: +SKIP
        (42, 42)
    """
    _check(mode, llm, concurrency)
    return await _ingest(
        conv,
        store=store,
        embedder=embedder,
        scope=Scope(user_id, agent_id, run_id),
        mode=mode,
        llm=llm,
        ledger=ledger,
        limiter=asyncio.Semaphore(concurrency),
        segmenting=segmenting or SegmentConfig(),
    )


async def ingest_many(
    convs: Iterable[Conversation],
    *,
    store: SQLiteStore,
    embedder: Embedder,
    user_id: str | Callable[[Conversation], str],
    mode: Mode = "turns",
    llm: ChatModel | None = None,
    ledger: Ledger | None = None,
    agent_id: str | None = None,
    run_id: str | None = None,
    concurrency: int = 8,
    parallel: int = 4,
    segmenting: SegmentConfig | None = None,
    on_report: Callable[[IngestReport], None] | None = None,
) -> list[IngestReport]:
    """Ingest a stream of conversations, ``parallel`` at a time, each one atomic; reports in input order.

    ``convs`` is consumed lazily, so a reader's iterator holds about ``parallel`` conversations in
    memory. ``user_id`` may be a function of the conversation (LoCoMo: one user per conversation).
    ``concurrency`` bounds extraction calls across all conversations together. The first error stops
    the run and is raised as itself; conversations committed before it stay, and a re-run skips them.
    ``IngestSummary.of(reports)`` totals the run.
    """
    _check(mode, llm, concurrency)
    if parallel < 1:
        raise ConfigError(f"parallel must be >= 1, got {parallel}")
    limiter = asyncio.Semaphore(concurrency)
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
                limiter=limiter,
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

"""Turn benchmark conversations into MetaMem questions: retrieve each question's fragments once, up front.

MetaMem learns how to *use* retrieved fragments, so every rollout of a question must see the same
fragments; retrieving once and storing them makes training reproducible and cheap.

Choices:

* Scope: a conversation is expected to be ingested already under its owner
  (:func:`~memwise.facts.ownership.owner_of`: the dataset's ``user_id``, else the conversation id),
  the rule ``memwise ingest`` and ``bench qa`` use too; each question searches only that user's
  memory. A conversation with no memory at all is an error rather
  than a silent run of questions with no fragments.
* Fragments: the ``top_k`` hits, shown oldest first (undated last) and rendered with
  :func:`~memwise.facts.units.render_for_prompt`, as the answer prompt orders them. A fragment shows
  no dataset id (LongMemEval names its evidence sessions ``answer_...``); the mapping stays in the
  record instead: per fragment, in the same order, its store id in ``metadata["memory_ids"]`` and its
  source turn ids in ``metadata["source_ids"]``.
* Retrieval bound: when the dataset gives a question date, only memories dated at or before it are
  retrieved (later ones do not exist from the question's point of view). LoCoMo gives none, and its
  stand-in date (below) bounds nothing.
* Question date: LongMemEval gives one; it is written in LongMemEval's own form
  (``2023/05/30 (Tue) 23:40``). LoCoMo gives none, and a temporal question still needs a "today":
  the latest session date is used, as that session's own text, and
  ``metadata["question_date_source"]`` says ``"last_session"`` (``"dataset"`` when the dataset gave
  one, ``None`` when neither exists).
* Question type: the canonical name (:func:`~memwise.tasks.question_types.canonical_question_type`):
  LongMemEval's types as they are, LoCoMo categories as words (``"2"`` becomes ``"temporal"``).
  LongMemEval abstention ids keep their ``_abs`` suffix, which is how the judge recognises them.
* LoCoMo's adversarial category 5 is left out unless ``include_adversarial``.
* Memory (``memory=``): ``"memwise"`` ingests turns and retrieves with memwise's hybrid retriever;
  ``"lightmem"`` is the paper's setting (LightMem): facts extracted by the model (ingest mode
  ``facts``), retrieved by plain cosine similarity of the question to each fact (the store's
  ``search_vector``: no BM25, no context, no entity or time steps), kept in rank order and rendered
  ``<timestamp> <weekday> <fact>``. Running both on the same data compares the paper's memory with memwise's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import datetime
from typing import Any, Literal, cast

from memwise.exceptions import ConfigError, DatasetError
from memwise.facts.answer import question_time_bound
from memwise.facts.memory import AsyncMemory
from memwise.facts.ownership import owner_of
from memwise.facts.types import Conversation, Question
from memwise.facts.units import FACT, render_for_prompt
from memwise.metamem.data import MetaQuestion
from memwise.store.base import Filters, ScoredRecord
from memwise.tasks.question_types import canonical_question_type

_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def longmemeval_date(when: datetime) -> str:
    """A datetime in LongMemEval's form, weekday from a fixed table so the process locale cannot change it.

    Example:
        >>> longmemeval_date(datetime(2023, 5, 30, 23, 40))
        '2023/05/30 (Tue) 23:40'
    """
    return f"{when:%Y/%m/%d} ({_WEEKDAYS[when.weekday()]}) {when:%H:%M}"


def question_date_of(conv: Conversation, question: Question) -> tuple[str | None, str | None]:
    """``(date text, source)`` for a question: its own date, else the latest session's, else none."""
    if question.question_date is not None:
        return longmemeval_date(question.question_date), "dataset"
    dated = [(s.timestamp, s) for s in conv.sessions if s.timestamp is not None]
    if not dated:
        return None, None
    when, last = max(dated, key=lambda pair: pair[0])
    return last.raw_timestamp or when.isoformat(), "last_session"


def selected_questions(conv: Conversation, *, include_adversarial: bool) -> list[Question]:
    """The questions of ``conv`` to prepare: LoCoMo's adversarial ones only when asked for."""
    return [q for q in conv.questions if include_adversarial or not q.metadata.get("adversarial")]


MemoryKind = Literal["memwise", "lightmem"]
MEMORY_KINDS: tuple[MemoryKind, ...] = ("memwise", "lightmem")


def check_memory_kind(kind: str) -> MemoryKind:
    """``kind`` if it is a :data:`MemoryKind`, else a ConfigError naming the kinds."""
    if kind not in MEMORY_KINDS:
        raise ConfigError(f"memory must be one of {', '.join(MEMORY_KINDS)}, got {kind!r}")
    return cast(MemoryKind, kind)


def _oldest_first(hits: list[ScoredRecord]) -> list[ScoredRecord]:
    return sorted(hits, key=lambda h: (h.record.ts is None, h.record.ts or 0.0))


async def lightmem_search(memory: AsyncMemory, question: str, *, filters: Filters, top_k: int) -> list[ScoredRecord]:
    """LightMem's retrieval: the ``top_k`` extracted facts by cosine similarity to the question, best first.

    Facts only (a segment whose extraction failed contributes nothing, as in LightMem; the ingest
    report counts such segments), searched in the store's vector index alone.
    """
    [vector] = await memory.embedder.embed([question])
    only_facts = replace(filters, kind=FACT)
    return await asyncio.to_thread(memory.store.search_vector, vector, top_k, only_facts)


def build_meta_question(
    conv: Conversation, question: Question, hits: list[ScoredRecord], *, memory: MemoryKind = "memwise"
) -> MetaQuestion:
    """One :class:`MetaQuestion` from a question and its retrieved hits (pure).

    memwise's hits are shown oldest first, as the answer prompt orders records; LightMem's in rank
    order, as the paper shows them. ``metadata["memory"]`` says which memory produced the fragments.

    Raises:
        DatasetError: an empty gold answer or an unknown question type.
    """
    if not question.answer.strip():
        raise DatasetError(f"question {question.id!r} has an empty gold answer", path=conv.id)
    try:
        question_type = canonical_question_type(question.category)
    except ValueError as exc:
        raise DatasetError(f"question {question.id!r}: {exc}", path=conv.id) from None
    date_text, date_source = question_date_of(conv, question)
    ordered = list(hits) if memory == "lightmem" else _oldest_first(hits)
    metadata: dict[str, Any] = {
        "conversation_id": conv.id,
        "memory": memory,
        "source": conv.metadata.get("source"),
        "category": question.category,
        "question_date_source": date_source,
        "evidence": list(question.evidence),
        "memory_ids": [h.record.id for h in ordered],
        "source_ids": [list(h.record.metadata.get("source_ids") or []) for h in ordered],
        "abstention": bool(question.metadata.get("abstention") or question.metadata.get("adversarial")),
    }
    return MetaQuestion(
        question_id=question.id,
        question=question.question,
        answer=question.answer,
        question_type=question_type,
        question_date=date_text,
        memories=tuple(render_for_prompt(h.record) for h in ordered),
        metadata=metadata,
    )


async def _check_ingested(memory: AsyncMemory, conversations: list[Conversation]) -> None:
    for conv in conversations:
        owner = owner_of(conv)
        if not await memory.get_all(user_id=owner, limit=1):
            raise ConfigError(
                f"conversation {conv.id!r} has no memories under user_id {owner!r}; ingest it first "
                "(ingest_many(..., user_id=owner_of))"
            )


async def prepare_questions(
    conversations: Iterable[Conversation],
    *,
    memory: AsyncMemory,
    top_k: int = 20,
    include_adversarial: bool = False,
    on_done: Callable[[MetaQuestion], None] | None = None,
    kind: MemoryKind = "memwise",
) -> list[MetaQuestion]:
    """Retrieve ``top_k`` fragments for every question, scoped to its conversation's owner, in input order.

    ``kind`` picks the retrieval: memwise's hybrid retriever, or LightMem's plain cosine top-k over facts
    (:func:`lightmem_search`).

    ``on_done`` is called once per prepared question (for a progress bar).

    Raises:
        ConfigError: a bad ``top_k``, or a conversation that was never ingested.
        DatasetError: a repeated question id, an empty gold answer or an unknown question type.

    Example:
        >>> await ingest_many(convs, store=store, embedder=embedder, user_id=owner_of)  # doctest: +SKIP
        >>> questions = await prepare_questions(convs, memory=memory, top_k=20)  # doctest: +SKIP
    """
    if top_k < 1:
        raise ConfigError(f"top_k must be >= 1, got {top_k}")
    check_memory_kind(kind)
    convs = list(conversations)
    items: list[tuple[Conversation, Question]] = []
    seen: dict[str, str] = {}
    for conv in convs:
        for question in selected_questions(conv, include_adversarial=include_adversarial):
            if question.id in seen:
                raise DatasetError(
                    f"question id {question.id!r} also appears in conversation {seen[question.id]!r}", path=conv.id
                )
            seen[question.id] = conv.id
            items.append((conv, question))
    await _check_ingested(memory, [c for c in convs if selected_questions(c, include_adversarial=include_adversarial)])

    async def one(conv: Conversation, question: Question) -> MetaQuestion:
        # Only the dataset's own question date bounds retrieval: LoCoMo's stand-in (the last session) does not.
        filters = Filters(user_id=owner_of(conv), until=question_time_bound(question.question_date), time_field="ts")
        # The embedding backend bounds its own calls in flight; the search itself runs in worker threads.
        if kind == "lightmem":
            hits = await lightmem_search(memory, question.question, filters=filters, top_k=top_k)
        else:
            hits = await memory.retriever.search(question.question, filters=filters, top_k=top_k)
        prepared = build_meta_question(conv, question, hits, memory=kind)
        if on_done is not None:
            on_done(prepared)
        return prepared

    return list(await asyncio.gather(*(one(conv, q) for conv, q in items)))


async def prepare_from_conversations(
    conversations: Iterable[Conversation],
    *,
    memory: AsyncMemory,
    top_k: int = 20,
    on_ingested: Callable[[int], None] | None = None,
    on_done: Callable[[MetaQuestion], None] | None = None,
    kind: MemoryKind = "memwise",
) -> list[MetaQuestion]:
    """Ingest the conversations under their owners, then prepare their questions.

    ``kind="memwise"`` ingests turns (no model call); ``kind="lightmem"`` has ``memory.llm`` extract
    facts (ingest mode ``facts``, calls recorded in ``memory.ledger`` when it has one) and retrieves
    them by cosine only. Keep one database per kind: each search reads every unit of its user.

    Ingesting is idempotent (a conversation already in ``memory`` is skipped), so re-running on the
    same database costs only the retrieval. ``on_ingested`` receives each conversation's turn count as
    it is written; ``on_done`` each prepared question.

    Example:
        >>> memory = AsyncMemory.from_settings(settings, "qs.db", with_llm=False)  # doctest: +SKIP
        >>> questions = await prepare_from_conversations(convs, memory=memory, top_k=20)  # doctest: +SKIP
    """
    from memwise.facts.ingest import ingest_many
    from memwise.store.sqlite import SQLiteStore

    if not isinstance(memory.store, SQLiteStore):
        raise ConfigError(
            f"preparing from conversations ingests them, which needs a SQLite store; got {type(memory.store).__name__}"
        )
    check_memory_kind(kind)
    if kind == "lightmem" and memory.llm is None:
        raise ConfigError("memory 'lightmem' extracts facts with a model: build the memory with llm= (with_llm=True)")
    convs = list(conversations)
    await ingest_many(
        convs,
        store=memory.store,
        embedder=memory.embedder,
        user_id=owner_of,
        mode="facts" if kind == "lightmem" else "turns",
        llm=memory.llm if kind == "lightmem" else None,
        ledger=memory.ledger,
        on_report=(lambda report: on_ingested(report.turns)) if on_ingested is not None else None,
    )
    return await prepare_questions(convs, memory=memory, top_k=top_k, on_done=on_done, kind=kind)

"""AsyncMemory: the factual memory's implementation, every operation scoped to a user but ``reset``.

The names and arguments are mem0's (see :mod:`memwise.facts.memory`, which adds the blocking twin).
Scoping is enforced here and in the store: every read filters on ``user_id`` in SQL or in the vector
mask, and an id that belongs to someone else behaves exactly like an id that does not exist.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from memwise.config import Settings, load_settings
from memwise.embed.base import Embedder
from memwise.exceptions import ConfigError, MemoryNotFoundError, StoreError
from memwise.facts._arguments import (
    check_limit,
    check_offset,
    check_scope,
    check_session_time,
    check_time_range,
    read_scope,
    require_user,
)
from memwise.facts._factmode import BackendErrors
from memwise.facts.answer import (
    Answer,
    AnswerStyle,
    build_answer_messages,
    check_answer_style,
    final_answer,
    format_question_date,
    question_time_bound,
)
from memwise.facts.consolidate import ConsolidationReport
from memwise.facts.consolidate import consolidate as consolidate_units
from memwise.facts.consolidate import history as history_of
from memwise.facts.ingest import DELETED, IngestReport, ingest_conversation
from memwise.facts.messages import Messages, to_conversation
from memwise.facts.parts import build_parts
from memwise.facts.results import (
    MemoryList,
    MetadataFilter,
    SearchResults,
    check_metadata,
    next_version,
    user_metadata,
)
from memwise.facts.spaces import bind_space
from memwise.facts.transfer import export_lines, import_records, parse_export
from memwise.facts.types import Conversation
from memwise.facts.units import check_scope_id, to_epoch
from memwise.llm.base import ChatModel, ChatRequest
from memwise.runs.ledger import Ledger
from memwise.runs.rundir import RunDir
from memwise.store.base import Filters, Record, ScoredRecord, Store

Mode = Literal["turns", "facts"]
"""How ``add`` stores a session: each turn as a unit, or the facts a model extracts from it."""


class Retriever(Protocol):
    """What :class:`AsyncMemory` needs from a retriever."""

    async def search(self, query: str, *, filters: Filters, top_k: int) -> list[ScoredRecord]:
        """The best ``top_k`` records for ``query`` among those ``filters`` allow (a hard limit), best first."""
        ...


def _next_id(record: Record) -> object:
    """The id of the version that replaced ``record`` (None while it is the latest)."""
    return record.metadata.get("superseded_by")


class AsyncMemory:
    """Long-term factual memory for many users in one store (SQLite file or Postgres).

    ``AsyncMemory()`` with no arguments uses the configured settings (``memwise.toml``, ``MEMWISE_*``
    variables) and the store they name, else ``$MEMWISE_HOME/memory.sqlite3``; pass instances to
    choose each part yourself.

    Example:
        >>> from memwise.testing import FakeEmbedder
        >>> from memwise.store.sqlite import SQLiteStore
        >>> import tempfile, pathlib
        >>> mem = AsyncMemory(store=SQLiteStore(pathlib.Path(tempfile.mkdtemp()) / "m.db"), embedder=FakeEmbedder())
        >>> _ = asyncio.run(mem.add("I adopted a beagle called Pepper.", user_id="alice", metadata={"topic": "pets"}))
        >>> hits = asyncio.run(mem.search("dog Pepper", user_id="alice", limit=1, filters={"topic": "pets"}))
        >>> hits.to_dict()["results"][0]["memory"]
        'user: I adopted a beagle called Pepper.'
        >>> asyncio.run(mem.search("dog Pepper", user_id="bob"))
        []
    """

    def __init__(
        self,
        *,
        store: Store | None = None,
        embedder: Embedder | None = None,
        llm: ChatModel | None = None,
        retriever: Retriever | None = None,
        ledger: Ledger | None = None,
        mode: Mode = "turns",
    ) -> None:
        if store is None or embedder is None:
            if store is not None or embedder is not None or llm is not None:
                raise ConfigError(
                    "pass both store= and embedder= (and llm= if you need answers), or none of them to use "
                    "the configured settings"
                )
            store, embedder, llm = build_parts(load_settings(), None, with_llm=True)
            built = True
        else:
            built = False
        try:
            if mode == "facts" and llm is None:
                raise ConfigError("mode 'facts' extracts facts with a model: pass llm=")
            bind_space(store, embedder.name)
        except BaseException:
            if built:  # built here, so closed here; a caller's own store stays the caller's
                store.close()
            raise
        self.store = store
        self.embedder = embedder
        self.llm = llm
        self.ledger = ledger
        self.mode: Mode = mode
        if retriever is None:
            from memwise.facts.retrieve import HybridRetriever

            retriever = HybridRetriever(store=store, embedder=embedder)
        self.retriever = retriever
        self._run: RunDir | None = None

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        path: str | Path | None = None,
        *,
        mode: Mode = "turns",
        run_dir: str | Path | None = None,
        with_llm: bool = True,
    ) -> AsyncMemory:
        """A memory over ``path``, with the configured policy model and embedder.

        ``path`` is a SQLite file or a ``postgresql://`` DSN; by default the ``store`` setting, else
        ``$MEMWISE_HOME/memory.sqlite3``.

        Embeddings of a SQLite memory are cached beside its file; with ``run_dir``, model calls go to
        that run's ledger and are replayed on a re-run.
        """
        store, embedder, llm = build_parts(settings, path, with_llm=with_llm)
        run: RunDir | None = None
        try:
            run = RunDir(run_dir) if run_dir is not None else None
            if run is not None and llm is not None:
                llm = run.record(llm, stage="memory")
            memory = cls(store=store, embedder=embedder, llm=llm, ledger=run.ledger if run else None, mode=mode)
        except BaseException:
            store.close()
            if run is not None:
                run.close()
            raise
        memory._run = run
        return memory

    async def aclose(self) -> None:
        """Close the store, embedder, model and run directory (releasing its lock)."""
        try:
            self.store.close()
            await self.embedder.aclose()
            if self.llm is not None:
                await self.llm.aclose()
        finally:
            if self._run is not None:
                self._run.close()

    # -- writing -------------------------------------------------------------------------------

    async def add(
        self,
        messages: Messages,
        *,
        user_id: str,
        agent_id: str | None = None,
        run_id: str | None = None,
        session_time: datetime | None = None,
        session_id: str | None = None,
        conversation_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        infer: bool | None = None,
    ) -> IngestReport:
        """Remember one session of messages for ``user_id``, atomically (all units or none).

        ``messages`` is one message (a string or a ``{"role", "content"}`` mapping) or a list of them.
        ``metadata`` (flat JSON values) is stored on every memory the add writes, returned with it and
        usable in ``filters``. Adding the same messages again is a no-op; new messages are always
        stored, also under a ``conversation_id`` or ``session_id`` used before (see :func:`to_conversation`).
        ``infer`` is mem0's switch: ``False`` stores the messages as said (mode ``turns``), ``True`` has
        the model extract facts from them (mode ``facts``, which needs ``llm``); by default, this memory's
        ``mode``. The report's ``unit_ids`` name the memories written or found. When extracting, a model
        call that fails (LLMError, after the backend's retries) fails the add with nothing written: retry it.
        """
        check_scope(user_id, agent_id, run_id)
        check_scope_id("conversation_id", conversation_id, optional=True)
        check_scope_id("session_id", session_id, optional=True)
        check_session_time(session_time)
        labels = check_metadata(metadata)
        conv = to_conversation(
            messages,
            conversation_id=conversation_id,
            session_id=session_id,
            session_time=session_time,
            metadata=labels,
        )
        # A failed model call fails the add, with nothing written: the caller can retry, whereas a session
        # stored with raw turns in place of facts would never be extracted again.
        return await self._remember(
            conv,
            user_id=user_id,
            agent_id=agent_id,
            run_id=run_id,
            metadata=labels,
            infer=infer,
            backend_errors="raise",
        )

    async def add_conversation(
        self,
        conv: Conversation,
        *,
        user_id: str,
        agent_id: str | None = None,
        run_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        infer: bool | None = None,
    ) -> IngestReport:
        """Remember a whole conversation (as the dataset readers produce) for ``user_id``.

        Sessions already stored with the same content are skipped; new or changed ones are stored.
        ``infer`` chooses turns (``False``) or extracted facts (``True``) as in :meth:`add`. Unlike
        :meth:`add`, a segment whose model call failed is stored as its raw turns (and counted in the
        report), so a long dataset ingest is not lost to one failing call.
        """
        return await self._remember(
            conv, user_id=user_id, agent_id=agent_id, run_id=run_id, metadata=metadata, infer=infer
        )

    async def _remember(
        self,
        conv: Conversation,
        *,
        user_id: str,
        agent_id: str | None,
        run_id: str | None,
        metadata: Mapping[str, Any] | None,
        infer: bool | None,
        backend_errors: BackendErrors = "fallback",
    ) -> IngestReport:
        if infer is not None and not isinstance(infer, bool):
            raise ConfigError(f"infer must be True, False or None, got {infer!r}")
        mode: Mode = self.mode if infer is None else ("facts" if infer else "turns")
        check_scope(user_id, agent_id, run_id)
        labels = check_metadata(metadata)
        check_scope_id("conversation id", conv.id)
        for session in conv.sessions:
            check_scope_id(f"session id (in conversation {conv.id!r})", session.id)
        return await ingest_conversation(
            conv,
            store=self.store,
            embedder=self.embedder,
            user_id=user_id,
            agent_id=agent_id,
            run_id=run_id,
            mode=mode,
            llm=self.llm,
            ledger=self.ledger,
            metadata=labels,
            backend_errors=backend_errors,
        )

    async def update(
        self, memory_id: str, text: str, *, user_id: str, metadata: Mapping[str, Any] | None = None
    ) -> Record:
        """Replace a memory's text (and, with ``metadata``, its caller metadata).

        The old version is kept, closed at this moment, in its history; the new one gets a new id.
        An edit of a version that is no longer current (edited or deleted meanwhile, also while this
        one was embedding its text) is refused, so a memory never has two current versions.
        """
        old = self._owned(memory_id, user_id)
        if old.valid_to is not None and old.valid_to <= time.time():
            raise self._not_current(memory_id)
        if not isinstance(text, str) or not text.strip():
            raise ConfigError("update() needs the new text as a non-empty string")
        labels = user_metadata(old) if metadata is None else check_metadata(metadata)
        now = time.time()
        new = next_version(old, text, labels=labels, now=now)
        vector = (await self.embedder.embed([new.indexed_text]))[0:1]
        with self.store.transaction():
            # Read again under the write lock: a concurrent edit or delete may have closed it during the embed.
            latest = self.store.get_for_update(old.id)  # locked: another process's edit waits, or went first
            if latest is None or latest.valid_to != old.valid_to or _next_id(latest) != _next_id(old):
                raise self._not_current(memory_id)
            self.store.add([new], vectors=vector)
            self.store.update(old.id, metadata={**latest.metadata, "superseded_by": new.id})
            self.store.invalidate(old.id, at=now)
        return new

    def _not_current(self, memory_id: str) -> StoreError:
        """The error for an edit of a superseded or deleted version (the REST service answers it with 409)."""
        return StoreError(f"memory {memory_id} is no longer current; update its latest version")

    async def consolidate(
        self,
        *,
        user_id: str,
        agent_id: str | None = None,
        run_id: str | None = None,
        kinds: tuple[str, ...] = ("fact", "turn"),
        threshold: float = 0.7,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> ConsolidationReport:
        """Offline ("sleep-time") consolidation of one user's memory.

        The model decides, for each unit and its similar earlier units, whether the new one updates
        or deletes an old one. Nothing is erased; superseded units keep their validity interval and
        show in :meth:`history`.
        ``on_progress`` gets (units done, units in all) as it goes.
        """
        require_user(user_id)
        if self.llm is None:
            raise ConfigError("consolidate() needs a chat model: pass llm= to Memory")
        return await consolidate_units(
            self.store,
            self.llm,
            user_id=user_id,
            agent_id=agent_id,
            run_id=run_id,
            kinds=kinds,
            threshold=threshold,
            ledger=self.ledger,
            on_progress=on_progress,
        )

    async def delete(self, memory_id: str, *, user_id: str) -> None:
        """Retire a memory: hidden from search and ``get_all``, still shown by ``history``.

        Any id of the memory will do: an edit gives the new version a new id, but a caller (a mem0 user
        above all, whose ids survive an update) may still hold the one ``add`` returned, so the delete
        follows the edits to the current version. Deleting it again is a no-op.
        Saying the same thing again later (``add`` of the same messages) stores it again.
        """
        record = self._owned(memory_id, user_id)
        await asyncio.to_thread(self._retire_latest, record)

    def _retire_latest(self, record: Record) -> None:
        """Retire the current version of ``record``'s memory, found under the write lock.

        Found inside the transaction, so an edit that committed a moment ago is followed to its new
        version, and one still embedding its text finds its old version closed and is refused. The
        version is locked before it is checked, and followed again if an edit committed while waiting
        for the lock (another process's, on Postgres).
        """
        with self.store.transaction():
            latest = self.store.get_for_update(record.id) or record
            while (newer := self._latest(latest)).id != latest.id:  # edited before the lock came: lock its latest
                latest = self.store.get_for_update(newer.id) or newer
            at = time.time()
            if latest.valid_to is not None and latest.valid_to <= at:
                return
            self._retire([latest], at)

    def _latest(self, record: Record) -> Record:
        """The newest version ``record``'s edits lead to (``record`` itself if it was never edited)."""
        seen = {record.id}
        while isinstance(newer_id := _next_id(record), str) and newer_id not in seen:
            newer = self.store.get(newer_id)
            if newer is None or newer.user_id != record.user_id:
                break
            seen.add(newer_id)
            record = newer
        return record

    def _retire(self, records: Sequence[Record], at: float) -> None:
        """Mark ``records`` deleted by their user and close them at ``at``, in one transaction."""
        with self.store.transaction():
            for record in records:
                self.store.update(record.id, metadata={**record.metadata, DELETED: True})
                self.store.invalidate(record.id, at=at)

    async def delete_all(
        self,
        *,
        user_id: str,
        agent_id: str | None = None,
        run_id: str | None = None,
        filters: MetadataFilter | None = None,
    ) -> int:
        """Retire every current memory in the scope (and matching ``filters``); returns how many.

        All retire at one instant, atomically. History keeps them, as for :meth:`delete`.
        """
        scope = read_scope(filters, user_id=user_id, agent_id=agent_id, run_id=run_id)

        def work() -> int:
            with self.store.transaction():  # listed under the write lock: no edit slips in before the retire
                current = self.store.list_records(scope)
                self._retire(current, time.time())
            return len(current)

        return await asyncio.to_thread(work)

    async def reset(self) -> int:
        """Erase every record of this memory's store, of every user, for good; returns how many went.

        No history is kept. Meant for tests and a per-tenant store; there is no undo.
        """

        def work() -> int:
            with self.store.transaction():
                ids = [r.id for r in self.store.list_records(Filters(include_invalid=True))]
                for rid in ids:
                    self.store.delete(rid)
            return len(ids)

        return await asyncio.to_thread(work)

    # -- moving memory between stores ----------------------------------------------------------

    def export(self, *, user_id: str) -> Iterator[str]:
        """Every memory of ``user_id``, history included, as JSONL lines (each ending in a newline).

        :meth:`import_jsonl` of the lines into an empty memory reproduces them exactly.
        """
        require_user(user_id)
        return export_lines(self.store, user_id=user_id)

    async def import_jsonl(self, lines: Iterable[str], *, user_id: str, source: str = "import") -> tuple[int, int]:
        """Import lines written by :meth:`export` as memories of ``user_id``; ``(imported, skipped)``.

        All or nothing: a malformed line, a line of another user, or an id present with other content
        raises before anything is written. Records are re-embedded with this memory's embedder.
        """
        require_user(user_id)
        records = parse_export(lines, user_id=user_id, source=source)
        return await import_records(self.store, self.embedder, records)

    # -- reading -------------------------------------------------------------------------------

    async def get(self, memory_id: str, *, user_id: str) -> Record:
        """One memory of ``user_id`` (current or not)."""
        return self._owned(memory_id, user_id)

    async def get_all(
        self,
        *,
        user_id: str,
        agent_id: str | None = None,
        run_id: str | None = None,
        include_history: bool = False,
        limit: int | None = None,
        filters: MetadataFilter | None = None,
        offset: int = 0,
    ) -> MemoryList:
        """Every current memory of ``user_id`` (or every version, with ``include_history``), oldest first.

        At most ``limit`` of them, matching the metadata ``filters``, after skipping the first ``offset``
        (pages: the order is fixed, by when each was stored).
        """
        require_user(user_id)
        check_limit(limit)
        check_offset(offset)
        scope = read_scope(filters, user_id=user_id, agent_id=agent_id, run_id=run_id, include_invalid=include_history)
        return MemoryList(await asyncio.to_thread(self.store.list_records, scope, limit, offset))

    async def search(
        self,
        query: str,
        *,
        user_id: str,
        agent_id: str | None = None,
        run_id: str | None = None,
        top_k: int = 10,
        limit: int | None = None,
        filters: MetadataFilter | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        include_history: bool = False,
    ) -> SearchResults:
        """The ``top_k`` (mem0: ``limit``) memories of ``user_id`` most relevant to ``query``, best first.

        ``filters`` is a metadata filter (mem0's language, applied inside the store); ``since``/``until``
        bound the event time (the session date; for a memory added without one, when it was added). All are hard
        filters.
        """
        require_user(user_id)
        if not isinstance(query, str):
            raise ConfigError(f"query must be a string, got {type(query).__name__}")
        k = top_k if limit is None else limit
        check_limit(k)
        check_time_range(since, until)
        scope = read_scope(
            filters,
            user_id=user_id,
            agent_id=agent_id,
            run_id=run_id,
            since=to_epoch(since),
            until=to_epoch(until),
            time_field="event",
            include_invalid=include_history,
        )
        return SearchResults(await self.retriever.search(query, filters=scope, top_k=k))

    async def history(self, memory_id: str, *, user_id: str) -> list[Record]:
        """Every version of a memory, oldest first: edits by :meth:`update` and consolidation alike."""
        self._owned(memory_id, user_id)
        return await asyncio.to_thread(history_of, self.store, memory_id)

    async def answer(
        self,
        question: str,
        *,
        user_id: str,
        question_date: datetime | str | None = None,
        top_k: int = 20,
        rules: Mapping[str, str] | Sequence[str] = (),
        max_tokens: int = 256,
        style: AnswerStyle = "direct",
    ) -> Answer:
        """Retrieve ``top_k`` memories of ``user_id`` and answer, with the question date in the prompt.

        With a ``question_date`` only memories dated at or before it are retrieved: from the question's
        point of view later ones do not exist yet, and showing them lets an answer (or a benchmark score)
        rest on the future. A memory without a date cannot be placed before the question, so it is left
        out too. Without a question date (LoCoMo gives none) nothing is filtered.

        The prompt is MetaMem's (:func:`~memwise.facts.answer.build_fragment_answer_messages`), so learned
        ``rules`` (a trained ``{"R3": text}`` mapping, or plain texts numbered ``R1..``) serve here on the
        prompt they were selected on. ``style="reasoning"`` asks for step-by-step reasoning: ``text`` is
        then the final answer alone and ``reasoning`` the whole reply.

        Raises:
            ConfigError: no chat model, an unknown ``style``, or a ``question_date`` string that does not
                read as a date.
        """
        if self.llm is None:
            raise ConfigError("answer() needs a chat model: pass llm= to Memory")
        check_answer_style(style)
        require_user(user_id)
        if not isinstance(question, str):
            raise ConfigError(f"question must be a string, got {type(question).__name__}")
        check_limit(top_k)
        until = question_time_bound(question_date)
        # "event": a memory told without a date counts from when it was told, so it is not lost to the bound.
        filters = Filters(user_id=user_id, until=until, time_field="event")
        hits = await self.retriever.search(question, filters=filters, top_k=top_k)
        messages = build_answer_messages(
            question, [h.record for h in hits], question_date=question_date, rules=rules, style=style
        )
        reply = await self.llm.complete(ChatRequest(messages=tuple(messages), max_tokens=max_tokens))
        return Answer(
            text=final_answer(reply.text, style),
            memories=tuple(hits),
            usage=reply.usage,
            question_date=format_question_date(question_date),
            reasoning=reply.text.strip() if style == "reasoning" else None,
        )

    def _owned(self, memory_id: str, user_id: str) -> Record:
        require_user(user_id)
        record = self.store.get(memory_id)
        # Someone else's memory answers exactly like a missing one: no existence leak across users.
        if record is None or record.user_id != user_id:
            raise MemoryNotFoundError(f"no memory {memory_id!r} for user {user_id!r}")
        return record

"""The factual memory as users call it, every operation scoped to a user but ``reset``.

The operations: ``add``, ``search``, ``get_all``, ``update``, ``delete``, ``delete_all``, ``history``,
``answer``, ``export``/``import_jsonl`` and ``reset``.

The names and arguments are mem0's, so a mem0 user can switch by changing an import: ``Memory()``
with no arguments reads the usual settings, ``add`` takes a string, a message or a list, ``metadata=``
is stored and returned, ``search(query, user_id=..., limit=..., filters={...})`` applies metadata
filters inside the store, and every list result has ``to_dict()`` for mem0's ``{"results": [...]}`` shape.

:class:`AsyncMemory` is the implementation; :class:`Memory` is its synchronous twin, one-line
wrappers that run the async methods on a private event loop (so model backends, whose connection
pools and semaphores belong to one loop, keep working across calls).

Scoping is enforced here and in the store: every read filters on ``user_id`` in SQL or in the vector
mask, and an id that belongs to someone else behaves exactly like an id that does not exist.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any, Concatenate, Literal, ParamSpec, Protocol, TypeVar

from memwise._aio import LoopThread
from memwise.config import Settings, load_settings
from memwise.embed.base import Embedder
from memwise.exceptions import ConfigError, MemoryNotFoundError, StoreError
from memwise.facts._text import day_label
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
from memwise.facts.results import (
    RESERVED_METADATA,
    MemoryList,
    MetadataFilter,
    SearchResults,
    check_metadata,
    user_metadata,
)
from memwise.facts.transfer import export_lines, import_records, parse_export
from memwise.facts.types import Conversation
from memwise.facts.units import check_scope_id, from_epoch, to_epoch
from memwise.llm.base import ChatModel, ChatRequest
from memwise.runs.ledger import Ledger
from memwise.runs.rundir import RunDir
from memwise.store.base import Filters, Record, ScoredRecord, Store, new_id
from memwise.store.filters import MetaFilter
from memwise.store.filters import parse as parse_metadata_filter
from memwise.store.registry import build_store, is_dsn

T = TypeVar("T")
P = ParamSpec("P")
Mode = Literal["turns", "facts"]
class Retriever(Protocol):
    """What :class:`AsyncMemory` needs from a retriever."""

    async def search(self, query: str, *, filters: Filters, top_k: int) -> list[ScoredRecord]:
        """The best ``top_k`` records for ``query`` among those ``filters`` allow (a hard limit), best first."""
        ...


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
            built = _parts_from_settings(load_settings(), None, with_llm=True)
            store, embedder, llm = built
        if mode == "facts" and llm is None:
            raise ConfigError("mode 'facts' extracts facts with a model: pass llm=")
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
        store, embedder, llm = _parts_from_settings(settings, path, with_llm=with_llm)
        run: RunDir | None = None
        try:
            run = RunDir(run_dir) if run_dir is not None else None
            if run is not None and llm is not None:
                llm = run.record(llm, stage="memory")
            memory = cls(
                store=store, embedder=embedder, llm=llm, ledger=run.ledger if run else None, mode=mode
            )
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
    ) -> IngestReport:
        """Remember one session of messages for ``user_id``, atomically (all units or none).

        ``messages`` is one message (a string or a ``{"role", "content"}`` mapping) or a list of them.
        ``metadata`` (flat JSON values) is stored on every memory the add writes, returned with it and
        usable in ``filters``. Adding the same messages again is a no-op; new messages are always
        stored, also under a ``conversation_id`` or ``session_id`` used before (see :func:`to_conversation`).
        The report's ``unit_ids`` name the memories written or found.
        """
        _check_scope(user_id, agent_id, run_id)
        check_scope_id("conversation_id", conversation_id, optional=True)
        check_scope_id("session_id", session_id, optional=True)
        labels = check_metadata(metadata)
        conv = to_conversation(
            messages,
            conversation_id=conversation_id,
            session_id=session_id,
            session_time=session_time,
            metadata=labels,
        )
        return await self.add_conversation(conv, user_id=user_id, agent_id=agent_id, run_id=run_id, metadata=labels)

    async def add_conversation(
        self,
        conv: Conversation,
        *,
        user_id: str,
        agent_id: str | None = None,
        run_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> IngestReport:
        """Remember a whole conversation (as the dataset readers produce) for ``user_id``.

        Sessions already stored with the same content are skipped; new or changed ones are stored.
        """
        _check_scope(user_id, agent_id, run_id)
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
            mode=self.mode,
            llm=self.llm,
            ledger=self.ledger,
            metadata=labels,
        )

    async def update(
        self, memory_id: str, text: str, *, user_id: str, metadata: Mapping[str, Any] | None = None
    ) -> Record:
        """Replace a memory's text (and, with ``metadata``, its caller metadata).

        The old version is kept, closed at this moment, in its history; the new one gets a new id.
        """
        old = self._owned(memory_id, user_id)
        if old.valid_to is not None and old.valid_to <= time.time():
            raise StoreError(f"memory {memory_id} is no longer current; update its latest version")
        if not isinstance(text, str) or not text.strip():
            raise ConfigError("update() needs the new text as a non-empty string")
        system = {k: v for k, v in old.metadata.items() if k in RESERVED_METADATA}
        labels = user_metadata(old) if metadata is None else check_metadata(metadata)
        now = time.time()
        new = replace(
            old,
            id=new_id(),
            text=text,
            index_text=f"[{day_label(from_epoch(old.ts))}] {text}" if old.ts is not None else None,
            created_at=now,
            valid_from=now,
            valid_to=None,
            metadata={**labels, **system, "supersedes": [old.id], "superseded_by": None, "edited": True},
        )
        vector = (await self.embedder.embed([new.index_text or text]))[0:1]
        with self.store.transaction():
            self.store.add([new], vectors=vector)
            self.store.update(old.id, metadata={**old.metadata, "superseded_by": new.id})
            self.store.invalidate(old.id, at=now)
        return new

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
        _require_user(user_id)
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

        Saying the same thing again later (``add`` of the same messages) stores it again.
        """
        record = self._owned(memory_id, user_id)
        if record.valid_to is not None and record.valid_to <= time.time():
            return
        await asyncio.to_thread(self._retire, [record], time.time())

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
        _check_scope(user_id, agent_id, run_id)
        scope = Filters(user_id=user_id, agent_id=agent_id, run_id=run_id, metadata=_metadata_filter(filters))

        def work() -> int:
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
        _require_user(user_id)
        return export_lines(self.store, user_id=user_id)

    async def import_jsonl(self, lines: Iterable[str], *, user_id: str, source: str = "import") -> tuple[int, int]:
        """Import lines written by :meth:`export` as memories of ``user_id``; ``(imported, skipped)``.

        All or nothing: a malformed line, a line of another user, or an id present with other content
        raises before anything is written. Records are re-embedded with this memory's embedder.
        """
        _require_user(user_id)
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
    ) -> MemoryList:
        """Every current memory of ``user_id`` (or every version, with ``include_history``), oldest first.

        At most ``limit`` of them, matching the metadata ``filters``.
        """
        _require_user(user_id)
        _check_limit(limit)
        scope = Filters(
            user_id=user_id,
            agent_id=agent_id,
            run_id=run_id,
            include_invalid=include_history,
            metadata=_metadata_filter(filters),
        )
        return MemoryList(await asyncio.to_thread(self.store.list_records, scope, limit))

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
        bound the event time (the session date). All are hard filters.
        """
        _require_user(user_id)
        if not isinstance(query, str):
            raise ConfigError(f"query must be a string, got {type(query).__name__}")
        k = top_k if limit is None else limit
        _check_limit(k)
        scope = Filters(
            user_id=user_id,
            agent_id=agent_id,
            run_id=run_id,
            since=to_epoch(since),
            until=to_epoch(until),
            time_field="ts",
            include_invalid=include_history,
            metadata=_metadata_filter(filters),
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
        _require_user(user_id)
        until = question_time_bound(question_date)
        filters = Filters(user_id=user_id, until=until, time_field="ts")
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
        _require_user(user_id)
        record = self.store.get(memory_id)
        # Someone else's memory answers exactly like a missing one: no existence leak across users.
        if record is None or record.user_id != user_id:
            raise MemoryNotFoundError(f"no memory {memory_id!r} for user {user_id!r}")
        return record


def _parts_from_settings(
    settings: Settings, path: str | Path | None, *, with_llm: bool
) -> tuple[Store, Embedder, ChatModel | None]:
    """The store, embedder and policy model the settings describe (the model loads on first use)."""
    from memwise.embed.registry import build_embedder
    from memwise.llm.registry import build_llm

    spec: str | Path = path if path is not None else (settings.store or default_store_path())
    cache: Path | None = None
    if not is_dsn(spec) and "://" not in str(spec):
        file = Path(spec)
        file.parent.mkdir(parents=True, exist_ok=True)
        cache = file.with_name(file.stem + ".embeddings.sqlite3")
    store = build_store(spec)
    try:
        embedder = build_embedder(settings.embedding, cache_path=cache)
        llm = build_llm(settings.model("policy")) if with_llm else None
    except BaseException:
        store.close()
        raise
    return store, embedder, llm


def _metadata_filter(filters: MetadataFilter | None) -> MetaFilter | None:
    """A caller's filter dict, parsed; a malformed one is the caller's mistake (ConfigError), said once."""
    if filters is None:
        return None
    if not isinstance(filters, Mapping):
        raise ConfigError(f"filters must be a mapping (mem0's filter language), got {type(filters).__name__}")
    try:
        return parse_metadata_filter(filters)
    except StoreError as exc:
        raise ConfigError(f"filters: {exc}") from exc


def _check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"limit/top_k must be a positive integer, got {limit!r}")


def _require_user(user_id: str) -> None:
    if not isinstance(user_id, str) or not user_id:
        raise ConfigError("user_id is required and must be a non-empty string")
    check_scope_id("user_id", user_id)


def _check_scope(user_id: str, agent_id: str | None, run_id: str | None) -> None:
    """Refuse, before anything is written, scope ids that would be stored for good in an unusable form."""
    _require_user(user_id)
    check_scope_id("agent_id", agent_id, optional=True)
    check_scope_id("run_id", run_id, optional=True)


def _blocking(
    method: Callable[Concatenate[AsyncMemory, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[Memory, P], T]:
    """``method`` as a blocking method of :class:`Memory`, with the same parameters and docstring.

    The parameters travel through ``ParamSpec``, so type checkers and editors show the async method's
    real signature (and ``inspect.signature`` follows ``__wrapped__``), without a second copy to drift.
    """

    @functools.wraps(method)
    def blocking(self: Memory, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._run(method(self.inner, *args, **kwargs))

    return blocking


class Memory:
    """The synchronous twin of :class:`AsyncMemory`: same methods, same arguments, blocking.

    Each method is a one-line wrapper that runs the async one on a private event loop (model backends'
    connection pools and semaphores belong to one loop, so one loop serves every call).
    ``Memory()`` with no arguments uses the configured settings, as mem0's ``Memory()`` does.

    Example:
        >>> from memwise.testing import FakeEmbedder
        >>> from memwise.store.sqlite import SQLiteStore
        >>> import tempfile, pathlib
        >>> mem = Memory(store=SQLiteStore(pathlib.Path(tempfile.mkdtemp()) / "m.db"), embedder=FakeEmbedder())
        >>> _ = mem.add({"role": "user", "content": "My sister lives in Lisbon."}, user_id="alice")
        >>> mem.get_all(user_id="alice").to_dict()["results"][0]["memory"]
        'user: My sister lives in Lisbon.'
        >>> mem.close()
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
        inner: AsyncMemory | None = None,
    ) -> None:
        self.inner = (
            inner
            if inner is not None
            else AsyncMemory(store=store, embedder=embedder, llm=llm, retriever=retriever, ledger=ledger, mode=mode)
        )
        self._loop = LoopThread("memwise-memory")

    @classmethod
    def wrap(cls, inner: AsyncMemory) -> Memory:
        """A sync view of an existing :class:`AsyncMemory`."""
        return cls(inner=inner)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        path: str | Path | None = None,
        *,
        mode: Mode = "turns",
        run_dir: str | Path | None = None,
        with_llm: bool = True,
    ) -> Memory:
        """The sync twin of :meth:`AsyncMemory.from_settings`."""
        return cls.wrap(AsyncMemory.from_settings(settings, path, mode=mode, run_dir=run_dir, with_llm=with_llm))

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._loop.run(coro)

    add = _blocking(AsyncMemory.add)
    add_conversation = _blocking(AsyncMemory.add_conversation)
    search = _blocking(AsyncMemory.search)
    get = _blocking(AsyncMemory.get)
    get_all = _blocking(AsyncMemory.get_all)
    update = _blocking(AsyncMemory.update)
    consolidate = _blocking(AsyncMemory.consolidate)
    delete = _blocking(AsyncMemory.delete)
    delete_all = _blocking(AsyncMemory.delete_all)
    reset = _blocking(AsyncMemory.reset)
    history = _blocking(AsyncMemory.history)
    answer = _blocking(AsyncMemory.answer)
    import_jsonl = _blocking(AsyncMemory.import_jsonl)

    def export(self, *, user_id: str) -> Iterator[str]:
        """See :meth:`AsyncMemory.export`."""
        return self.inner.export(user_id=user_id)

    def close(self) -> None:
        """Close the store, embedder and model, and stop the private loop."""
        try:
            self._run(self.inner.aclose())
        finally:
            self._loop.close()

    def __enter__(self) -> Memory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def default_store_path() -> Path:
    """Where the CLI keeps memory when no ``--db`` is given: ``$MEMWISE_HOME/memory.sqlite3``."""
    import os

    home = Path(os.environ.get("MEMWISE_HOME") or Path.home() / ".memwise")
    return home / "memory.sqlite3"

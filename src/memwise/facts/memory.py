"""The factual memory as users call it: ``add``, ``search``, ``get_all``, ``update``, ``delete``,
``history`` and ``answer``, every one scoped to a user.

:class:`AsyncMemory` is the implementation; :class:`Memory` is its synchronous twin, one-line
wrappers that run the async methods on a private event loop (so model backends, whose connection
pools and semaphores belong to one loop, keep working across calls).

Scoping is enforced here and in the store: every read filters on ``user_id`` in SQL or in the vector
mask, and an id that belongs to someone else behaves exactly like an id that does not exist.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from memwise.config import Settings
from memwise.embed.base import Embedder
from memwise.exceptions import ConfigError, StoreError
from memwise.facts.answer import Answer, build_answer_messages, format_question_date, question_time_bound
from memwise.facts.consolidate import ConsolidationReport
from memwise.facts.consolidate import consolidate as consolidate_units
from memwise.facts.consolidate import history as history_of
from memwise.facts.ingest import IngestReport, ingest_conversation
from memwise.facts.types import Conversation, Session, Turn
from memwise.facts.units import check_scope_id, to_epoch, unit_id
from memwise.llm.base import ChatModel, ChatRequest
from memwise.runs.ledger import Ledger
from memwise.runs.rundir import RunDir
from memwise.store.base import Filters, Record, ScoredRecord, new_id
from memwise.store.sqlite import SQLiteStore

T = TypeVar("T")
Mode = Literal["turns", "facts"]
MessageLike = Mapping[str, Any] | str
Messages = MessageLike | Sequence[MessageLike]
"""What ``add`` takes: one message (a string or a ``{"role", "content"}`` mapping) or a list of them."""


class Retriever(Protocol):
    """What :class:`AsyncMemory` needs from a retriever."""

    async def search(self, query: str, *, filters: Filters, top_k: int) -> list[ScoredRecord]: ...


def _said(messages: Messages) -> list[tuple[str, str]]:
    """``(speaker, content)`` per message. A string, or a single mapping, is one message: iterating it
    would store one memory per character (or per key)."""
    if isinstance(messages, str | Mapping):
        messages = [messages]
    elif isinstance(messages, bytes | bytearray) or not isinstance(messages, Sequence):
        raise ConfigError(
            f"messages must be a string, a message mapping or a list of them, got {type(messages).__name__}"
        )
    said = []
    for i, msg in enumerate(messages):
        if isinstance(msg, str):
            said.append(("user", msg))
            continue
        if not isinstance(msg, Mapping):
            raise ConfigError(f"message {i} must be a string or a mapping with 'content', got {type(msg).__name__}")
        content = msg.get("content")
        if not isinstance(content, str):
            raise StoreError(f"message {i}: 'content' must be a string, got {type(content).__name__}")
        said.append((str(msg.get("speaker") or msg.get("name") or msg.get("role") or "user"), content))
    return said


def to_conversation(
    messages: Messages,
    *,
    conversation_id: str | None = None,
    session_id: str | None = None,
    session_time: datetime | None = None,
) -> Conversation:
    """Chat messages (``{"role"|"speaker", "content"}`` or plain strings) as a one-session conversation.

    Without ``session_id``, the session is named after its content (messages and time): adding the same
    messages twice is then recognised as the same session and stored once, while different messages
    under the same ``conversation_id`` are a new session and are stored. ``conversation_id`` defaults to
    the session id.
    """
    said = _said(messages)
    if session_id is None:
        when = session_time.isoformat() if session_time is not None else None
        session_id = "s-" + unit_id("session", conversation_id, when, *(part for pair in said for part in pair))[:16]
    turns = []
    for i, (speaker, content) in enumerate(said):
        turns.append(
            Turn(
                id=f"{session_id}:{i}",
                speaker=speaker,
                text=content,
                session_id=session_id,
                index=i,
                timestamp=session_time,
            )
        )
    session = Session(id=session_id, turns=tuple(turns), timestamp=session_time)
    return Conversation(id=conversation_id or session_id, sessions=(session,))


class AsyncMemory:
    """Long-term factual memory for many users in one SQLite store.

    Example:
        >>> from memwise.testing import FakeEmbedder
        >>> import tempfile, pathlib
        >>> mem = AsyncMemory(store=SQLiteStore(pathlib.Path(tempfile.mkdtemp()) / "m.db"), embedder=FakeEmbedder())
        >>> _ = asyncio.run(mem.add(["I adopted a beagle called Pepper."], user_id="alice"))
        >>> [h.record.text for h in asyncio.run(mem.search("dog Pepper", user_id="alice", top_k=1))]
        ['user: I adopted a beagle called Pepper.']
        >>> asyncio.run(mem.search("dog Pepper", user_id="bob"))
        []
    """

    def __init__(
        self,
        *,
        store: SQLiteStore,
        embedder: Embedder,
        llm: ChatModel | None = None,
        retriever: Retriever | None = None,
        ledger: Ledger | None = None,
        mode: Mode = "turns",
    ) -> None:
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
        path: str | Path,
        *,
        mode: Mode = "turns",
        run_dir: str | Path | None = None,
        with_llm: bool = True,
    ) -> AsyncMemory:
        """A memory over the SQLite file ``path``, with the configured policy model and embedder.

        Embeddings are cached beside the database; with ``run_dir``, model calls go to that run's
        ledger and are replayed on a re-run.
        """
        from memwise.embed.registry import build_embedder
        from memwise.llm.registry import build_llm

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        llm: ChatModel | None = build_llm(settings.model("policy")) if with_llm else None
        run = RunDir(run_dir) if run_dir is not None else None
        if run is not None and llm is not None:
            llm = run.record(llm, stage="memory")
        memory = cls(
            store=SQLiteStore(path),
            embedder=build_embedder(settings.embedding, cache_path=path.with_name(path.stem + ".embeddings.sqlite3")),
            llm=llm,
            ledger=run.ledger if run else None,
            mode=mode,
        )
        memory._run = run
        return memory

    async def aclose(self) -> None:
        self.store.close()
        await self.embedder.aclose()
        if self.llm is not None:
            await self.llm.aclose()
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
    ) -> IngestReport:
        """Remember one session of messages for ``user_id``, atomically (all units or none).

        ``messages`` is one message (a string or a ``{"role", "content"}`` mapping) or a list of them.
        Adding the same messages again is a no-op; new messages are always stored, also under a
        ``conversation_id`` or ``session_id`` used before (see :func:`to_conversation`).
        """
        _check_scope(user_id, agent_id, run_id)
        check_scope_id("conversation_id", conversation_id, optional=True)
        check_scope_id("session_id", session_id, optional=True)
        conv = to_conversation(
            messages, conversation_id=conversation_id, session_id=session_id, session_time=session_time
        )
        return await self.add_conversation(conv, user_id=user_id, agent_id=agent_id, run_id=run_id)

    async def add_conversation(
        self, conv: Conversation, *, user_id: str, agent_id: str | None = None, run_id: str | None = None
    ) -> IngestReport:
        """Remember a whole conversation (as the dataset readers produce) for ``user_id``.

        Sessions already stored with the same content are skipped; new or changed ones are stored.
        """
        _check_scope(user_id, agent_id, run_id)
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
        )

    async def update(self, memory_id: str, text: str, *, user_id: str) -> Record:
        """Replace a memory's text. The old version is kept, closed at this moment, in its history."""
        old = self._owned(memory_id, user_id)
        if old.valid_to is not None and old.valid_to <= time.time():
            raise StoreError(f"memory {memory_id} is no longer current; update its latest version")
        now = time.time()
        new = replace(
            old,
            id=new_id(),
            text=text,
            created_at=now,
            valid_from=now,
            valid_to=None,
            metadata={**old.metadata, "supersedes": [old.id], "superseded_by": None, "edited": True},
        )
        vector = (await self.embedder.embed([text]))[0:1]
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
    ) -> ConsolidationReport:
        """Offline ("sleep-time") consolidation of one user's memory: the model decides, for each unit
        and its similar earlier units, whether the new one updates or deletes an old one. Nothing is
        erased; superseded units keep their validity interval and show in :meth:`history`."""
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
        )

    async def delete(self, memory_id: str, *, user_id: str) -> None:
        """Retire a memory: hidden from search and ``get_all``, still shown by ``history``."""
        self._owned(memory_id, user_id)
        self.store.invalidate(memory_id, at=time.time())

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
    ) -> list[Record]:
        """Every current memory of ``user_id`` (or every version, with ``include_history``)."""
        _require_user(user_id)
        filters = Filters(user_id=user_id, agent_id=agent_id, run_id=run_id, include_invalid=include_history)
        return self.store.list(filters, limit=limit)

    async def search(
        self,
        query: str,
        *,
        user_id: str,
        agent_id: str | None = None,
        run_id: str | None = None,
        top_k: int = 10,
        since: datetime | None = None,
        until: datetime | None = None,
        include_history: bool = False,
    ) -> list[ScoredRecord]:
        """The ``top_k`` memories of ``user_id`` most relevant to ``query``.

        ``since``/``until`` bound the event time (the session date) and are hard filters.
        """
        _require_user(user_id)
        filters = Filters(
            user_id=user_id,
            agent_id=agent_id,
            run_id=run_id,
            since=to_epoch(since),
            until=to_epoch(until),
            time_field="ts",
            include_invalid=include_history,
        )
        return await self.retriever.search(query, filters=filters, top_k=top_k)

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
        rules: Sequence[str] = (),
        max_tokens: int = 256,
    ) -> Answer:
        """Retrieve ``top_k`` memories of ``user_id`` and answer, with the question date in the prompt.

        With a ``question_date`` only memories dated at or before it are retrieved: from the question's
        point of view later ones do not exist yet, and showing them lets an answer (or a benchmark score)
        rest on the future. A memory without a date cannot be placed before the question, so it is left
        out too. Without a question date (LoCoMo gives none) nothing is filtered.

        Raises:
            ConfigError: no chat model, or a ``question_date`` string that does not read as a date.
        """
        if self.llm is None:
            raise ConfigError("answer() needs a chat model: pass llm= to Memory")
        _require_user(user_id)
        until = question_time_bound(question_date)
        filters = Filters(user_id=user_id, until=until, time_field="ts")
        hits = await self.retriever.search(question, filters=filters, top_k=top_k)
        messages = build_answer_messages(question, [h.record for h in hits], question_date=question_date, rules=rules)
        reply = await self.llm.complete(ChatRequest(messages=tuple(messages), max_tokens=max_tokens))
        return Answer(
            text=reply.text.strip(),
            memories=tuple(hits),
            usage=reply.usage,
            question_date=format_question_date(question_date),
        )

    def _owned(self, memory_id: str, user_id: str) -> Record:
        _require_user(user_id)
        record = self.store.get(memory_id)
        # Someone else's memory answers exactly like a missing one: no existence leak across users.
        if record is None or record.user_id != user_id:
            raise StoreError(f"no memory {memory_id!r} for user {user_id!r}")
        return record


def _require_user(user_id: str) -> None:
    if not isinstance(user_id, str) or not user_id:
        raise ConfigError("user_id is required and must be a non-empty string")
    check_scope_id("user_id", user_id)


def _check_scope(user_id: str, agent_id: str | None, run_id: str | None) -> None:
    """Refuse, before anything is written, scope ids that would be stored for good in an unusable form."""
    _require_user(user_id)
    check_scope_id("agent_id", agent_id, optional=True)
    check_scope_id("run_id", run_id, optional=True)


class Memory:
    """The synchronous twin of :class:`AsyncMemory`: same methods, same arguments, blocking.

    Example:
        >>> from memwise.testing import FakeEmbedder
        >>> import tempfile, pathlib
        >>> mem = Memory(store=SQLiteStore(pathlib.Path(tempfile.mkdtemp()) / "m.db"), embedder=FakeEmbedder())
        >>> _ = mem.add([{"role": "user", "content": "My sister lives in Lisbon."}], user_id="alice")
        >>> [r.text for r in mem.get_all(user_id="alice")]
        ['user: My sister lives in Lisbon.']
        >>> mem.close()
    """

    def __init__(self, *, inner: AsyncMemory | None = None, **kwargs: Any) -> None:
        self.inner = inner if inner is not None else AsyncMemory(**kwargs)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="memwise-memory", daemon=True)
        self._thread.start()

    @classmethod
    def wrap(cls, inner: AsyncMemory) -> Memory:
        """A sync view of an existing :class:`AsyncMemory`."""
        return cls(inner=inner)

    @classmethod
    def from_settings(cls, settings: Settings, path: str | Path, **kwargs: Any) -> Memory:
        """The sync twin of :meth:`AsyncMemory.from_settings`."""
        return cls.wrap(AsyncMemory.from_settings(settings, path, **kwargs))

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def add(self, messages: Messages, **kwargs: Any) -> IngestReport:
        return self._run(self.inner.add(messages, **kwargs))

    def add_conversation(self, conv: Conversation, **kwargs: Any) -> IngestReport:
        return self._run(self.inner.add_conversation(conv, **kwargs))

    def search(self, query: str, **kwargs: Any) -> list[ScoredRecord]:
        return self._run(self.inner.search(query, **kwargs))

    def get(self, memory_id: str, **kwargs: Any) -> Record:
        return self._run(self.inner.get(memory_id, **kwargs))

    def get_all(self, **kwargs: Any) -> list[Record]:
        return self._run(self.inner.get_all(**kwargs))

    def update(self, memory_id: str, text: str, **kwargs: Any) -> Record:
        return self._run(self.inner.update(memory_id, text, **kwargs))

    def consolidate(self, **kwargs: Any) -> ConsolidationReport:
        return self._run(self.inner.consolidate(**kwargs))

    def delete(self, memory_id: str, **kwargs: Any) -> None:
        return self._run(self.inner.delete(memory_id, **kwargs))

    def history(self, memory_id: str, **kwargs: Any) -> list[Record]:
        return self._run(self.inner.history(memory_id, **kwargs))

    def answer(self, question: str, **kwargs: Any) -> Answer:
        return self._run(self.inner.answer(question, **kwargs))

    def close(self) -> None:
        """Close the store, embedder and model, and stop the private loop."""
        try:
            self._run(self.inner.aclose())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
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

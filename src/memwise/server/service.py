"""The narrow interface the REST and MCP endpoints call, and its adapter over AsyncMemory.

Endpoints depend on :class:`MemoryService`, not on AsyncMemory, so the library can change underneath
without touching a route; the adapter adds only what a service needs on top (not-found and conflict
errors the HTTP layer maps to 404 and 409, the written memories of an add).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from memwise.exceptions import MemoryNotFoundError, StoreError
from memwise.facts.answer import Answer
from memwise.facts.consolidate import ConsolidationReport
from memwise.facts.ingest import IngestReport
from memwise.facts.memory import AsyncMemory
from memwise.facts.messages import MessageLike
from memwise.facts.types import Conversation
from memwise.store.base import Record, ScoredRecord


class MemoryNotFound(MemoryNotFoundError):
    """No such memory for this user; another user's memory answers exactly the same."""


class MemoryConflict(StoreError):
    """The request contradicts what is stored (e.g. editing a version that was superseded)."""


@dataclass
class AddResult:
    """What one add did: the ingest report and the memories it wrote (tagged with the metadata)."""

    report: IngestReport
    memories: list[Record] = field(default_factory=list)


class MemoryService(Protocol):
    """What the endpoints need from one tenant's memory; every call is scoped to ``user_id``."""

    async def add(
        self,
        messages: Sequence[MessageLike],
        *,
        user_id: str,
        agent_id: str | None = None,
        run_id: str | None = None,
        session_time: datetime | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> AddResult:
        """Store one session of ``messages``; re-adding the same session must not store it twice."""
        ...

    async def add_conversation(self, conv: Conversation, *, user_id: str) -> IngestReport:
        """Store a whole conversation (all its sessions) for ``user_id``."""
        ...

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
        metadata: Mapping[str, Any] | None = None,
    ) -> list[ScoredRecord]:
        """The user's best memories for ``query``, best first; scope and filters are hard limits."""
        ...

    async def get(self, memory_id: str, *, user_id: str) -> Record:
        """One memory of ``user_id``; raises MemoryNotFound for another user's id as for a missing one."""
        ...

    async def get_all(
        self,
        *,
        user_id: str,
        agent_id: str | None = None,
        run_id: str | None = None,
        include_history: bool = False,
        limit: int | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> list[Record]:
        """The user's current memories (every version with ``include_history``), oldest first."""
        ...

    async def update(self, memory_id: str, text: str, *, user_id: str) -> Record:
        """Replace a current memory's text, keeping the old version; MemoryConflict if it was superseded."""
        ...

    async def delete(self, memory_id: str, *, user_id: str) -> None:
        """Retire one memory (history keeps it); MemoryNotFound if the user has no such memory."""
        ...

    async def delete_all(self, *, user_id: str, agent_id: str | None = None, run_id: str | None = None) -> int:
        """Retire every current memory in the scope; returns how many."""
        ...

    async def history(self, memory_id: str, *, user_id: str) -> list[Record]:
        """Every version of a memory, oldest first; MemoryNotFound if the user has no such memory."""
        ...

    async def answer(
        self, question: str, *, user_id: str, question_date: datetime | str | None = None, top_k: int = 20
    ) -> Answer:
        """Answer ``question`` from the user's memories with the server's chat model."""
        ...

    async def consolidate(self, *, user_id: str, threshold: float = 0.7) -> ConsolidationReport:
        """Run offline consolidation over the user's memories; nothing is erased."""
        ...

    def export_jsonl(self, *, user_id: str) -> Iterator[str]:
        """The user's records as JSONL lines, lazily, so a large export is streamed."""
        ...

    async def import_jsonl(self, lines: Iterable[str], *, user_id: str) -> tuple[int, int]:
        """Load exported lines for ``user_id``; returns ``(imported, skipped)``."""
        ...

    def check(self) -> None:
        """Raise if the store cannot be read."""
        ...

    def close(self) -> None:
        """Release this tenant's store; the shared models stay open."""
        ...


class AsyncMemoryService:
    """:class:`MemoryService` over an :class:`AsyncMemory` whose embedder and model are shared.

    ``close`` closes the store only: the embedder and model belong to the server and serve every tenant.
    """

    def __init__(self, memory: AsyncMemory) -> None:
        self.memory = memory

    def _owned(self, memory_id: str, user_id: str) -> Record:
        record = self.memory.store.get(memory_id)
        if record is None or record.user_id != user_id:
            raise MemoryNotFound(f"no memory {memory_id!r} for user {user_id!r}")
        return record

    async def add(
        self,
        messages: Sequence[MessageLike],
        *,
        user_id: str,
        agent_id: str | None = None,
        run_id: str | None = None,
        session_time: datetime | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> AddResult:
        """Add, and return the memories written (an add may also find the session already stored)."""
        report = await self.memory.add(
            list(messages),
            user_id=user_id,
            agent_id=agent_id,
            run_id=run_id,
            session_time=session_time,
            metadata=metadata,
        )
        return AddResult(report=report, memories=self.memory.store.get_many(report.unit_ids))

    async def add_conversation(self, conv: Conversation, *, user_id: str) -> IngestReport:
        """Delegates to :meth:`AsyncMemory.add_conversation`."""
        return await self.memory.add_conversation(conv, user_id=user_id)

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
        metadata: Mapping[str, Any] | None = None,
    ) -> list[ScoredRecord]:
        """Delegates to :meth:`AsyncMemory.search`; the metadata filter goes to the store."""
        return await self.memory.search(
            query,
            user_id=user_id,
            agent_id=agent_id,
            run_id=run_id,
            top_k=top_k,
            filters=metadata or None,
            since=since,
            until=until,
            include_history=include_history,
        )

    async def get(self, memory_id: str, *, user_id: str) -> Record:
        """The memory if ``user_id`` owns it, else MemoryNotFound (the same answer as for no memory)."""
        return self._owned(memory_id, user_id)

    async def get_all(
        self,
        *,
        user_id: str,
        agent_id: str | None = None,
        run_id: str | None = None,
        include_history: bool = False,
        limit: int | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> list[Record]:
        """Delegates to :meth:`AsyncMemory.get_all`; the metadata filter goes to the store."""
        return await self.memory.get_all(
            user_id=user_id,
            agent_id=agent_id,
            run_id=run_id,
            include_history=include_history,
            limit=limit,
            filters=metadata or None,
        )

    async def update(self, memory_id: str, text: str, *, user_id: str) -> Record:
        """Refuse an edit of a superseded version (MemoryConflict, HTTP 409) before delegating."""
        old = self._owned(memory_id, user_id)
        if old.valid_to is not None and old.valid_to <= time.time():
            raise MemoryConflict(f"memory {memory_id!r} is no longer current; update its latest version")
        return await self.memory.update(memory_id, text, user_id=user_id)

    async def delete(self, memory_id: str, *, user_id: str) -> None:
        """Check ownership first, so another user's id answers 404 like a missing one."""
        self._owned(memory_id, user_id)
        await self.memory.delete(memory_id, user_id=user_id)

    async def delete_all(self, *, user_id: str, agent_id: str | None = None, run_id: str | None = None) -> int:
        """Delegates to :meth:`AsyncMemory.delete_all`."""
        return await self.memory.delete_all(user_id=user_id, agent_id=agent_id, run_id=run_id)

    async def history(self, memory_id: str, *, user_id: str) -> list[Record]:
        """Check ownership first, so another user's id answers 404 like a missing one."""
        self._owned(memory_id, user_id)
        return await self.memory.history(memory_id, user_id=user_id)

    async def answer(
        self, question: str, *, user_id: str, question_date: datetime | str | None = None, top_k: int = 20
    ) -> Answer:
        """Delegates to :meth:`AsyncMemory.answer`."""
        return await self.memory.answer(question, user_id=user_id, question_date=question_date, top_k=top_k)

    async def consolidate(self, *, user_id: str, threshold: float = 0.7) -> ConsolidationReport:
        """Delegates to :meth:`AsyncMemory.consolidate`."""
        return await self.memory.consolidate(user_id=user_id, threshold=threshold)

    def export_jsonl(self, *, user_id: str) -> Iterator[str]:
        """Delegates to :meth:`AsyncMemory.export`."""
        return self.memory.export(user_id=user_id)

    async def import_jsonl(self, lines: Iterable[str], *, user_id: str) -> tuple[int, int]:
        """Delegates to :meth:`AsyncMemory.import_jsonl`."""
        return await self.memory.import_jsonl(lines, user_id=user_id)

    def check(self) -> None:
        """Raise if the store cannot be read (a cheap count); ``/ready`` calls it for each open tenant."""
        self.memory.store.count()

    def close(self) -> None:
        """Close the store only: the embedder and model are shared by every tenant."""
        self.memory.store.close()

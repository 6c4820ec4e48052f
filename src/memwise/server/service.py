"""One tenant's memory as the REST and MCP endpoints use it: :class:`AsyncMemory` plus what a service needs.

The endpoints call AsyncMemory's own methods, with its signatures; :class:`MemoryService` adds only
the errors the HTTP layer maps to 404 and 409, the memories an add wrote, a readiness check, and a
``close`` that leaves the embedder and model open, since every tenant shares them.
"""

from __future__ import annotations

from typing import Any

from memwise.exceptions import MemoryNotFoundError, StoreError
from memwise.facts.ingest import IngestReport
from memwise.facts.memory import AsyncMemory
from memwise.store.base import Record


class MemoryNotFound(MemoryNotFoundError):
    """No such memory for this user; another user's memory answers exactly the same."""


class MemoryConflict(StoreError):
    """The request contradicts what is stored (e.g. editing a version that was superseded)."""


class MemoryService(AsyncMemory):
    """An :class:`AsyncMemory` over one tenant's store whose embedder and model belong to the server."""

    def _owned(self, memory_id: str, user_id: str) -> Record:
        """The memory if ``user_id`` owns it, else MemoryNotFound (the same answer as for no memory)."""
        record = self.store.get(memory_id)
        if record is None or record.user_id != user_id:
            raise MemoryNotFound(f"no memory {memory_id!r} for user {user_id!r}")
        return record

    def written(self, report: IngestReport) -> list[Record]:
        """The memories an add wrote (or found already stored), for the response to show them."""
        return self.store.get_many(report.unit_ids)

    async def page(
        self, *, user_id: str, limit: int, offset: int = 0, **options: Any
    ) -> tuple[list[Record], int | None]:
        """One page of :meth:`get_all` and where the next one starts (None after the last).

        One memory more than the page is read, to tell a full last page from one with more after it.
        """
        records = list(await self.get_all(user_id=user_id, limit=limit + 1, offset=offset, **options))
        return records[:limit], (offset + limit if len(records) > limit else None)

    def _not_current(self, memory_id: str) -> StoreError:
        """An edit of a superseded or deleted version is a MemoryConflict (HTTP 409), found before or during it."""
        return MemoryConflict(f"memory {memory_id!r} is no longer current; update its latest version")

    def check(self) -> None:
        """Raise if the store cannot be read (a cheap count); ``/ready`` calls it for each open tenant."""
        self.store.count()

    def close(self) -> None:
        """Close the store only: the embedder and model are shared by every tenant."""
        self.store.close()

    async def aclose(self) -> None:
        """As :meth:`close`: AsyncMemory's own would close the embedder and model every tenant shares."""
        self.close()

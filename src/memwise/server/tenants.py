"""Where a tenant's memory lives, and the server's cache of open tenant memories.

Isolation is by construction: each tenant has its own store (one SQLite file), so no memory id,
query, user id or filter sent by tenant A can reach tenant B's rows: they are not in the database A's
requests are answered from. The mapping from tenant to store is :func:`open_tenant_store`, the one
place a shared Postgres store would plug in (one schema per tenant, named after the validated tenant).
"""

from __future__ import annotations

import threading
from pathlib import Path

from memwise.embed.base import Embedder
from memwise.facts.memory import AsyncMemory
from memwise.llm.base import ChatModel
from memwise.server.auth import validate_tenant
from memwise.server.config import ServerConfig
from memwise.server.service import AsyncMemoryService, MemoryService
from memwise.store.sqlite import SQLiteStore


def tenant_store_path(data_dir: Path, tenant: str) -> Path:
    """``<data_dir>/tenants/<tenant>.sqlite3``; the tenant name is validated to a safe charset first."""
    return data_dir / "tenants" / f"{validate_tenant(tenant)}.sqlite3"


def open_tenant_store(config: ServerConfig, tenant: str) -> SQLiteStore:
    """The store holding ``tenant``'s memory (and nobody else's).

    A Postgres store selected by a DSN would be opened here with the tenant's own schema
    (``memwise_<tenant>``), keeping every other part of the server unchanged.
    """
    return SQLiteStore(tenant_store_path(config.data_dir, tenant))


class TenantRegistry:
    """Opens each tenant's memory on first use and keeps it open; all share one embedder and model.

    The cache is the server's only mutable shared state: it exists so a tenant's store (and its
    in-memory vector index) is opened once per process, not once per request.
    """

    def __init__(self, config: ServerConfig, *, embedder: Embedder, llm: ChatModel | None) -> None:
        self.config = config
        self.embedder = embedder
        self.llm = llm
        self._open: dict[str, MemoryService] = {}
        self._lock = threading.Lock()

    def memory(self, tenant: str) -> MemoryService:
        """The memory of ``tenant``, opened lazily."""
        with self._lock:
            service = self._open.get(tenant)
            if service is None:
                memory = AsyncMemory(
                    store=open_tenant_store(self.config, tenant),
                    embedder=self.embedder,
                    llm=self.llm,
                    mode=self.config.mode,
                )
                service = self._open[tenant] = AsyncMemoryService(memory)
            return service

    def opened(self) -> list[MemoryService]:
        """The tenant memories open right now."""
        with self._lock:
            return list(self._open.values())

    def close(self) -> None:
        """Close every tenant store (the shared embedder and model are closed by their owner)."""
        with self._lock:
            services, self._open = list(self._open.values()), {}
        for service in services:
            service.close()

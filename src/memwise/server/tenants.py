"""Where a tenant's memory lives, and the server's cache of open tenant memories.

Isolation is by construction: each tenant has its own store (one SQLite file under the data folder,
or, with a ``postgresql://`` store, one schema of the shared database), so no memory id, query, user
id or filter sent by tenant A can reach tenant B's rows: they are not in the tables A's requests are
answered from. The mapping from tenant to store is :func:`open_tenant_store`, and only there.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

from memwise.embed.base import Embedder
from memwise.llm.base import ChatModel
from memwise.server.auth import validate_tenant
from memwise.server.config import ServerConfig
from memwise.server.service import MemoryService
from memwise.store.base import Store
from memwise.store.registry import is_dsn
from memwise.store.sqlite import SQLiteStore

SCHEMA_PREFIX = "memwise_t_"
_MAX_SCHEMA_BYTES = 63


def tenant_store_path(data_dir: Path, tenant: str) -> Path:
    """``<data_dir>/tenants/<tenant>.sqlite3``; the tenant name is validated to a safe charset first."""
    return data_dir / "tenants" / f"{validate_tenant(tenant)}.sqlite3"


def tenant_schema(tenant: str) -> str:
    """The Postgres schema of a tenant: ``memwise_t_<tenant>``, distinct for distinct tenants.

    A name too long for PostgreSQL (63 bytes) keeps its first 40 characters and gets ``~`` and a
    hash of the whole name: ``~`` is not allowed in tenant names, so a shortened name can never equal
    the plain name of another tenant.

    Example:
        >>> tenant_schema("acme")
        'memwise_t_acme'
    """
    name = validate_tenant(tenant)
    plain = SCHEMA_PREFIX + name
    if len(plain) <= _MAX_SCHEMA_BYTES:
        return plain
    return f"{SCHEMA_PREFIX}{name[:40]}~{hashlib.sha256(name.encode()).hexdigest()[:12]}"


def open_tenant_store(config: ServerConfig, tenant: str) -> Store:
    """The store holding ``tenant``'s memory (and nobody else's).

    With a ``postgresql://`` store every tenant is a schema of that one database
    (:func:`tenant_schema`), so several server processes on the same database serve the same
    tenants; otherwise each tenant is a SQLite file under the data folder.
    """
    if config.store is not None and is_dsn(config.store):
        from memwise.store.postgres import PostgresStore

        return PostgresStore(config.store, schema=tenant_schema(tenant))
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
                service = self._open[tenant] = MemoryService(
                    store=open_tenant_store(self.config, tenant),
                    embedder=self.embedder,
                    llm=self.llm,
                    mode=self.config.mode,
                )
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

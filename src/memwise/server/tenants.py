"""Where a tenant's memory lives, and the server's cache of open tenant memories.

Isolation is by construction: each tenant has its own store (one SQLite file under the data folder,
or, with a ``postgresql://`` store, one schema of the shared database), so no memory id, query, user
id or filter sent by tenant A can reach tenant B's rows: they are not in the tables A's requests are
answered from. The mapping from tenant to store is :func:`open_tenant_store`, and only there.

With Postgres, the tenants of one server share one connection pool (``pg_pool_size`` connections at
most, however many tenants it serves); a tenant's store puts each connection it checks out on its own
schema's ``search_path`` first, unless it is there already, so a connection never answers one tenant's
request from another's schema.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from memwise.embed.base import Embedder
from memwise.llm.base import ChatModel
from memwise.server.auth import validate_tenant
from memwise.server.config import ServerConfig
from memwise.server.service import MemoryService
from memwise.store.base import JobLog, Store
from memwise.store.registry import is_dsn
from memwise.store.sqlite import SQLiteStore

if TYPE_CHECKING:
    from memwise.store._pg_pool import PgPool

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


class TenantStore(Store, JobLog, Protocol):
    """A tenant's store: its records, and the jobs the server ran for it."""


def open_tenant_store(config: ServerConfig, tenant: str, *, pool: PgPool | None = None) -> TenantStore:
    """The store holding ``tenant``'s memory and jobs (and nobody else's).

    With a ``postgresql://`` store every tenant is a schema of that one database
    (:func:`tenant_schema`), reached through ``pool`` (the server's one pool) when given, so several
    server processes on the same database serve the same tenants; otherwise each tenant is a SQLite
    file under the data folder.
    """
    if config.store is not None and is_dsn(config.store):
        from memwise.store.postgres import PostgresStore

        return PostgresStore(config.store, schema=tenant_schema(tenant), pool=pool)
    return SQLiteStore(tenant_store_path(config.data_dir, tenant))


class TenantRegistry:
    """Opens each tenant's memory on first use and keeps it open; all share one embedder and model.

    The cache is the server's only mutable shared state: it exists so a tenant's store (and its
    in-memory vector index) is opened once per process, not once per request. With Postgres it also
    holds the one connection pool every tenant's store shares, opened with the first tenant.
    """

    def __init__(self, config: ServerConfig, *, embedder: Embedder, llm: ChatModel | None) -> None:
        self.config = config
        self.embedder = embedder
        self.llm = llm
        self._open: dict[str, MemoryService] = {}
        self._logs: dict[str, JobLog] = {}
        self._pool: PgPool | None = None
        self._lock = threading.Lock()

    def _shared_pool(self) -> PgPool | None:
        """The server's Postgres pool (opened on first use; the caller holds the lock), None with SQLite."""
        store = self.config.store
        if self._pool is None and store is not None and is_dsn(store):
            from memwise.store._pg_pool import PgPool

            self._pool = PgPool(store, max_connections=self.config.pg_pool_size)
        return self._pool

    def _opened(self, tenant: str) -> MemoryService:
        """The memory of ``tenant``, opening its store now if needed; the caller holds the lock."""
        service = self._open.get(tenant)
        if service is None:
            store = open_tenant_store(self.config, tenant, pool=self._shared_pool())
            self._logs[tenant] = store
            service = self._open[tenant] = MemoryService(
                store=store, embedder=self.embedder, llm=self.llm, mode=self.config.mode
            )
        return service

    def memory(self, tenant: str) -> MemoryService:
        """The memory of ``tenant``, opened lazily."""
        with self._lock:
            return self._opened(tenant)

    def job_log(self, tenant: str) -> JobLog:
        """Where ``tenant``'s jobs are kept: its own store (opened lazily, as :meth:`memory`)."""
        with self._lock:
            self._opened(tenant)
            return self._logs[tenant]

    def opened(self) -> list[MemoryService]:
        """The tenant memories open right now."""
        with self._lock:
            return list(self._open.values())

    def close(self) -> None:
        """Close every tenant store, then the shared pool (the shared embedder and model are closed by their owner)."""
        with self._lock:
            services, self._open, self._logs = list(self._open.values()), {}, {}
            pool, self._pool = self._pool, None
        for service in services:
            service.close()
        if pool is not None:
            pool.close()

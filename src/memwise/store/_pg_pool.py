"""The Postgres store's connections: a psycopg pool, and a transaction bound to the thread that opened it.

:class:`PgPool` is one bounded pool to one database. A store opens its own, or shares one given to it:
a server serving many tenants (one schema each) gives all of them the same pool, so its connections to
the database stay within one bound however many tenants it serves. Every checkout names the store's
:class:`SearchPath`, and the pool puts the connection on it first unless it is there already (it
remembers the path it last set on each connection), so a connection last used for another schema can
never answer for this one. :class:`PgConnections` is one store's view of a pool.

As with SQLite, ``transaction()`` binds one connection to the calling thread for the block; calls
outside a transaction take any pooled connection, and a write there retries on deadlock or
serialisation failure, since two writers of overlapping rows may each wait on the other.
"""

from __future__ import annotations

import random
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from memwise._aio import task_key
from memwise.exceptions import StoreError
from memwise.store import _pg_schema

T = TypeVar("T")


class _ThreadState(threading.local):
    conn: Any = None
    depth: int = 0
    owner: int | None = None


@dataclass(frozen=True)
class SearchPath:
    """A search path a checkout puts its connection on: ``key`` names it, ``statement`` sets it."""

    key: str
    statement: Any


DSN_PATH = SearchPath("", "RESET search_path")
"""The search path the DSN (or the role's settings) gives a connection: a store without a schema uses it."""


class PgPool:
    """At most ``max_connections`` autocommit connections to one database, for one or many stores.

    Opening it makes sure the database has pgvector (every pooled connection registers the vector
    type), so the stores on it can migrate their schemas through pooled connections and the pool's
    bound holds from then on.

    Args:
        dsn: the libpq connection string.
        max_connections: the pool's size; threads beyond it wait for a connection.
        connect_timeout_s: how long opening, and a checkout from a busy pool, wait.

    Example:
        >>> pool = PgPool("postgresql://memwise@db/memwise", max_connections=10)  # doctest: +SKIP
        >>> acme = PostgresStore(pool.dsn, schema="memwise_t_acme", pool=pool)  # doctest: +SKIP
    """

    def __init__(self, dsn: str, *, max_connections: int = 8, connect_timeout_s: float = 10.0) -> None:
        psycopg, pool_mod, register_vector = _pg_schema.import_driver()
        if max_connections < 1:
            raise StoreError(f"a PostgreSQL pool needs at least 1 connection, got max_connections={max_connections}")
        self.psycopg = psycopg
        self.dsn = dsn
        self.where = _pg_schema.describe_dsn(dsn)
        self.max_connections = max_connections
        # The path each connection was last put on (weak keys: a connection the pool drops is forgotten).
        self._paths: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
        self._paths_lock = threading.Lock()
        _pg_schema.ensure_vector(psycopg, dsn, where=self.where, connect_timeout_s=connect_timeout_s)
        # prepare_threshold=None keeps every statement planned with its parameter values, which is
        # what lets the planner pick a space's partial HNSW index.
        self._pool = pool_mod.ConnectionPool(
            dsn,
            min_size=1,
            max_size=max_connections,
            kwargs={"autocommit": True, "prepare_threshold": None, "application_name": "memwise"},
            configure=register_vector,
            open=False,
            timeout=connect_timeout_s,
            name="memwise-store",
        )
        try:
            self._pool.open(wait=True, timeout=connect_timeout_s)
        except pool_mod.PoolTimeout as exc:
            self._pool.close()
            raise StoreError(f"cannot connect to {self.where} within {connect_timeout_s:.0f}s: {exc}") from exc

    @contextmanager
    def connection(self, path: SearchPath | None = None) -> Iterator[Any]:
        """A pooled connection for a ``with`` block; with ``path``, on that search path.

        The path is set outside any transaction, so no rollback undoes it; until it is set, the
        connection counts as on no known path.
        """
        with self._pool.connection() as conn:
            if path is not None:
                with self._paths_lock:
                    current = self._paths.pop(conn, None)
                if current != path.key:
                    try:
                        conn.execute(path.statement)
                    except self.psycopg.Error as exc:
                        raise StoreError(f"setting the search path on {self.where} failed: {exc}") from exc
                with self._paths_lock:
                    self._paths[conn] = path.key
            yield conn

    def close(self) -> None:
        """Close the pool and every connection in it."""
        self._pool.close()


class PgConnections:
    """One store's use of a :class:`PgPool`: its search path on every checkout, plus its per-thread transaction.

    Args:
        pool: the pool (the store's own, or one shared with other stores).
        where: the database as messages name it (no password).
        path: the store's search path (its schema's, or :data:`DSN_PATH`).
        retry_budget_s: how long a write outside ``transaction()`` retries a conflict before StoreError.
    """

    def __init__(self, pool: PgPool, *, where: str, path: SearchPath, retry_budget_s: float) -> None:
        self._psycopg = pool.psycopg
        self._pool = pool
        self.where = where
        self._path = path
        self.retry_budget_s = retry_budget_s
        self._state = _ThreadState()

    def _checkout(self) -> AbstractContextManager[Any]:
        """A pooled connection on this store's search path, whatever the last user of it set."""
        return self._pool.connection(self._path)

    def _check_owner(self, what: str) -> None:
        if self._state.owner != task_key():
            raise StoreError(
                f"{what} on {self.where}: another asyncio task has a store.transaction() open on this thread; "
                "do not await inside store.transaction() (embed first, then write)"
            )

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic unit for this thread's writes; a nested block is a savepoint."""
        psycopg = self._psycopg
        state = self._state
        if state.depth > 0:
            self._check_owner("transaction")
            state.depth += 1
            try:
                with state.conn.transaction():  # a savepoint
                    yield
            finally:
                state.depth -= 1
            return
        with self._checkout() as conn:
            state.conn, state.depth, state.owner = conn, 1, task_key()
            try:
                with conn.transaction():
                    yield
            except psycopg.Error as exc:
                raise StoreError(f"transaction on {self.where} failed: {exc}") from exc
            finally:
                state.conn, state.depth, state.owner = None, 0, None

    def write(self, work: Callable[[Any], T], what: str) -> T:
        """Run ``work`` in its own transaction (retried on deadlock), or a savepoint inside transaction()."""
        psycopg = self._psycopg
        state = self._state
        if state.depth > 0:
            self._check_owner(what)
            try:
                with state.conn.transaction():
                    return work(state.conn)
            except psycopg.Error as exc:
                raise StoreError(f"{what} on {self.where} failed: {exc}") from exc
        retryable = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)
        deadline = time.monotonic() + self.retry_budget_s
        attempt = 0
        while True:
            try:
                with self._checkout() as conn, conn.transaction():
                    return work(conn)
            except retryable as exc:
                if time.monotonic() >= deadline:
                    raise StoreError(f"{what} on {self.where}: still conflicting after retries: {exc}") from exc
                time.sleep(min(0.01 * 2**attempt, 0.5) * (0.5 + random.random()))
                attempt += 1
            except psycopg.Error as exc:
                raise StoreError(f"{what} on {self.where} failed: {exc}") from exc

    def read(self, work: Callable[[Any], T], what: str) -> T:
        """Run ``work`` on this thread's transaction connection, or on any pooled one outside a transaction."""
        psycopg = self._psycopg
        try:
            if self._state.depth > 0:
                return work(self._state.conn)
            with self._checkout() as conn:
                return work(conn)
        except psycopg.Error as exc:
            raise StoreError(f"{what} on {self.where} failed: {exc}") from exc

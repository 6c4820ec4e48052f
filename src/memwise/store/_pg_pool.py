"""The Postgres store's connections: a psycopg pool, and a transaction bound to the thread that opened it.

As with SQLite, ``transaction()`` binds one connection to the calling thread for the block; calls
outside a transaction take any pooled connection, and a write there retries on deadlock or
serialisation failure, since two writers of overlapping rows may each wait on the other.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from memwise._aio import task_key
from memwise.exceptions import StoreError

T = TypeVar("T")


class _ThreadState(threading.local):
    conn: Any = None
    depth: int = 0
    owner: int | None = None


class PgConnections:
    """A pool of autocommit connections plus the per-thread transaction the store's writes join.

    Args:
        psycopg: the imported driver module (imported lazily by the store).
        pool_mod: the imported ``psycopg_pool`` module.
        dsn: the libpq connection string.
        where: the database as messages name it (no password).
        configure: run on every new pooled connection (search path, vector type).
        max_connections: the pool's size; threads beyond it wait for a connection.
        connect_timeout_s: how long opening waits for the server.
        retry_budget_s: how long a write outside ``transaction()`` retries a conflict before StoreError.
    """

    def __init__(
        self,
        psycopg: Any,
        pool_mod: Any,
        dsn: str,
        *,
        where: str,
        configure: Callable[[Any], None],
        max_connections: int,
        connect_timeout_s: float,
        retry_budget_s: float,
    ) -> None:
        self._psycopg = psycopg
        self.where = where
        self.retry_budget_s = retry_budget_s
        self._state = _ThreadState()
        # prepare_threshold=None keeps every statement planned with its parameter values, which is
        # what lets the planner pick a space's partial HNSW index.
        self._pool = pool_mod.ConnectionPool(
            dsn,
            min_size=1,
            max_size=max(1, max_connections),
            kwargs={"autocommit": True, "prepare_threshold": None},
            configure=configure,
            open=False,
            timeout=connect_timeout_s,
            name="memwise-store",
        )
        try:
            self._pool.open(wait=True, timeout=connect_timeout_s)
        except pool_mod.PoolTimeout as exc:
            self._pool.close()
            raise StoreError(f"cannot connect to {where} within {connect_timeout_s:.0f}s: {exc}") from exc

    def close(self) -> None:
        """Close the pool and every connection in it."""
        self._pool.close()

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
        with self._pool.connection() as conn:
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
                with self._pool.connection() as conn, conn.transaction():
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
            with self._pool.connection() as conn:
                return work(conn)
        except psycopg.Error as exc:
            raise StoreError(f"{what} on {self.where} failed: {exc}") from exc

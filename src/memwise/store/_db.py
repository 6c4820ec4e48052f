"""Connections, write transactions and lock retries for one SQLite file.

SQLite allows one writer at a time per file. Many processes (parallel ingest workers) and threads
(``asyncio.to_thread`` callers) write to the same store, so every write takes the lock up front with
``BEGIN IMMEDIATE`` (a deferred transaction that upgrades later can deadlock and fail), and a
writer that still finds the file busy after SQLite's own busy timeout backs off and tries again,
re-running its whole unit of work in a fresh transaction.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from memwise.exceptions import StoreError

T = TypeVar("T")

_BUSY_CODES = (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED (primary codes)


def is_busy(exc: sqlite3.Error) -> bool:
    """True for lock contention, which is worth a retry, as opposed to a real failure."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in _BUSY_CODES:
        return True
    text = str(exc).lower()
    return "database is locked" in text or "database is busy" in text or "database table is locked" in text


def _task_key() -> int | None:
    """Identity of the running asyncio task, or None outside any event loop."""
    try:
        task = asyncio.current_task()
    except RuntimeError:
        return None
    return None if task is None else id(task)


class _ThreadState(threading.local):
    conn: sqlite3.Connection | None = None
    depth: int = 0
    owner: int | None = None


class Database:
    """One connection per thread to ``path``, plus the write discipline described above.

    Args:
        path: the database file.
        busy_timeout_s: how long SQLite itself waits for a lock before reporting busy.
        retry_budget_s: total time a write keeps retrying after that before raising StoreError.
    """

    def __init__(self, path: Path, *, busy_timeout_s: float, retry_budget_s: float) -> None:
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        self.retry_budget_s = retry_budget_s
        self._state = _ThreadState()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._closed = False

    def connect(self) -> sqlite3.Connection:
        """A new connection in autocommit mode (transactions are explicit), with the store's pragmas."""
        if self._closed:
            raise StoreError(f"store {self.path} is closed")
        try:
            conn = sqlite3.connect(
                self.path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite store {self.path}: {exc}") from exc
        with self._all_lock:
            self._all.append(conn)
        return conn

    def conn(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use."""
        if self._closed:
            raise StoreError(f"store {self.path} is closed")
        conn = self._state.conn
        if conn is None:
            conn = self._state.conn = self.connect()
        return conn

    def close(self) -> None:
        self._closed = True
        with self._all_lock:
            conns, self._all = self._all, []
        for conn in conns:
            try:
                conn.close()
            except sqlite3.Error:
                pass

    def _backoff(self, attempt: int, deadline: float, what: str, exc: sqlite3.Error) -> None:
        if time.monotonic() >= deadline:
            raise StoreError(f"{what} on {self.path}: still locked after {self.retry_budget_s:.0f}s: {exc}") from exc
        time.sleep(min(0.01 * 2**attempt, 0.5) * (0.5 + random.random()))

    def _begin(self, conn: sqlite3.Connection, what: str) -> None:
        deadline = time.monotonic() + self.retry_budget_s
        attempt = 0
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if not is_busy(exc):
                    raise StoreError(f"{what} on {self.path}: cannot start a transaction: {exc}") from exc
                self._backoff(attempt, deadline, what, exc)
                attempt += 1

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    def _check_owner(self, what: str) -> None:
        if self._state.owner != _task_key():
            raise StoreError(
                f"{what} on {self.path}: another asyncio task has a store.transaction() open on this thread; "
                "do not await inside store.transaction() (embed first, then write)"
            )

    def write(self, work: Callable[[sqlite3.Connection], T], what: str) -> T:
        """Run ``work`` atomically: its own transaction, or a savepoint inside an open transaction().

        Outside a transaction the whole of ``work`` is retried on lock contention, so it must have
        no effects besides its SQL.
        """
        conn = self.conn()
        if self._state.depth > 0:
            self._check_owner(what)
            conn.execute("SAVEPOINT store_write")
            try:
                result = work(conn)
            except BaseException:
                conn.execute("ROLLBACK TO store_write")
                conn.execute("RELEASE store_write")
                raise
            conn.execute("RELEASE store_write")
            return result
        deadline = time.monotonic() + self.retry_budget_s
        attempt = 0
        while True:
            self._begin(conn, what)
            try:
                result = work(conn)
                conn.execute("COMMIT")
                return result
            except sqlite3.OperationalError as exc:
                self._rollback(conn)
                if not is_busy(exc):
                    raise StoreError(f"{what} on {self.path} failed: {exc}") from exc
                self._backoff(attempt, deadline, what, exc)
                attempt += 1
            except sqlite3.Error as exc:
                self._rollback(conn)
                raise StoreError(f"{what} on {self.path} failed: {exc}") from exc
            except BaseException:
                self._rollback(conn)
                raise

    def read(self, work: Callable[[sqlite3.Connection], T], what: str) -> T:
        """Run a read on this thread's connection, turning SQLite errors into StoreError."""
        try:
            return work(self.conn())
        except sqlite3.Error as exc:
            raise StoreError(f"{what} on {self.path} failed: {exc}") from exc

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes on this thread into one atomic unit; nested calls become savepoints."""
        conn = self.conn()
        state = self._state
        if state.depth > 0:
            self._check_owner("transaction")
            name = f"store_tx_{state.depth}"
            conn.execute(f"SAVEPOINT {name}")
            state.depth += 1
            try:
                yield
            except BaseException:
                conn.execute(f"ROLLBACK TO {name}")
                conn.execute(f"RELEASE {name}")
                raise
            finally:
                state.depth -= 1
            conn.execute(f"RELEASE {name}")
            return
        self._begin(conn, "transaction")
        state.depth, state.owner = 1, _task_key()
        try:
            yield
        except BaseException:
            self._rollback(conn)
            raise
        else:
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback(conn)
                raise StoreError(f"commit on {self.path} failed: {exc}") from exc
        finally:
            state.depth, state.owner = 0, None

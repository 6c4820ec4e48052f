"""The one way memwise opens a SQLite file: the store, the run ledger and the embedding cache use it.

SQLite allows one writer at a time per file. Many processes (parallel ingest workers) and threads
(``asyncio.to_thread`` callers) write to the same file, so every write takes the lock up front with
``BEGIN IMMEDIATE`` (a deferred transaction that upgrades later can deadlock and fail), and a
writer that still finds the file busy after SQLite's own busy timeout backs off and tries again,
re-running its whole unit of work in a fresh transaction.

Opening does the same for every file: the parent folder is created, the file switches to WAL (so
readers never wait for the writer), each thread gets its own connection with a busy timeout, and
files whose loss would cost money (the run ledger: every recorded call is paid again) can ask for an
empty-file and integrity check that names the file and says what to do. :meth:`Database.migrate`
versions a schema with ``PRAGMA user_version`` and refuses a file written by a newer memwise.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from memwise._aio import task_key
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


class _ThreadState(threading.local):
    conn: sqlite3.Connection | None = None
    depth: int = 0
    owner: int | None = None


class Database:
    """One connection per thread to ``path``, in WAL mode, plus the write discipline described above.

    Args:
        path: the database file (its folder is created when missing).
        label: what the file is, for error messages ("store", "run ledger", "embedding cache").
        busy_timeout_s: how long SQLite itself waits for a lock before reporting busy.
        retry_budget_s: total time a write keeps retrying after that before raising StoreError.
        verify: refuse an existing file that is empty (SQLite would silently start a new database in
            it) or fails ``PRAGMA quick_check``, with an error that names the file.
        recovery: what to tell the user to do with such a file (appended to the error).

    Example:
        >>> import tempfile, pathlib
        >>> db = Database(pathlib.Path(tempfile.mkdtemp()) / "x.sqlite3", label="example")
        >>> db.migrate(1, lambda conn, old: conn.execute("CREATE TABLE t (x)"))
        >>> db.write(lambda conn: conn.execute("INSERT INTO t VALUES (1)").rowcount, "insert")
        1
        >>> db.close()
    """

    def __init__(
        self,
        path: Path,
        *,
        label: str = "SQLite file",
        busy_timeout_s: float = 30.0,
        retry_budget_s: float = 120.0,
        verify: bool = False,
        recovery: str = "",
    ) -> None:
        self.path = path
        self.label = label
        self.busy_timeout_s = busy_timeout_s
        self.retry_budget_s = retry_budget_s
        self._state = _ThreadState()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._closed = False
        self._hint = hint = f"; {recovery}" if recovery else ""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the folder for {label} {self.path}: {exc}") from exc
        if verify and self.path.exists() and self.path.stat().st_size == 0:
            raise StoreError(f"{label} {self.path} is empty (0 bytes): it was truncated, so what it held is gone{hint}")
        conn = self.conn()
        try:
            if verify:
                problems = [row[0] for row in conn.execute("PRAGMA quick_check(5)")]
                if problems != ["ok"]:
                    raise sqlite3.DatabaseError("; ".join(problems))
            self._enable_wal(conn)
        except sqlite3.DatabaseError as exc:
            self.close()
            raise StoreError(f"{label} {self.path} is corrupt or not a SQLite file ({exc}){hint}") from exc
        except BaseException:
            self.close()
            raise

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        """Switch the file to WAL (once per file; it needs a moment alone with it, so retry while busy)."""
        deadline = time.monotonic() + self.retry_budget_s
        while True:
            try:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                break
            except sqlite3.OperationalError as exc:
                if not is_busy(exc) or time.monotonic() > deadline:
                    raise StoreError(f"cannot open {self.label} {self.path} in WAL mode: {exc}") from exc
                time.sleep(0.05)
        if str(mode).lower() != "wal":
            raise StoreError(f"{self.label} {self.path}: SQLite refused WAL journal mode (got {mode!r})")

    def migrate(self, version: int, apply: Callable[[sqlite3.Connection, int], object]) -> None:
        """Bring the schema to ``version`` in one write transaction: ``apply(conn, old_version)``.

        ``apply`` must be idempotent for the versions it is given (``CREATE ... IF NOT EXISTS``); a file
        whose ``user_version`` is newer than ``version`` was written by a newer memwise and is refused.
        """

        def work(conn: sqlite3.Connection) -> None:
            old = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if old > version:
                raise StoreError(
                    f"{self.label} {self.path} has schema version {old}, newer than this memwise reads "
                    f"({version}); upgrade memwise to open it"
                )
            apply(conn, old)
            if old < version:
                conn.execute(f"PRAGMA user_version = {int(version)}")

        self.write(work, "migrating the schema")

    def connect(self) -> sqlite3.Connection:
        """A new connection in autocommit mode (transactions are explicit), with the shared pragmas."""
        if self._closed:
            raise StoreError(f"{self.label} {self.path} is closed")
        try:
            conn = sqlite3.connect(
                self.path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.OperationalError as exc:
            raise StoreError(f"cannot open {self.label} {self.path}: {exc}; check the path and permissions") from exc
        except sqlite3.DatabaseError as exc:  # "file is not a database" and friends
            raise StoreError(f"{self.label} {self.path} is corrupt or not a SQLite file ({exc}){self._hint}") from exc
        with self._all_lock:
            self._all.append(conn)
        return conn

    def conn(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use."""
        if self._closed:
            raise StoreError(f"{self.label} {self.path} is closed")
        conn = self._state.conn
        if conn is None:
            conn = self._state.conn = self.connect()
        return conn

    def close(self) -> None:
        """Close every connection opened here, on every thread; later calls raise StoreError."""
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
        if self._state.owner != task_key():
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
        state.depth, state.owner = 1, task_key()
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

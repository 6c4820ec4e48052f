"""The memwise error tree.

Every error memwise raises on purpose derives from :class:`MemwiseError`, so callers can catch the
family at once and still tell misuse from backend trouble from a misbehaving model::

    MemwiseError
    ├── ConfigError        misuse: a bad setting, a missing file, an unknown backend name
    ├── LLMError           a model backend failed (after retries); carries backend, status, retry_after
    ├── ParseError         a model replied, but not in the shape asked for; carries the raw reply
    ├── EmbeddingError     an embedding backend failed
    ├── StoreError         the store (SQLite or Postgres) or a run file could not read or write
    │   ├── RunDirBusyError        another writer holds the run directory's lock
    │   └── MemoryNotFoundError    no such memory for this user (also a NotFoundError)
    ├── NotFoundError      something asked for by id or name does not exist
    │   └── MemoryNotFoundError
    └── DatasetError       an input file is malformed; names the file and the record

Misuse is ``ConfigError`` everywhere, settings dataclasses included, so a front end can print it as a
user error without also relabelling a ``ValueError`` that came from a bug or a library (trl, torch).
"""

from __future__ import annotations


class MemwiseError(Exception):
    """Root of every error memwise raises deliberately."""


class ConfigError(MemwiseError):
    """The user asked for something that cannot work as configured."""


class LLMError(MemwiseError):
    """A chat-model backend failed, after any retries it was allowed.

    Args:
        message: what went wrong, in words.
        backend: which backend (and endpoint) failed, e.g. ``openai(http://127.0.0.1:8000/v1)``.
        status: the last HTTP status seen, or ``None`` for connection errors and timeouts.
        retry_after: the server's last Retry-After hint in seconds, when it gave one.
        attempts: how many attempts were made before giving up.
    """

    def __init__(
        self,
        message: str,
        *,
        backend: str,
        status: int | None = None,
        retry_after: float | None = None,
        attempts: int = 1,
    ) -> None:
        self.backend = backend
        self.status = status
        self.retry_after = retry_after
        self.attempts = attempts
        detail = f"status={status}" if status is not None else "no status"
        super().__init__(f"{backend}: {message} ({detail}, attempts={attempts})")


class ParseError(MemwiseError):
    """A model reply could not be parsed or validated; ``raw`` keeps the reply for the report."""

    def __init__(self, message: str, *, raw: str) -> None:
        self.raw = raw
        preview = raw if len(raw) <= 200 else raw[:200] + "..."
        super().__init__(f"{message}; raw reply: {preview!r}")


class EmbeddingError(MemwiseError):
    """An embedding backend failed."""


class StoreError(MemwiseError):
    """The store could not complete a read or write."""


class NotFoundError(MemwiseError):
    """Something asked for by id or name does not exist (or belongs to someone else, which reads the same)."""


class MemoryNotFoundError(NotFoundError, StoreError):
    """No memory with this id for this user.

    A :class:`StoreError` too, so callers that caught the store's failures before this class existed
    keep catching it; new code can tell "not there" (:class:`NotFoundError`) from "could not read".
    """


class RunDirBusyError(StoreError):
    """A run directory is locked by another writer (another process, or another open ``RunDir``).

    Args:
        message: who holds it and what to do.
        directory: the run directory.
        pid: the holder's pid, when the lock file names one.
        command: the holder's command line, when the lock file names one.
    """

    def __init__(self, message: str, *, directory: str, pid: int | None = None, command: str | None = None) -> None:
        self.directory = directory
        self.pid = pid
        self.command = command
        super().__init__(message)


class DatasetError(MemwiseError):
    """A dataset file is malformed.

    Args:
        message: what is wrong.
        path: the file.
        index: the record index within the file (0-based), when one record is at fault.
    """

    def __init__(self, message: str, *, path: str, index: int | None = None) -> None:
        self.path = path
        self.index = index
        where = f"{path}" if index is None else f"{path}, record {index}"
        super().__init__(f"{where}: {message}")

"""Records and filters: the vocabulary every memory layer uses to talk to the store.

A record is one unit of memory (a conversation turn, an extracted fact, a MetaMem rule, a UMEM
insight). Scope columns (``user_id``, ``agent_id``, ``run_id``) say whose memory it is; filters on
them are hard: the store applies them in SQL or as a numpy mask, so a query for user A can never
surface user B's records, whatever the ranking says.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from memwise.exceptions import StoreError
from memwise.store.filters import And, Cmp, In, MetaFilter, Not, Or
from memwise.store.filters import matches as match_metadata
from memwise.store.filters import parse as parse_metadata

TimeField = Literal["created_at", "ts", "event"]
"""Which time a range filter bounds. ``event`` is ``ts`` where a record has one and ``created_at``
otherwise: a memory told without a date happened no later than when it was told, so a question asked at
a given date still sees it if it was told before then."""

SCOPE_COLUMNS = ("user_id", "agent_id", "run_id")
"""The record columns that say whose memory a record is; a filter on them is an equality."""

TermOp = Literal["eq", "in", "ge", "lt", "unset_or_gt"]


@dataclass(frozen=True, slots=True)
class Term:
    """One conjunct of the scope/time/validity predicate, over one record column.

    :meth:`Filters.terms` is the one definition of what a filter means; the SQLite and Postgres
    renderings (:func:`memwise.store._sql.where_clause`), the numpy mask of the vector index and
    :meth:`Filters.matches` all walk these terms, so they cannot drift apart. A missing value (SQL
    ``NULL``, numpy ``NaN``, Python ``None``) satisfies only ``unset_or_gt``.

    Example:
        >>> Term("valid_to", "unset_or_gt", 10.0).holds(None), Term("ts", "ge", 5.0).holds(None)
        (True, False)
    """

    column: str
    op: TermOp
    value: Any

    def holds(self, stored: Any) -> bool:
        """Whether a record whose ``column`` holds ``stored`` passes this term."""
        if self.op == "unset_or_gt":
            return stored is None or stored > self.value
        if stored is None:
            return False
        if self.op == "eq":
            return stored == self.value
        if self.op == "in":
            return stored in self.value
        if self.op == "ge":
            return stored >= self.value
        return stored < self.value


def new_id() -> str:
    """A fresh record id (uuid4 hex) for callers that do not bring their own."""
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class Record:
    """One stored memory.

    ``created_at`` is when the store learnt it; ``ts`` is when the event happened (a session date),
    which is what temporal questions ask about. ``valid_from``/``valid_to`` bound the period a record
    holds true: :meth:`SQLiteStore.invalidate` sets ``valid_to`` instead of deleting, so history stays
    queryable with ``Filters(include_invalid=True)``.
    """

    text: str
    kind: str = "turn"
    user_id: str | None = None
    agent_id: str | None = None
    run_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=new_id)
    created_at: float = field(default_factory=time.time)
    ts: float | None = None
    valid_from: float | None = None
    valid_to: float | None = None
    index_text: str | None = None

    def __post_init__(self) -> None:
        """Refuse a record no store could keep or find again, at construction rather than inside a write."""
        if not isinstance(self.id, str) or not self.id:
            raise StoreError(f"record id must be a non-empty string, got {self.id!r}")
        if not isinstance(self.text, str):
            raise StoreError(f"record {self.id}: text must be a string, got {type(self.text).__name__}")
        if not self.kind:
            raise StoreError(f"record {self.id}: kind must be a non-empty string")

    @property
    def indexed_text(self) -> str:
        """What retrieval reads of the record (its vector, entities, cues): ``index_text`` where set, else ``text``."""
        return self.index_text or self.text

    @property
    def event(self) -> float:
        """When it happened as far as the store knows: ``ts``, else when the store learnt it."""
        return self.created_at if self.ts is None else self.ts

    def is_valid(self, at: float) -> bool:
        """True while the record holds at time ``at`` (no ``valid_to``, or one still in the future)."""
        return self.valid_to is None or self.valid_to > at

    def content_hash(self) -> str:
        """Fingerprint of what the caller said, so a re-add of the same id can be told from a conflict.

        Timestamps the store fills in (``created_at``) and validity bounds (changed by
        ``invalidate``) are left out: re-adding a record after a retry must stay a no-op.
        """
        payload = {
            "text": self.text,
            "kind": self.kind,
            "user_id": self.user_id,
            "agent_id": self.agent_id,
            "run_id": self.run_id,
            "metadata": self.metadata,
            "ts": self.ts,
            "index_text": self.index_text,
        }
        blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class ScoredRecord:
    """A search hit. ``score`` is higher-is-better: cosine for vectors, negated bm25 for text."""

    record: Record
    score: float


@dataclass(frozen=True, slots=True)
class Filters:
    """Hard constraints on which records a read may return.

    A ``None`` field means "any". ``kind`` takes one kind or a tuple of kinds. ``since``/``until``
    bound ``time_field`` as the half-open range ``[since, until)``; on ``ts``, records without an
    event time are excluded once a bound is set. Invalidated records are hidden unless
    ``include_invalid`` is set. ``metadata`` takes a mem0-style filter dict (see
    :mod:`memwise.store.filters`), parsed here once: a malformed one raises StoreError at
    construction, before any store is asked.
    """

    user_id: str | None = None
    agent_id: str | None = None
    run_id: str | None = None
    kind: str | tuple[str, ...] | None = None
    since: float | None = None
    until: float | None = None
    time_field: TimeField = "created_at"
    include_invalid: bool = False
    metadata: MetaFilter | Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        """Normalise the filter (parsed metadata, kinds as a tuple) and refuse fields no store can apply."""
        if self.metadata is not None and not isinstance(self.metadata, Cmp | In | And | Or | Not):
            object.__setattr__(self, "metadata", parse_metadata(self.metadata))
        if self.time_field not in ("created_at", "ts", "event"):
            raise StoreError(f"Filters.time_field must be 'created_at', 'ts' or 'event', got {self.time_field!r}")
        if isinstance(self.kind, list):
            object.__setattr__(self, "kind", tuple(self.kind))
        if isinstance(self.kind, tuple) and not self.kind:
            raise StoreError("Filters.kind is an empty tuple: it would match nothing; use None for any kind")
        if self.since is not None and self.until is not None and self.since > self.until:
            raise StoreError(f"Filters: since ({self.since}) is after until ({self.until})")

    @property
    def meta(self) -> MetaFilter | None:
        """The parsed metadata filter (``metadata`` after construction), or None for any metadata."""
        return self.metadata  # type: ignore[return-value]

    @property
    def kinds(self) -> tuple[str, ...] | None:
        """``kind`` as a tuple, or None for any."""
        if self.kind is None:
            return None
        return (self.kind,) if isinstance(self.kind, str) else self.kind

    def terms(self, now: float) -> list[Term]:
        """The scope, kind, time-range and validity conditions as terms (metadata is :attr:`meta`).

        Example:
            >>> [(t.column, t.op) for t in Filters(user_id="u", since=1.0).terms(now=5.0)]
            [('user_id', 'eq'), ('created_at', 'ge'), ('valid_to', 'unset_or_gt')]
        """
        out = [Term(col, "eq", getattr(self, col)) for col in SCOPE_COLUMNS if getattr(self, col) is not None]
        if self.kinds is not None:
            out.append(Term("kind", "in", self.kinds))
        if self.since is not None:
            out.append(Term(self.time_field, "ge", self.since))
        if self.until is not None:
            out.append(Term(self.time_field, "lt", self.until))
        if not self.include_invalid:
            out.append(Term("valid_to", "unset_or_gt", now))
        return out

    def matches(self, record: Record, at: float) -> bool:
        """The same predicate the SQL and numpy paths apply, for re-checking a handful of hits."""
        if not all(term.holds(getattr(record, term.column)) for term in self.terms(at)):
            return False
        return self.meta is None or match_metadata(self.meta, record.metadata)


ANY = Filters()
"""Filters that let everything valid through."""


@runtime_checkable
class Store(Protocol):
    """What every memory layer needs from a store; :class:`SQLiteStore` and ``PostgresStore`` both satisfy it.

    Synchronous on purpose: the callers (facts, MetaMem, UMEM) run it in ``asyncio.to_thread`` and
    group writes in ``transaction()``, which is bound to the calling thread. A server that wants to
    await store calls wraps any Store in :class:`memwise.store.aio.AsyncStore`.

    Semantics both implementations keep (the shared contract tests check them): ``add`` is atomic,
    a re-add of the same id and content is a no-op and the same id with other content raises
    StoreError; scope, time, validity and metadata filters are hard (applied inside the store);
    ``invalidate`` keeps history; a space's vector dimension is fixed by its first vector.
    """

    space: str

    def close(self) -> None:
        """Release every connection this store opened; the store is not used afterwards."""
        ...

    def transaction(self) -> AbstractContextManager[None]:
        """Group this thread's writes: all of them commit at the end, or none if the block raises."""
        ...

    def add(
        self, records: Iterable[Record], vectors: npt.ArrayLike | None = None, *, space: str | None = None
    ) -> list[str]:
        """Insert ``records`` (with one vector row each, when given) atomically and return their ids in order."""
        ...

    def update(
        self,
        record_id: str,
        *,
        text: str | None = None,
        metadata: dict[str, Any] | None = None,
        vector: npt.ArrayLike | None = None,
        space: str | None = None,
        index_text: str | None = None,
    ) -> Record:
        """Change a record in place and return it; None means keep, and ``metadata`` replaces the whole dict."""
        ...

    def delete(self, record_id: str) -> bool:
        """Remove a record and its vectors for good (no history); False when there was none."""
        ...

    def invalidate(self, record_id: str, at: float | None = None) -> Record:
        """End a record's validity at ``at`` (now by default) instead of deleting it, so history keeps it."""
        ...

    def get(self, record_id: str) -> Record | None:
        """The record with this id, or None; filters do not apply (an invalidated record is returned too)."""
        ...

    def get_for_update(self, record_id: str) -> Record | None:
        """:meth:`get`, and no other writer may change the record until the enclosing transaction ends.

        For a read-check-write inside :meth:`transaction` (is this still the current version?) that
        must hold against other processes. SQLite's transaction holds the whole file's write lock
        already; Postgres locks the row.
        """
        ...

    def get_many(self, ids: Iterable[str]) -> list[Record]:
        """The records of ``ids`` that exist, in the order asked; missing ids are skipped, not errors."""
        ...

    def get_vector(self, record_id: str, *, space: str | None = None) -> npt.NDArray[np.float32] | None:
        """The record's vector in ``space`` (the store's own by default), or None if it has none there."""
        ...

    def list_records(self, filters: Filters | None = None, limit: int | None = None, offset: int = 0) -> list[Record]:
        """Records matching ``filters``, oldest first, a page at a time (``limit``/``offset``)."""
        ...

    def vector_spaces(self) -> dict[str, int]:
        """How many vectors each space holds, so an opener can tell which model's vectors a store has."""
        ...

    def ids_without_vector(
        self, space: str, *, source: str | None = None, after: str | None = None, limit: int = 1000
    ) -> list[str]:
        """Ids of records with a vector in ``source`` (any other space if None) but none in ``space``.

        Ascending, past ``after``, at most ``limit``: what a re-embedding still has to do, a page at a
        time (pass a page's last id as ``after`` for the next). Records never embedded anywhere are not
        listed, and filters do not apply (every user's records, invalidated ones too).
        """
        ...

    def drop_space(self, space: str) -> int:
        """Delete every vector of ``space`` (records and other spaces stay) and return how many went."""
        ...

    def count(self, filters: Filters | None = None) -> int:
        """How many records match ``filters``, without reading them."""
        ...

    def search_text(self, query: str, top_k: int = 10, filters: Filters | None = None) -> list[ScoredRecord]:
        """Full-text matches for ``query``, best first, with the filters applied inside the store."""
        ...

    def search_vector(
        self,
        query_vec: npt.ArrayLike,
        top_k: int = 10,
        filters: Filters | None = None,
        *,
        space: str | None = None,
    ) -> list[ScoredRecord]:
        """Nearest records to ``query_vec`` by cosine similarity, best first, filters applied inside the store."""
        ...


FINISHED_JOB_STATUSES = ("done", "failed")
"""Job statuses that no longer change: :meth:`JobLog.prune_jobs` may forget jobs in them."""


class JobLog(Protocol):
    """Where a server keeps its jobs: a ``jobs`` table beside the records, so every process on the store sees them.

    Kept apart from :class:`Store` because only the server uses it. The store holds each job's state as a
    JSON document whose fields are the server's (:mod:`memwise.server.jobs`); it knows the status only,
    to prune finished jobs, and stamps each save with the time it was written.
    """

    def save_job(self, job_id: str, status: str, state: Mapping[str, Any]) -> None:
        """Insert or replace the job's state."""
        ...

    def load_job(self, job_id: str) -> dict[str, Any] | None:
        """The job's last saved state, or None."""
        ...

    def prune_jobs(self, keep: int) -> int:
        """Forget finished jobs beyond the ``keep`` most recently saved jobs; returns how many went."""
        ...


def job_state_json(job_id: str, state: Mapping[str, Any]) -> str:
    """A job's state as strict JSON (jsonb refuses NaN), or StoreError naming the job."""
    try:
        return json.dumps(dict(state), ensure_ascii=False, sort_keys=True, default=str, allow_nan=False)
    except ValueError as exc:
        raise StoreError(f"job {job_id}: its state must be JSON without NaN or infinity: {exc}") from exc

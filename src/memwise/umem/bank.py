"""The UMEM insight bank: task-keyed entries of reusable insights, retrieved by task similarity.

Each entry is one store record of kind ``"insight"``. Its text is the *key*, the task that produced
the insights, and that is what gets embedded: a new task retrieves the entries written for tasks
like it. The *values* (the insight strings), the usage count and the reward score live in the
record's metadata. Only values are ever shown to the executor (:func:`render_for_executor`).

Banks share a store but never each other's entries. The store's scope filters narrow each query,
and the bank then keeps only records whose scope equals its own exactly. Without that second check,
a bank scoped to ``agent_id="a"`` would also see the entries of a bank scoped to
``agent_id="a", run_id="r"``.

Record ids are derived from scope and key, so a duplicate key is found with one ``get`` and merged
into the existing entry instead of being stored twice.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from memwise.embed.base import Embedder
from memwise.exceptions import ConfigError, StoreError
from memwise.facts.spaces import choose_space
from memwise.store.base import Filters, Record, ScoredRecord
from memwise.store.sqlite import SQLiteStore

KIND = "insight"


@dataclass(frozen=True, slots=True)
class BankEntry:
    """One bank entry as callers see it.

    ``usage`` counts how often retrieval returned the entry; ``score`` is the last reward credited
    to it (0.0 until someone calls :meth:`InsightBank.set_score`).
    """

    id: str
    key: str
    values: list[str]
    usage: int = 0
    score: float = 0.0


@dataclass(frozen=True, slots=True)
class Retrieval:
    """What one :meth:`InsightBank.retrieve` returned, and how many top-K hits the floor removed.

    ``similarities`` is row-aligned with ``entries`` (cosine of the task to each key). Counting the
    dropped hits matters: a floor that removes most hits starves the executor silently otherwise.
    """

    entries: list[BankEntry]
    dropped_by_floor: int
    similarities: list[float] = field(default_factory=list)


@dataclass(slots=True)
class BankStats:
    """Running counters over a bank's lifetime in this process, for run reports."""

    retrievals: int = 0
    hits: int = 0
    dropped_by_floor: int = 0
    added: int = 0
    merged: int = 0
    updated: int = 0
    evicted: int = 0


def clean_values(values: Sequence[str]) -> list[str]:
    """Stripped, non-empty values in first-seen order, without duplicates.

    A list of insights that repeats itself wastes executor context and inflates the entry, so every
    write path passes through here.
    """
    if isinstance(values, str):
        raise TypeError("insights must be a sequence of strings, not one string")
    seen: dict[str, None] = {}
    for value in values:
        text = value.strip()
        if text:
            seen.setdefault(text, None)
    return list(seen)


def render_for_executor(entries: Sequence[BankEntry]) -> str:
    r"""The values of ``entries`` as a bullet list, keys left out.

    Keys are other tasks' texts; showing them would invite the executor to copy an unrelated answer.
    Values repeated across entries appear once. No entries gives an empty string.

    Example:
        >>> render_for_executor([BankEntry("1", "task", ["Check units.", "Re-read the question."])])
        '- Check units.\n- Re-read the question.'
    """
    values = clean_values([value for entry in entries for value in entry.values])
    return "\n".join("- " + value.replace("\n", "\n  ") for value in values)


def _entry(record: Record) -> BankEntry:
    meta = record.metadata
    return BankEntry(
        id=record.id,
        key=record.text,
        values=[str(v) for v in meta.get("values", [])],
        usage=int(meta.get("usage", 0)),
        score=float(meta.get("score", 0.0)),
    )


class InsightBank:
    """A scoped bank of insights over a :class:`SQLiteStore`.

    Args:
        store: where entries live; vectors go in the space named after the embedder, so keys
            embedded by different models are never compared. The space is chosen once, here, by
            :func:`~memwise.facts.spaces.choose_space`, so a bank written under an older name of the
            same model (an unnamed ``default`` space, or MiniLM's former ``-bf16`` one) keeps finding
            its entries, and a bank of another model is refused instead of searched in vain.
        embedder: embeds keys and queries.
        agent_id, run_id, user_id: the bank's scope. At least one must be set, so that a bank never
            reads the whole store.
        top_k: entries returned per retrieval (paper: 3).
        similarity_floor: hits with a lower cosine are dropped and counted (released code: 0.5).
        max_entries: size cap; past it the least used entries go first, the oldest on ties
            (released code: 10,000).
    """

    def __init__(
        self,
        store: SQLiteStore,
        embedder: Embedder,
        *,
        agent_id: str | None = None,
        run_id: str | None = None,
        user_id: str | None = None,
        top_k: int = 3,
        similarity_floor: float = 0.5,
        max_entries: int = 10_000,
    ) -> None:
        if agent_id is None and run_id is None and user_id is None:
            raise ConfigError("InsightBank needs a scope: pass agent_id, run_id and/or user_id to keep banks apart")
        if top_k < 1:
            raise ConfigError(f"InsightBank: top_k must be at least 1, got {top_k}")
        if not -1.0 <= similarity_floor <= 1.0:
            raise ConfigError(f"InsightBank: similarity_floor is a cosine, so in [-1, 1]; got {similarity_floor}")
        if max_entries < 1:
            raise ConfigError(f"InsightBank: max_entries must be at least 1, got {max_entries}")
        self.store = store
        self.embedder = embedder
        self.agent_id = agent_id
        self.run_id = run_id
        self.user_id = user_id
        self.top_k = top_k
        self.similarity_floor = similarity_floor
        self.max_entries = max_entries
        self.stats = BankStats()
        self._filters = Filters(user_id=user_id, agent_id=agent_id, run_id=run_id, kind=KIND)
        self._space = choose_space(store.vector_spaces(), embedder.name)

    # -- helpers --------------------------------------------------------------------------------

    def _owns(self, record: Record) -> bool:
        return (
            record.kind == KIND
            and record.agent_id == self.agent_id
            and record.run_id == self.run_id
            and record.user_id == self.user_id
        )

    def _entry_id(self, key: str) -> str:
        blob = json.dumps([self.agent_id, self.run_id, self.user_id, key], ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]

    def _own_record(self, entry_id: str) -> Record:
        record = self.store.get(entry_id)
        if record is None or not self._owns(record):
            raise StoreError(f"InsightBank: no entry {entry_id!r} in this bank")
        return record

    async def _embed_one(self, text: str) -> Any:
        return (await self.embedder.embed([text]))[0]

    def _search(self, vector: Any, k: int) -> list[ScoredRecord]:
        """Top ``k`` hits owned by this bank; fetches more when nested scopes crowd the results."""
        fetch = k
        while True:
            hits = self.store.search_vector(vector, top_k=fetch, filters=self._filters, space=self._space)
            mine = [hit for hit in hits if self._owns(hit.record)]
            if len(mine) >= k or len(hits) < fetch:
                return mine[:k]
            fetch *= 4

    # -- reads ----------------------------------------------------------------------------------

    def entries(self) -> list[BankEntry]:
        """Every entry in the bank, oldest first."""
        return [_entry(r) for r in self.store.list_records(self._filters) if self._owns(r)]

    def count(self) -> int:
        """How many entries the bank holds."""
        return len(self.entries())

    def get(self, entry_id: str) -> BankEntry:
        """One entry by id. Raises StoreError when this bank has none by that id."""
        return _entry(self._own_record(entry_id))

    async def retrieve(self, task: str, *, count_usage: bool = True) -> Retrieval:
        """The top-K entries whose keys are most like ``task``, minus those under the floor.

        Returned entries have their usage incremented (the entries carry the new count), since
        usage decides eviction. Reward computation passes ``count_usage=False``: looking at what a
        neighbour *would* retrieve is not a use, and must not change which entries get evicted.
        """
        vector = await self._embed_one(task)
        hits = self._search(vector, self.top_k)
        kept = [hit for hit in hits if hit.score >= self.similarity_floor]
        dropped = len(hits) - len(kept)
        if not count_usage:
            return Retrieval(
                entries=[_entry(hit.record) for hit in kept],
                dropped_by_floor=dropped,
                similarities=[hit.score for hit in kept],
            )
        entries: list[BankEntry] = []
        with self.store.transaction():
            for hit in kept:
                meta = dict(hit.record.metadata)
                meta["usage"] = int(meta.get("usage", 0)) + 1
                entries.append(_entry(self.store.update(hit.record.id, metadata=meta)))
        self.stats.retrievals += 1
        self.stats.hits += len(entries)
        self.stats.dropped_by_floor += dropped
        return Retrieval(entries=entries, dropped_by_floor=dropped, similarities=[hit.score for hit in kept])

    # -- writes ---------------------------------------------------------------------------------

    async def add(self, task: str, insights: Sequence[str]) -> BankEntry:
        """Store ``insights`` under ``task``; an entry with the same key gains the new values instead.

        Merging keeps the entry's usage and score: it is the same memory, grown. A new entry may
        push the bank past its cap, which evicts others (never the entry just added).
        """
        key = task.strip()
        if not key:
            raise ConfigError("InsightBank.add: the task (the entry's key) is empty")
        values = clean_values(insights)
        if not values:
            raise ConfigError("InsightBank.add: no non-empty insight to store")
        entry_id = self._entry_id(key)
        existing = self.store.get(entry_id)
        if existing is not None and self._owns(existing):
            meta = dict(existing.metadata)
            meta["values"] = clean_values([*meta.get("values", []), *values])
            self.stats.merged += 1
            return _entry(self.store.update(entry_id, metadata=meta))
        vector = await self._embed_one(key)
        record = Record(
            text=key,
            kind=KIND,
            agent_id=self.agent_id,
            run_id=self.run_id,
            user_id=self.user_id,
            metadata={"values": values, "usage": 0, "score": 0.0},
            id=entry_id,
        )
        self.store.add([record], vectors=vector[None, :], space=self._space)
        self.stats.added += 1
        self._evict(keep=entry_id)
        return _entry(record)

    async def update(self, entry_id: str, insights: Sequence[str]) -> BankEntry:
        """Replace the values of one entry (the Mem-Optimizer's UPDATE); key, usage and score stay."""
        values = clean_values(insights)
        if not values:
            raise ConfigError("InsightBank.update: no non-empty insight to store")
        record = self._own_record(entry_id)
        meta = dict(record.metadata)
        meta["values"] = values
        self.stats.updated += 1
        return _entry(self.store.update(entry_id, metadata=meta))

    async def set_score(self, entry_id: str, score: float) -> BankEntry:
        """Record the reward credited to an entry (kept for reports and future eviction policies)."""
        record = self._own_record(entry_id)
        meta = dict(record.metadata)
        meta["score"] = float(score)
        return _entry(self.store.update(entry_id, metadata=meta))

    def _evict(self, *, keep: str) -> None:
        """Delete the least used entries (oldest first on ties) until the bank fits its cap."""
        if self.store.count(self._filters) <= self.max_entries:
            return  # an upper bound on our own count: nested scopes only add to it
        records = [r for r in self.store.list_records(self._filters) if self._owns(r)]
        excess = len(records) - self.max_entries
        if excess <= 0:
            return
        candidates = sorted(
            (r for r in records if r.id != keep),
            key=lambda r: (int(r.metadata.get("usage", 0)), r.created_at),
        )
        with self.store.transaction():
            for record in candidates[:excess]:
                self.store.delete(record.id)
        self.stats.evicted += min(excess, len(candidates))

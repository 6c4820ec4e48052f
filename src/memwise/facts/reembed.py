"""Re-embedding a store for another embedder, so switching models loses no memory.

A memory searches the vector space named after its embedder (:mod:`memwise.facts.spaces`) and refuses a
store whose vectors all belong to another model. :func:`reembed_store` is the way forward: it embeds, with
the new embedder, every record that was embedded before but has no vector in the new space yet (every
user's, invalidated ones too, so history stays searchable), from the same text ingest embedded.

It works in batches, each written atomically, and picks up where it stopped: a re-run skips what is done,
and a kill loses at most the batch being embedded. Old spaces are kept (a rollback to the old model costs
nothing) unless ``drop_old`` asks, and then only once every record has its new vector.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from memwise.embed.base import Embedder
from memwise.exceptions import ConfigError, StoreError
from memwise.store.base import Store

DEFAULT_BATCH = 256
"""Records embedded and written per step: one transaction each, so the most a kill can lose."""

_COUNT_PAGE = 10_000

Progress = Callable[[int, int], None]
"""Called with (records embedded so far, records this run has to embed) after each batch."""


@dataclass(frozen=True)
class ReembedReport:
    """What a re-embedding found and did.

    ``records`` is how many records the target space covers among those embedded before (``embedded`` by
    this run plus ``already_present``); the space counts are :meth:`Store.vector_spaces` before and after.
    """

    space: str
    records: int
    embedded: int
    already_present: int
    spaces_before: dict[str, int] = field(default_factory=dict)
    spaces_after: dict[str, int] = field(default_factory=dict)
    dropped: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values, for ``memwise reembed --json``."""
        return {
            "space": self.space,
            "records": self.records,
            "embedded": self.embedded,
            "already_present": self.already_present,
            "spaces_before": dict(self.spaces_before),
            "spaces_after": dict(self.spaces_after),
            "dropped": list(self.dropped),
        }


def _count_missing(store: Store, space: str, source: str | None) -> int:
    """How many records still lack a vector in ``space``, counted a page of ids at a time."""
    total, after = 0, None
    while page := store.ids_without_vector(space, source=source, after=after, limit=_COUNT_PAGE):
        total += len(page)
        after = page[-1]
    return total


def _old_spaces(held: dict[str, int], space: str, source: str | None) -> list[str]:
    if source is not None:
        return [source] if held.get(source, 0) > 0 else []
    return sorted(name for name, n in held.items() if n > 0 and name != space)


async def reembed_store(
    store: Store,
    embedder: Embedder,
    *,
    source_space: str | None = None,
    drop_old: bool = False,
    batch_size: int = DEFAULT_BATCH,
    on_progress: Progress | None = None,
) -> ReembedReport:
    """Give every embedded record of ``store`` a vector in ``embedder``'s space; returns what was done.

    Args:
        store: any store, opened without binding a space (the records of every user are re-embedded).
        embedder: the new model; its ``name`` is the space written.
        source_space: re-embed only the records with a vector in this space (and drop only it); None:
            records with a vector in any other space.
        drop_old: once every record has its new vector, delete the old spaces' vectors. Off by default,
            so going back to the old model costs nothing.
        batch_size: records per embedding call and per write.
        on_progress: called after each batch with (embedded so far, to embed in all).

    Raises:
        ConfigError: ``source_space`` is the embedder's own space, or ``batch_size`` is below 1.
        StoreError: the new space holds vectors of another dimension, or a record changed underneath.
    """
    space = embedder.name
    if source_space == space:
        raise ConfigError(f"source_space {space!r} is the embedder's own space: there is nothing to re-embed from")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    before = await asyncio.to_thread(store.vector_spaces)
    todo = await asyncio.to_thread(_count_missing, store, space, source_space)
    done, after = 0, None
    if on_progress is not None:
        on_progress(0, todo)
    while True:
        ids = await asyncio.to_thread(
            store.ids_without_vector, space, source=source_space, after=after, limit=batch_size
        )
        if not ids:
            break
        after = ids[-1]
        records = await asyncio.to_thread(store.get_many, ids)
        if not records:  # deleted since they were listed
            continue
        vectors = np.asarray(await embedder.embed([r.indexed_text for r in records]), dtype=np.float32)
        # Re-adding a stored record is a no-op for the record; only the missing vector is written.
        await asyncio.to_thread(store.add, records, vectors, space=space)
        done += len(records)
        if on_progress is not None:
            on_progress(done, max(todo, done))
    dropped: list[str] = []
    if drop_old:
        left = await asyncio.to_thread(store.ids_without_vector, space, source=source_space, limit=1)
        if left:  # written meanwhile by a process still on the old model: its vectors must stay
            raise StoreError(
                f"record {left[0]!r} gained an old vector while re-embedding; nothing was dropped. Run again"
            )
        for old in _old_spaces(before, space, source_space):
            await asyncio.to_thread(store.drop_space, old)
            dropped.append(old)
    after_spaces = await asyncio.to_thread(store.vector_spaces)
    covered = after_spaces.get(space, 0) if source_space is None else before.get(source_space, 0)
    return ReembedReport(
        space=space,
        records=max(covered, done),
        embedded=done,
        already_present=max(covered - done, 0),
        spaces_before=before,
        spaces_after=after_spaces,
        dropped=tuple(dropped),
    )

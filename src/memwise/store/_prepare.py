"""Checks and record edits both stores make before any SQL runs, so SQLite and Postgres agree on them.

A batch with one id under two contents, a vector with NaN, or a query of the wrong shape is refused
here with the same StoreError on either store; what an ``update`` does to ``index_text`` is decided
here once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt

from memwise.embed.base import normalise
from memwise.exceptions import StoreError
from memwise.store.base import Record


def as_matrix(vectors: npt.ArrayLike, rows: int, what: str) -> npt.NDArray[np.float32]:
    """``vectors`` as ``rows`` unit-norm float32 rows; StoreError for a wrong shape, NaN or infinity."""
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[0] != rows or arr.shape[1] == 0:
        raise StoreError(f"{what}: expected vectors of shape ({rows}, dim), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise StoreError(f"{what}: vectors contain NaN or infinity")
    return np.ascontiguousarray(normalise(arr))


def query_vector(query_vec: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """A search query as one unit-norm vector; StoreError when it is empty or not finite."""
    query = np.asarray(query_vec, dtype=np.float32).reshape(-1)
    if query.size == 0 or not np.isfinite(query).all():
        raise StoreError(f"search_vector: query vector is empty or not finite (shape {query.shape})")
    return normalise(query)[0]


def checked_batch(
    records: Iterable[Record], vectors: npt.ArrayLike | None
) -> tuple[list[Record], list[str], list[int], npt.NDArray[np.float32] | None]:
    """An add's records, their content hashes, the position of each id's first record, and their vectors.

    A repeated id with the same content is written once; with other content the whole add is refused,
    since neither version could be said to be the one the caller meant. An empty add checks nothing.
    """
    batch = list(records)
    if not batch:
        return [], [], [], None
    mat = None if vectors is None else as_matrix(vectors, len(batch), "add")
    hashes = [record.content_hash() for record in batch]
    unique: dict[str, int] = {}
    for i, record in enumerate(batch):
        first = unique.setdefault(record.id, i)
        if first != i and hashes[first] != hashes[i]:
            raise StoreError(f"add: record id {record.id!r} appears twice in one batch with different content")
    return batch, hashes, list(unique.values()), mat


def edited(
    current: Record, *, text: str | None, metadata: dict[str, Any] | None, index_text: str | None
) -> tuple[Record, bool]:
    """The record an ``update`` writes, and whether its text changed.

    New text without a new ``index_text`` clears the old one, so full-text search never finds a record
    by words it no longer has; ``metadata`` replaces the whole dict.
    """
    text_changed = text is not None and text != current.text
    new = replace(
        current,
        text=current.text if text is None else text,
        metadata=current.metadata if metadata is None else dict(metadata),
        index_text=index_text if index_text is not None else None if text_changed else current.index_text,
    )
    return new, text_changed

"""Semantic Neighbourhood Modelling: which training tasks judge a memory written for another task.

UMEM rewards a candidate memory by how much it helps on the N nearest *other* tasks (by cosine of
their embeddings), not on the task it was written for, so a memory that only memorises its own
answer earns nothing. Neighbourhoods depend only on the task embeddings, so they are computed once
before training and stored (see `Neighbourhoods.to_dict`).

Why neighbours are the right judges (`lipschitz_bound`): for unit vectors, two tasks whose
embeddings are close score every memory key almost identically, so the neighbours of q are the
tasks most likely to retrieve a memory keyed by q.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from memwise.exceptions import ConfigError

__all__ = ["Neighbourhoods", "count_duplicates", "lipschitz_bound", "nearest_neighbours"]

DEFAULT_BLOCK_SIZE = 1024


def nearest_neighbours(
    vectors: npt.ArrayLike,
    k: int = 3,
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
    near_duplicate: float | None = None,
    groups: Sequence[int] | None = None,
) -> npt.NDArray[np.int64]:
    """Return, for each row, the indices of the ``k`` most similar *other* rows by dot product.

    Rows are expected to be unit-norm, so the dot product is the cosine. A row never lists itself.
    By default a duplicate row is a legitimate (perfect) neighbour. With ``near_duplicate`` set, rows
    whose cosine to the row is above it are excluded, and with ``groups`` (one label per row, e.g.
    the index of its normalised text) rows of the same group are excluded: a copied task is no
    judge, since a memory that only restates the copy's answer would earn the full reward on it.
    A row left with fewer than ``k`` eligible rows is padded with ``-1``. Ties go to the lower index
    so results are reproducible across runs and block sizes. ``k`` is capped at ``n - 1``.
    Similarities are computed ``block_size`` rows at a time, so memory stays O(block_size * n)
    rather than O(n**2) for large task sets.

    Example:
        >>> v = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
        >>> nearest_neighbours(v, k=1).tolist()
        [[1], [0], [0]]
        >>> nearest_neighbours(v, k=5).shape  # k capped at n - 1
        (3, 2)
    """
    v = np.asarray(vectors, dtype=np.float32)
    if v.ndim != 2:
        raise ConfigError(f"vectors must be a 2-D (n, d) array, got shape {v.shape}")
    if k < 0:
        raise ConfigError(f"k must be >= 0, got {k}")
    if block_size < 1:
        raise ConfigError(f"block_size must be >= 1, got {block_size}")
    if not np.all(np.isfinite(v)):
        raise ConfigError("vectors contain NaN or infinite values; re-embed or drop those tasks")
    n = v.shape[0]
    labels = None if groups is None else np.asarray(groups, dtype=np.int64)
    if labels is not None and labels.shape != (n,):
        raise ConfigError(f"groups must give one label per row: {n} rows, {labels.shape[0]} labels")
    k = min(k, max(n - 1, 0))
    out = np.empty((n, k), dtype=np.int64)
    if k == 0:
        return out
    for start in range(0, n, block_size):
        stop = min(start + block_size, n)
        out[start:stop] = _top_k_block(v, start, stop, k, _excluded(v, start, stop, near_duplicate, labels))
    return out


def _excluded(
    v: npt.NDArray[np.float32],
    start: int,
    stop: int,
    near_duplicate: float | None,
    labels: npt.NDArray[np.int64] | None,
) -> npt.NDArray[np.bool_]:
    """Which (row, other) pairs of rows ``start:stop`` are duplicates, by cosine or by group (self included)."""
    mask = np.zeros((stop - start, v.shape[0]), dtype=bool)
    if near_duplicate is not None:
        mask |= (v[start:stop] @ v.T) > near_duplicate
    if labels is not None:
        mask |= labels[start:stop, None] == labels[None, :]
    rows = np.arange(start, stop)
    mask[rows - start, rows] = False  # the row itself is not a duplicate, it is just never chosen
    return mask


def count_duplicates(
    vectors: npt.ArrayLike,
    *,
    near_duplicate: float | None = None,
    groups: Sequence[int] | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> list[int]:
    """For each row, how many other rows :func:`nearest_neighbours` excludes as its duplicates."""
    v = np.asarray(vectors, dtype=np.float32)
    labels = None if groups is None else np.asarray(groups, dtype=np.int64)
    counts: list[int] = []
    for start in range(0, v.shape[0], block_size):
        stop = min(start + block_size, v.shape[0])
        counts += _excluded(v, start, stop, near_duplicate, labels).sum(axis=1).tolist()
    return counts


def _top_k_block(
    v: npt.NDArray[np.float32], start: int, stop: int, k: int, excluded: npt.NDArray[np.bool_]
) -> npt.NDArray[np.int64]:
    """Top-k other rows for rows ``start:stop``, ties broken by lower index; excluded pairs give -1."""
    rows = np.arange(start, stop)
    # Negated so "smaller is better" and the self-similarity can be pushed to +inf (never chosen).
    neg = -(v[start:stop] @ v.T)
    neg[rows - start, rows] = np.inf
    neg[excluded] = np.inf
    # argpartition is O(n) per row but picks arbitrarily among values tied at the k-th place.
    part = np.argpartition(neg, k - 1, axis=1)[:, :k]
    part_vals = np.take_along_axis(neg, part, axis=1)
    order = np.lexsort((part, part_vals), axis=-1)
    result = np.take_along_axis(part, order, axis=1)
    # Rows with more candidates tied at the k-th value than slots left need an exact re-pick.
    kth = part_vals.max(axis=1, keepdims=True)
    tied = np.count_nonzero(neg <= kth, axis=1) > k
    for r in np.flatnonzero(tied):
        candidates = np.flatnonzero(neg[r] <= kth[r])  # ascending index
        best = np.argsort(neg[r, candidates], kind="stable")[:k]
        result[r] = candidates[best]
    result = result.astype(np.int64, copy=False)
    result[np.take_along_axis(neg, result, axis=1) == np.inf] = -1  # self or duplicates: no neighbour
    return result


def lipschitz_bound(cos_q1_q2: float) -> float:
    """Bound on how differently two tasks can score any memory key, given their cosine.

    For unit embeddings, ``|e(q1)·e(k) - e(q2)·e(k)| <= ||e(q1) - e(q2)|| = sqrt(2 - 2 cos)``
    (UMEM appendix C.1): tasks with a high cosine rank memory keys nearly the same way, which is why
    a memory written for q is judged on q's nearest neighbours. The cosine is clipped to [-1, 1] to
    absorb float noise.

    Example:
        >>> lipschitz_bound(1.0)
        0.0
        >>> lipschitz_bound(0.5)
        1.0
        >>> lipschitz_bound(-1.0)
        2.0
    """
    c = min(1.0, max(-1.0, float(cos_q1_q2)))
    return math.sqrt(2.0 - 2.0 * c)


@dataclass(frozen=True)
class Neighbourhoods:
    """Stored neighbour lists: ``neighbour_ids[i]`` are the nearest other tasks of ``task_ids[i]``.

    Kept as task ids (not row indices) so the stored file stays valid if the task list is reordered.

    Example:
        >>> v = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]], dtype=np.float32)
        >>> nb = Neighbourhoods.build(["a", "b", "c"], v, k=1)
        >>> nb.of("a")
        ('b',)
        >>> Neighbourhoods.from_dict(nb.to_dict()) == nb
        True
    """

    task_ids: tuple[str, ...]
    neighbour_ids: tuple[tuple[str, ...], ...]
    _row: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.task_ids) != len(self.neighbour_ids):
            raise ConfigError(
                f"got {len(self.task_ids)} task ids but {len(self.neighbour_ids)} neighbour lists; "
                "give exactly one neighbour list per task"
            )
        if len(set(self.task_ids)) != len(self.task_ids):
            raise ConfigError("task ids must be unique; deduplicate ids (duplicate texts may keep distinct ids)")
        known = set(self.task_ids)
        for tid, nbs in zip(self.task_ids, self.neighbour_ids, strict=True):
            if tid in nbs:
                raise ConfigError(f"task {tid!r} lists itself as a neighbour; a task never judges its own memory")
            unknown = [x for x in nbs if x not in known]
            if unknown:
                raise ConfigError(f"task {tid!r} has neighbours {unknown!r} that are not in task_ids")
        # Frozen, so set the lookup table directly; it makes `of` O(1) for 10k-task sets.
        object.__setattr__(self, "_row", {tid: i for i, tid in enumerate(self.task_ids)})

    @classmethod
    def build(
        cls,
        task_ids: Sequence[str],
        vectors: npt.ArrayLike,
        k: int = 3,
        *,
        block_size: int = DEFAULT_BLOCK_SIZE,
        near_duplicate: float | None = None,
        groups: Sequence[int] | None = None,
    ) -> Neighbourhoods:
        """Neighbourhoods from one unit embedding row per task id; duplicates as in :func:`nearest_neighbours`."""
        ids = tuple(task_ids)
        idx = nearest_neighbours(vectors, k, block_size=block_size, near_duplicate=near_duplicate, groups=groups)
        if idx.shape[0] != len(ids):
            raise ConfigError(f"got {len(ids)} task ids but {idx.shape[0]} embedding rows")
        return cls(ids, tuple(tuple(ids[j] for j in row if j >= 0) for row in idx.tolist()))

    def of(self, task_id: str) -> tuple[str, ...]:
        """Neighbour ids of one task; raises ``KeyError`` for an unknown id."""
        return self.neighbour_ids[self._row[task_id]]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, so neighbourhoods are computed once and reloaded for every epoch."""
        return {"task_ids": list(self.task_ids), "neighbour_ids": [list(n) for n in self.neighbour_ids]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Neighbourhoods:
        """Inverse of `to_dict`; validation happens in ``__post_init__``."""
        return cls(
            tuple(str(t) for t in data["task_ids"]),
            tuple(tuple(str(x) for x in row) for row in data["neighbour_ids"]),
        )

"""Topic segmentation of one session's turns, from the embeddings of consecutive turns.

Fact extraction works per segment, so a segment should hold one topic (the model sees everything it
needs to resolve "it" and "there") and stay small (the embedded model has a 4k context and gets worse
long before that). LightMem segments by the similarity of neighbouring turns; so does this module.

The threshold is relative, not absolute: a split goes where cosine(turn i, turn i+1) falls below
``mean - k * std`` of the *session's own* neighbour similarities. Absolute cosines differ by embedder
(MiniLM puts unrelated sentences near 0.1, a hashed n-gram embedder near 0.0) and by speaker style,
while a topic change is a dip relative to how alike this session's turns usually are. Candidate
splits are taken deepest dip first and kept only if both sides stay at least ``min_len`` long; a
segment still longer than ``max_len`` is cut at its own weakest link until it fits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class SegmentConfig:
    """How eagerly to split.

    Args:
        k: a link is a topic change when its cosine is below ``mean - k * std`` of the session's links.
        min_len: fewest turns in a segment (a single stray turn has no topic of its own).
        max_len: most turns in a segment, whatever the similarities say (bounds the prompt).
    """

    k: float = 1.0
    min_len: int = 2
    max_len: int = 8

    def __post_init__(self) -> None:
        if self.min_len < 1:
            raise ValueError(f"min_len must be >= 1, got {self.min_len}")
        if self.max_len < self.min_len:
            raise ValueError(f"max_len ({self.max_len}) must be >= min_len ({self.min_len})")
        if self.k < 0:
            raise ValueError(f"k must be >= 0 (how many standard deviations below the mean), got {self.k}")


def link_similarities(vectors: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Cosine of each turn with the next: ``n - 1`` values for ``n`` rows (rows are re-normalised)."""
    arr = np.asarray(vectors, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"expected a (turns, dim) matrix, got shape {arr.shape}")
    if len(arr) < 2:
        return np.zeros(0, dtype=np.float64)
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    unit = arr / norms
    return np.einsum("ij,ij->i", unit[:-1], unit[1:])


def _fits(cuts: list[int], cut: int, n: int, min_len: int) -> bool:
    """Whether cutting before turn ``cut`` leaves every segment at least ``min_len`` long."""
    bounds = sorted([0, n, *cuts])
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        if lo < cut < hi:
            return cut - lo >= min_len and hi - cut >= min_len
    return False


def _split_long(lo: int, hi: int, sims: npt.NDArray[np.float64], config: SegmentConfig) -> list[int]:
    """Cuts that bring ``[lo, hi)`` under ``max_len``: at the weakest link that keeps ``min_len``."""
    if hi - lo <= config.max_len:
        return []
    # Links lo..hi-2 join turns inside the range; cutting at link j starts a segment at j + 1.
    allowed = [j for j in range(lo, hi - 1) if j + 1 - lo >= config.min_len and hi - (j + 1) >= config.min_len]
    if not allowed:  # min_len too large for an exact fit: fall back to a plain halving
        allowed = [lo + (hi - lo) // 2 - 1]
    middle = (lo + hi) / 2
    # Ties (flat similarity) cut near the middle, so forced splits come out balanced.
    cut = min(allowed, key=lambda j: (round(float(sims[j]), 6), abs(j + 1 - middle), j)) + 1
    return [*_split_long(lo, cut, sims, config), cut, *_split_long(cut, hi, sims, config)]


def segment_turns(vectors: npt.ArrayLike, config: SegmentConfig | None = None) -> list[list[int]]:
    """Split a session's turns into topic segments; returns the turn indices of each, in order.

    ``vectors`` holds one embedding row per turn, in turn order. Every index appears exactly once.

    Example:
        >>> a, b = [1.0, 0.0], [0.0, 1.0]
        >>> segment_turns([a, a, a, b, b, b], SegmentConfig(min_len=2))
        [[0, 1, 2], [3, 4, 5]]
    """
    config = config or SegmentConfig()
    arr = np.asarray(vectors, dtype=np.float64)
    n = 0 if arr.size == 0 else len(arr)
    if n == 0:
        return []
    sims = link_similarities(arr)
    cuts: list[int] = []
    if len(sims) >= 2:
        threshold = float(sims.mean() - config.k * sims.std())
        # Only a real dip counts: with identical links (std 0) nothing is below the mean.
        candidates = sorted((float(s), j) for j, s in enumerate(sims) if s < threshold)
        for _, j in candidates:
            if _fits(cuts, j + 1, n, config.min_len):
                cuts.append(j + 1)
    bounds = sorted([0, n, *cuts])
    final: list[int] = []
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        final.extend(_split_long(lo, hi, sims, config))
    bounds = sorted(set([0, n, *cuts, *final]))
    return [list(range(lo, hi)) for lo, hi in zip(bounds, bounds[1:], strict=False)]

"""Topic segmentation: splits at relative dips, respects min/max length, covers every turn once."""

from __future__ import annotations

import numpy as np
import pytest

from memwise.facts.segment import SegmentConfig, link_similarities, segment_turns


def topics(*sizes: int, dim: int = 16, noise: float = 0.05, seed: int = 0) -> np.ndarray:
    """Rows drawn around one random direction per topic, ``sizes[i]`` rows for topic i."""
    rng = np.random.default_rng(seed)
    rows = []
    for size in sizes:
        centre = rng.standard_normal(dim)
        rows.extend(centre + noise * rng.standard_normal(dim) for _ in range(size))
    return np.stack(rows).astype(np.float32)


def covers(segments: list[list[int]], n: int) -> bool:
    return [i for seg in segments for i in seg] == list(range(n))


def test_splits_at_topic_changes() -> None:
    segments = segment_turns(topics(3, 4, 3))
    assert segments == [[0, 1, 2], [3, 4, 5, 6], [7, 8, 9]]


def test_threshold_is_relative_to_the_session() -> None:
    # The same shape shifted to high absolute similarity (a shared offset) still splits at the dip.
    base = topics(4, 4, noise=0.05)
    shifted = base + 8.0 * np.ones_like(base) / np.sqrt(base.shape[1])
    assert segment_turns(shifted) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert link_similarities(shifted).min() > 0.5  # an absolute cut-off of 0.5 would find nothing


def test_uniform_session_is_cut_only_by_max_len() -> None:
    flat = np.ones((20, 4), dtype=np.float32)
    segments = segment_turns(flat, SegmentConfig(min_len=2, max_len=8))
    assert covers(segments, 20)
    assert all(len(s) <= 8 for s in segments)
    assert [len(s) for s in segments] == [5, 5, 5, 5]  # ties cut near the middle: balanced


def test_min_len_blocks_stray_single_turn_segments() -> None:
    vecs = topics(3, 1, 3, seed=1)  # one off-topic turn in the middle
    segments = segment_turns(vecs, SegmentConfig(min_len=2, max_len=10))
    assert covers(segments, 7)
    assert all(len(s) >= 2 for s in segments)


@pytest.mark.parametrize("n", [0, 1, 2, 3])
def test_tiny_sessions(n: int) -> None:
    segments = segment_turns(np.ones((n, 4)) if n else np.zeros((0, 4)))
    assert covers(segments, n)
    assert len(segments) == (1 if n else 0)


def test_random_sessions_always_partition_within_bounds() -> None:
    rng = np.random.default_rng(7)
    config = SegmentConfig(k=0.5, min_len=2, max_len=6)
    for _ in range(50):
        n = int(rng.integers(2, 40))
        segments = segment_turns(rng.standard_normal((n, 8)), config)
        assert covers(segments, n)
        assert all(len(s) <= 6 for s in segments)
        assert all(len(s) >= 2 for s in segments)


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="max_len"):
        SegmentConfig(min_len=4, max_len=3)
    with pytest.raises(ValueError, match="min_len"):
        SegmentConfig(min_len=0)
    with pytest.raises(ValueError, match="k must be"):
        SegmentConfig(k=-1)

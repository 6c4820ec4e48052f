"""Tests for Semantic Neighbourhood Modelling: exact top-k, self exclusion, blockwise == brute force."""

from __future__ import annotations

import doctest
import json

import numpy as np
import pytest

from memwise.exceptions import ConfigError
from memwise.umem import neighbours
from memwise.umem.neighbours import Neighbourhoods, lipschitz_bound, nearest_neighbours


def brute_force(v: np.ndarray, k: int) -> list[list[int]]:
    """Reference: sort every other row by (-similarity, index)."""
    sims = v.astype(np.float64) @ v.astype(np.float64).T
    n = len(v)
    k = min(k, n - 1)
    return [sorted((j for j in range(n) if j != i), key=lambda j, i=i: (-sims[i, j], j))[:k] for i in range(n)]


def unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    v = rng.standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_doctests() -> None:
    result = doctest.testmod(neighbours, raise_on_error=False)
    assert result.attempted > 0
    assert result.failed == 0


def test_self_excluded_with_exact_duplicates() -> None:
    # Rows 0, 1, 2 are identical; row 3 is orthogonal.
    v = np.array([[1, 0], [1, 0], [1, 0], [0, 1]], dtype=np.float32)
    nn = nearest_neighbours(v, k=2)
    assert nn.tolist() == [[1, 2], [0, 2], [0, 1], [0, 1]]
    for i, row in enumerate(nn):
        assert i not in row


def test_duplicate_is_first_neighbour_even_when_self_would_tie() -> None:
    rng = np.random.default_rng(1)
    v = unit_rows(rng, 20, 8)
    v[13] = v[4]
    nn = nearest_neighbours(v, k=3, block_size=3)
    assert nn[4, 0] == 13
    assert nn[13, 0] == 4


def test_ties_go_to_lower_index() -> None:
    # Row 0 is equally similar to rows 1..4; row 5 is less similar.
    v = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 1, 0], [0, 0, 1], [-1, 0, 0]], dtype=np.float32)
    assert nearest_neighbours(v, k=3)[0].tolist() == [1, 2, 3]
    assert nearest_neighbours(v, k=3, block_size=1)[0].tolist() == [1, 2, 3]


@pytest.mark.parametrize(("n", "k", "expected_k"), [(1, 3, 0), (2, 3, 1), (4, 3, 3), (4, 10, 3), (5, 0, 0)])
def test_k_capped_at_n_minus_one(n: int, k: int, expected_k: int) -> None:
    v = unit_rows(np.random.default_rng(0), n, 4)
    nn = nearest_neighbours(v, k=k)
    assert nn.shape == (n, expected_k)
    assert nn.dtype == np.int64


def test_empty_input() -> None:
    assert nearest_neighbours(np.zeros((0, 4), dtype=np.float32)).shape == (0, 0)


@pytest.mark.parametrize("block_size", [1, 7, 64, 1024])
def test_blockwise_equals_brute_force_random(block_size: int) -> None:
    v = unit_rows(np.random.default_rng(42), 150, 16)
    assert nearest_neighbours(v, k=5, block_size=block_size).tolist() == brute_force(v, 5)


@pytest.mark.parametrize("block_size", [1, 5, 33, 500])
def test_blockwise_equals_brute_force_with_many_ties(block_size: int) -> None:
    # Small integer vectors make dot products exact in float32, so ties are frequent and exact.
    v = np.random.default_rng(7).integers(-2, 3, size=(120, 3)).astype(np.float32)
    assert nearest_neighbours(v, k=4, block_size=block_size).tolist() == brute_force(v, 4)


def test_large_input_blockwise_shape() -> None:
    v = unit_rows(np.random.default_rng(3), 3000, 8)
    nn = nearest_neighbours(v, k=3, block_size=256)
    assert nn.shape == (3000, 3)
    assert not np.any(nn == np.arange(3000)[:, None])


@pytest.mark.parametrize(
    ("vectors", "kwargs"),
    [
        (np.zeros(3, dtype=np.float32), {}),
        (np.zeros((3, 2), dtype=np.float32), {"k": -1}),
        (np.zeros((3, 2), dtype=np.float32), {"block_size": 0}),
        (np.array([[np.nan, 0.0], [1.0, 0.0]], dtype=np.float32), {}),
    ],
)
def test_invalid_input_rejected(vectors: np.ndarray, kwargs: dict[str, int]) -> None:
    with pytest.raises(ConfigError):
        nearest_neighbours(vectors, **kwargs)


def test_lipschitz_bound_holds_on_random_unit_vectors() -> None:
    rng = np.random.default_rng(5)
    v = rng.standard_normal((60, 12))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    keys = rng.standard_normal((30, 12))
    keys /= np.linalg.norm(keys, axis=1, keepdims=True)
    for i in range(0, 60, 2):
        q1, q2 = v[i], v[i + 1]
        bound = lipschitz_bound(float(q1 @ q2))
        assert bound == pytest.approx(float(np.linalg.norm(q1 - q2)), abs=1e-9)
        assert np.all(np.abs(keys @ q1 - keys @ q2) <= bound + 1e-9)


def test_lipschitz_bound_clips_float_noise() -> None:
    assert lipschitz_bound(1.0000001) == 0.0
    assert lipschitz_bound(-1.0000001) == 2.0


def test_neighbourhoods_build_and_roundtrip_json() -> None:
    v = np.array([[1, 0], [1, 0], [0.6, 0.8], [0, 1]], dtype=np.float32)
    nb = Neighbourhoods.build(["a", "b", "c", "d"], v, k=2)
    assert nb.of("a") == ("b", "c")
    assert nb.of("d") == ("c", "a")
    restored = Neighbourhoods.from_dict(json.loads(json.dumps(nb.to_dict())))
    assert restored == nb
    assert restored.of("b") == ("a", "c")


def test_neighbourhoods_unknown_task_raises_key_error() -> None:
    nb = Neighbourhoods(("a", "b"), (("b",), ("a",)))
    with pytest.raises(KeyError):
        nb.of("zzz")


@pytest.mark.parametrize(
    ("task_ids", "neighbour_ids", "match"),
    [
        (("a", "b"), (("b",),), "one neighbour list per task"),
        (("a", "a"), (("b",), ("b",)), "unique"),
        (("a", "b"), (("a",), ("a",)), "itself"),
        (("a", "b"), (("c",), ("a",)), "not in task_ids"),
    ],
)
def test_neighbourhoods_validation(
    task_ids: tuple[str, ...], neighbour_ids: tuple[tuple[str, ...], ...], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        Neighbourhoods(task_ids, neighbour_ids)


def test_build_rejects_mismatched_ids() -> None:
    with pytest.raises(ConfigError, match="task ids"):
        Neighbourhoods.build(["a", "b"], np.eye(3, dtype=np.float32))


def test_near_duplicates_and_same_group_rows_are_never_neighbours() -> None:
    from memwise.umem.neighbours import count_duplicates

    v = np.array([[1.0, 0.0, 0.0], [0.99, 0.141, 0.0], [0.0, 1.0, 0.0], [0.6, 0.8, 0.0], [0.0, 0.0, 1.0]])
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    # Row 1 is a near copy of row 0 (cosine 0.99); rows 2 and 4 share a group (same normalised text).
    groups = [0, 1, 2, 3, 2]
    plain = nearest_neighbours(v, k=2)
    assert plain[0].tolist() == [1, 3]
    idx = nearest_neighbours(v, k=2, near_duplicate=0.95, groups=groups)
    assert idx[0].tolist() == [3, 2] and idx[1].tolist() == [3, 2]
    assert 4 not in idx[2].tolist() and 2 not in idx[4].tolist()
    assert count_duplicates(v, near_duplicate=0.95, groups=groups) == [1, 1, 1, 0, 1]
    # a row whose every other row is a copy is left with no neighbour, padded with -1
    assert nearest_neighbours(v[:2], k=1, near_duplicate=0.95).tolist() == [[-1], [-1]]
    nb = Neighbourhoods.build(["a", "b"], v[:2], k=1, near_duplicate=0.95)
    assert nb.of("a") == () and nb.of("b") == ()

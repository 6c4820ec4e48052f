"""Tests for reference-run caching: shared runs under concurrency and executor-call counts."""

from __future__ import annotations

import asyncio
import doctest
from collections import Counter
from functools import partial

import pytest

from memwise.exceptions import ConfigError
from memwise.umem import refcache
from memwise.umem.refcache import NO_MEMORY, ReferenceCache, RefKey, executor_calls
from memwise.umem.rewards import ExecResult, marginal_utility

G, N = 8, 3


class FakeExecutor:
    """Counts executor calls; yields to the loop so concurrent callers really overlap."""

    def __init__(self) -> None:
        self.calls: Counter[tuple[str, str]] = Counter()

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    async def run(self, task_id: str, bank: str) -> ExecResult:
        self.calls[(task_id, bank)] += 1
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        # Deterministic outcome: memory banks help, the empty reference is slower.
        return ExecResult(success=bank != NO_MEMORY or task_id.endswith("0"), length=60 if bank != NO_MEMORY else 100)


async def reward_group(
    task_id: str,
    neighbours: tuple[str, ...],
    executor: FakeExecutor,
    cache: ReferenceCache | None,
) -> list[float]:
    """Simulate rewarding G candidates for one task (released form: reference = no memory)."""
    await executor.run(task_id, "own")  # the executor's own run on the task

    async def one_candidate(c: int) -> float:
        async def neighbour_pair(nb: str) -> tuple[ExecResult, ExecResult]:
            reference = partial(executor.run, nb, NO_MEMORY)
            if cache is None:
                ref = await reference()
            else:
                ref = await cache.get_or_run(RefKey(nb, NO_MEMORY), reference)
            test = await executor.run(nb, f"{task_id}-candidate-{c}")
            return ref, test

        pairs = await asyncio.gather(*(neighbour_pair(nb) for nb in neighbours))
        return marginal_utility(pairs, form="released")

    return list(await asyncio.gather(*(one_candidate(c) for c in range(G))))


def test_doctests() -> None:
    result = doctest.testmod(refcache, raise_on_error=False)
    assert result.attempted > 0
    assert result.failed == 0


def test_executor_calls_formula() -> None:
    assert executor_calls(G, N, cached=False) == 49
    assert executor_calls(G, N, cached=True) == 28
    assert executor_calls(G, N, distinct_neighbours=0, cached=True) == 25
    assert executor_calls(G, N, distinct_neighbours=1, cached=False) == 49  # sharing only helps with a cache
    assert 1 - 28 / 49 == pytest.approx(0.43, abs=0.01)  # the paper's "about 45%"


@pytest.mark.parametrize(("g", "n", "d"), [(-1, 3, None), (8, -1, None), (8, 3, 4), (8, 3, -1)])
def test_executor_calls_rejects_invalid(g: int, n: int, d: int | None) -> None:
    with pytest.raises(ConfigError):
        executor_calls(g, n, d, cached=True)


async def test_simulated_step_uncached_makes_49_calls() -> None:
    executor = FakeExecutor()
    await reward_group("q0", ("a", "b", "c"), executor, cache=None)
    assert executor.total == executor_calls(G, N, cached=False) == 49


async def test_simulated_step_cached_makes_at_most_28_calls() -> None:
    executor = FakeExecutor()
    cache = ReferenceCache()
    uncached_rewards = await reward_group("q0", ("a0", "b", "c"), FakeExecutor(), cache=None)
    cached_rewards = await reward_group("q0", ("a0", "b", "c"), executor, cache)
    assert cached_rewards == uncached_rewards  # caching never changes the reward
    assert executor.total <= 28
    assert executor.total == executor_calls(G, N, cached=True)
    assert all(executor.calls[(nb, NO_MEMORY)] == 1 for nb in ("a0", "b", "c"))
    assert (cache.misses, cache.hits) == (N, G * N - N)


async def test_tasks_sharing_neighbours_need_fewer_calls() -> None:
    executor = FakeExecutor()
    cache = ReferenceCache()
    # q1 and q2 share neighbours b and c, so their reference runs happen once for the batch.
    await asyncio.gather(
        reward_group("q1", ("a", "b", "c"), executor, cache),
        reward_group("q2", ("b", "c", "d"), executor, cache),
    )
    shared_total = executor_calls(G, N, cached=True) + executor_calls(G, N, distinct_neighbours=1, cached=True)
    assert executor.total == shared_total == 54
    assert executor.total < 2 * 28 < 2 * 49
    assert cache.misses == 4  # a, b, c, d


async def test_concurrent_requests_share_one_run() -> None:
    executor = FakeExecutor()
    cache = ReferenceCache()
    key = RefKey("nb", NO_MEMORY)
    results = await asyncio.gather(*(cache.get_or_run(key, partial(executor.run, "nb", NO_MEMORY)) for _ in range(10)))
    assert executor.calls[("nb", NO_MEMORY)] == 1
    assert len(set(results)) == 1
    assert (cache.hits, cache.misses) == (9, 1)
    assert key in cache and len(cache) == 1


async def test_keys_differ_by_reference_bank() -> None:
    executor = FakeExecutor()
    cache = ReferenceCache()
    await cache.get_or_run(RefKey("nb", NO_MEMORY), partial(executor.run, "nb", NO_MEMORY))
    await cache.get_or_run(RefKey("nb", "bank-abc"), partial(executor.run, "nb", "bank-abc"))
    assert cache.misses == 2
    assert RefKey("nb") == RefKey("nb", NO_MEMORY)


async def test_failed_run_is_shared_then_retried() -> None:
    attempts = 0

    async def flaky() -> ExecResult:
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(0)
        if attempts == 1:
            raise RuntimeError("executor down")
        return ExecResult(True, 10)

    cache = ReferenceCache()
    key = RefKey("nb")
    outcomes = await asyncio.gather(cache.get_or_run(key, flaky), cache.get_or_run(key, flaky), return_exceptions=True)
    assert all(isinstance(o, RuntimeError) for o in outcomes)
    assert attempts == 1 and key not in cache
    assert await cache.get_or_run(key, flaky) == ExecResult(True, 10)
    assert attempts == 2


async def test_cancelled_waiter_does_not_cancel_shared_run() -> None:
    gate = asyncio.Event()

    async def slow() -> ExecResult:
        await gate.wait()
        return ExecResult(True, 5)

    cache = ReferenceCache()
    key = RefKey("nb")
    first = asyncio.create_task(cache.get_or_run(key, slow))
    second = asyncio.create_task(cache.get_or_run(key, slow))
    await asyncio.sleep(0)
    first.cancel()
    gate.set()
    assert await second == ExecResult(True, 5)
    assert first.cancelled()
    assert key in cache


async def test_clear_forces_rerun() -> None:
    executor = FakeExecutor()
    cache = ReferenceCache()
    key = RefKey("nb")
    await cache.get_or_run(key, partial(executor.run, "nb", NO_MEMORY))
    cache.clear()
    await cache.get_or_run(key, partial(executor.run, "nb", NO_MEMORY))
    assert executor.calls[("nb", NO_MEMORY)] == 2

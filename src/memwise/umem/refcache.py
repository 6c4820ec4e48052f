"""Reference-run caching for the marginal utility reward.

Every candidate for a task is compared against the same reference run on each neighbour (the
reference bank, or no memory in the released code), so that run does not depend on the candidate.
Running it once per (neighbour, reference bank) instead of once per candidate cuts executor calls
per task from ``2*G*N + 1`` to ``N + G*N + 1`` (49 -> 28 at G=8, N=3, the paper's "about 45%"), and
further when tasks in a batch share neighbours.

Keys include a fingerprint of the reference bank, so when the bank evolves after a training step
old entries simply stop matching; call `ReferenceCache.clear` to free them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import NamedTuple

from memwise.exceptions import ConfigError
from memwise.umem.rewards import ExecResult

__all__ = ["NO_MEMORY", "ReferenceCache", "RefKey", "executor_calls"]

NO_MEMORY = "no-memory"
"""Bank fingerprint for the released-code reference: the executor runs with no memory at all."""


class RefKey(NamedTuple):
    """Identity of a reference run: which neighbour task, under which reference bank."""

    task_id: str
    bank: str = NO_MEMORY


class ReferenceCache:
    """Shares reference executor runs between candidates (and between tasks with common neighbours).

    Concurrent requests for the same key await a single run. A failed run is not cached, so a later
    request retries it; every waiter of the failed run sees the exception.

    Example:
        >>> async def run() -> ExecResult:
        ...     return ExecResult(True, 42)
        >>> async def demo() -> tuple[ExecResult, int, int]:
        ...     cache = ReferenceCache()
        ...     key = RefKey("task-7", NO_MEMORY)
        ...     await asyncio.gather(cache.get_or_run(key, run), cache.get_or_run(key, run))
        ...     return await cache.get_or_run(key, run), cache.hits, cache.misses
        >>> asyncio.run(demo())
        (ExecResult(success=True, length=42), 2, 1)
    """

    def __init__(self) -> None:
        self._results: dict[RefKey, ExecResult] = {}
        # In-flight runs live apart from results so finished results stay usable from any event loop.
        self._pending: dict[RefKey, asyncio.Task[ExecResult]] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._results)

    def __contains__(self, key: object) -> bool:
        return key in self._results

    def known(self, key: RefKey) -> bool:
        """Whether ``key`` is finished or in flight, i.e. whether `get_or_run` would start no run."""
        return key in self._results or key in self._pending

    async def get_or_run(self, key: RefKey, run: Callable[[], Awaitable[ExecResult]]) -> ExecResult:
        """Return the cached result for ``key``, or start ``run()`` once and share it.

        A hit is any request that did not start a run itself, including one that joined an in-flight run.
        """
        if key in self._results:
            self.hits += 1
            return self._results[key]
        task = self._pending.get(key)
        if task is None:
            self.misses += 1
            task = asyncio.ensure_future(run())
            self._pending[key] = task
            task.add_done_callback(lambda t: self._settle(key, t))
        else:
            self.hits += 1
        # shield: one cancelled waiter must not cancel the run the other waiters share.
        return await asyncio.shield(task)

    def _settle(self, key: RefKey, task: asyncio.Task[ExecResult]) -> None:
        if self._pending.get(key) is task:
            del self._pending[key]
        if not task.cancelled() and task.exception() is None:
            self._results[key] = task.result()

    def clear(self) -> None:
        """Drop finished results (e.g. after the reference bank changed); in-flight runs finish normally."""
        self._results.clear()


def executor_calls(
    group_size: int,
    neighbours: int,
    distinct_neighbours: int | None = None,
    *,
    cached: bool,
) -> int:
    """Executor runs needed to reward one task's group of candidates (an upper bound).

    Uncached, each of the G candidates runs the executor on each of the N neighbours twice
    (reference and candidate): ``2*G*N``. Cached, the N reference runs happen once for the group:
    ``N + G*N``. Both add 1 for the executor run on the task itself. ``distinct_neighbours`` (D) is
    the number of this task's neighbours whose reference run is not already cached, e.g. by an
    earlier task in the batch sharing neighbours; the cached count becomes ``D + G*N + 1``.
    Candidates that fail the format check skip their runs, hence "upper bound".

    Example:
        >>> executor_calls(8, 3, cached=False), executor_calls(8, 3, cached=True)
        (49, 28)
        >>> executor_calls(8, 3, distinct_neighbours=1, cached=True)
        26
    """
    if group_size < 0 or neighbours < 0:
        raise ConfigError(f"group_size and neighbours must be >= 0, got {group_size} and {neighbours}")
    d = neighbours if distinct_neighbours is None else distinct_neighbours
    if not 0 <= d <= neighbours:
        raise ConfigError(f"distinct_neighbours must be between 0 and neighbours={neighbours}, got {d}")
    own_run = 1
    if not cached:
        return 2 * group_size * neighbours + own_run
    return d + group_size * neighbours + own_run

"""The two asyncio helpers every layer uses: gather-and-cancel, and an event loop in a thread.

:func:`gather_or_cancel`: ``asyncio.gather`` returns at the first exception and leaves the other
awaitables running. In a run that means sibling calls keep retrying, then fail against a ledger the
caller has already closed ("Cannot operate on a closed database"), and their failures are never counted.
Here the first failure cancels the siblings and waits for them to finish (:class:`asyncio.TaskGroup`
semantics; each records its own outcome while the ledger is still open), and only then is the failure
raised, as itself rather than wrapped in an ``ExceptionGroup``, so callers keep catching ``LLMError``
and friends.

:class:`LoopThread`: async clients (HTTP connection pools, the embedded model's lock, in-flight futures
of caches) are bound to the loop they first ran on, so a sync program that calls async code many times
(trl's reward functions, the sync ``Memory``, the CLI) must keep one loop alive for the whole run
instead of calling ``asyncio.run`` per call.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["LoopThread", "gather_or_cancel", "task_key"]

T = TypeVar("T")


def task_key() -> int | None:
    """Identity of the running asyncio task, or None outside any event loop.

    Stores use it to tell two tasks sharing one thread apart: a transaction opened by one task must not
    take in the writes of another that runs while the first awaits.
    """
    try:
        task = asyncio.current_task()
    except RuntimeError:
        return None
    return None if task is None else id(task)


async def gather_or_cancel(*coros: Coroutine[Any, Any, T]) -> list[T]:
    """Results in argument order; on a failure, cancel and await the rest, then raise the first failure.

    Example:
        >>> async def twice(x: int) -> int:
        ...     return 2 * x
        >>> asyncio.run(gather_or_cancel(twice(1), twice(2)))
        [2, 4]
    """
    tasks: list[asyncio.Task[T]] = []
    first: BaseException | None = None
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(c) for c in coros]
    except BaseExceptionGroup as group_error:
        # In the order the tasks failed: the first is the cause, the others failed beside it.
        first = group_error.exceptions[0]
    if first is not None:
        raise first  # outside the handler, so its own traceback and cause stay as they were
    return [t.result() for t in tasks]


class LoopThread:
    """One private asyncio event loop in a background thread, for sync callers.

    Everything async a sync caller touches (executor, embedder, their HTTP clients, in-flight futures)
    then lives on one loop for its whole life. Closing cancels what is still pending, so nothing runs
    on after the owner is gone.

    Example:
        >>> async def double(x: int) -> int:
        ...     return 2 * x
        >>> with LoopThread() as loop:
        ...     loop.run(double(21))
        42
    """

    def __init__(self, name: str = "memwise-loop") -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._closed = False
        self._thread.start()
        self._ready.wait()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.call_soon(self._ready.set)
        self._loop.run_forever()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The private loop (for callers that schedule on it themselves)."""
        return self._loop

    @property
    def thread(self) -> threading.Thread:
        """The thread the loop runs in."""
        return self._thread

    @property
    def closed(self) -> bool:
        return self._closed

    def run(self, coro: Coroutine[Any, Any, T], *, timeout: float | None = None) -> T:
        """Run ``coro`` on the private loop and block until it returns (or raise what it raised)."""
        if self._closed:
            coro.close()
            raise RuntimeError(f"{type(self).__name__} is closed; create a new one")
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError(f"{type(self).__name__}.run called from its own loop; await the coroutine instead")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _drain(self) -> None:
        current = asyncio.current_task()
        pending = [task for task in asyncio.all_tasks() if task is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await self._loop.shutdown_asyncgens()
        await self._loop.shutdown_default_executor()

    def close(self) -> None:
        """Cancel what is still pending, stop the loop, join the thread and close the loop (idempotent)."""
        if self._closed:
            return
        self._closed = True
        asyncio.run_coroutine_threadsafe(self._drain(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> LoopThread:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

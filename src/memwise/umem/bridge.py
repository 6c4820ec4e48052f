"""A private asyncio event loop in a background thread, for sync callers such as trl and the CLI.

Async clients (HTTP connection pools, the embedded model's lock, in-flight futures of the reference
cache) are bound to the loop they first ran on, so a sync program that calls async code many times
must keep one loop alive for the whole run instead of calling ``asyncio.run`` per call.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["AsyncBridge"]

T = TypeVar("T")


class AsyncBridge:
    """One private asyncio event loop in a background thread, for sync callers such as trl.

    Everything async a training run touches (executor, embedder, their HTTP clients, the reference
    cache's in-flight futures) then lives on one loop for the whole run. ``asyncio.run`` per call
    would make a new loop each time and break clients bound to the first one.

    Example:
        >>> async def double(x: int) -> int:
        ...     return 2 * x
        >>> with AsyncBridge() as bridge:
        ...     bridge.run(double(21))
        42
    """

    def __init__(self, name: str = "memwise-umem-bridge") -> None:
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
            raise RuntimeError("AsyncBridge is closed; create a new one")
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("AsyncBridge.run called from its own loop; await the coroutine instead")
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

    def __enter__(self) -> AsyncBridge:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

"""The async face of any :class:`memwise.store.base.Store`, for servers that await their store calls.

The stores are synchronous (their callers in facts/, MetaMem and UMEM run them in worker threads),
so :class:`AsyncStore` runs each call in a worker thread. ``transaction()`` is the one subtle part:
both stores bind a transaction to the thread that opened it, so inside ``async with
store.transaction()`` every call of the same task goes to one dedicated thread, which opened the
transaction and will close it.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, asynccontextmanager
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from memwise.store.base import Filters, Record, ScoredRecord, Store

T = TypeVar("T")

# The executor of the transaction the current task has open (context-local, so other tasks are unaffected).
_TX_EXECUTOR: contextvars.ContextVar[ThreadPoolExecutor | None] = contextvars.ContextVar(
    "memwise_store_tx_executor", default=None
)


async def _enter(
    loop: asyncio.AbstractEventLoop, executor: ThreadPoolExecutor, cm: AbstractContextManager[None]
) -> None:
    """Open ``cm`` in the transaction's worker; if the task is cancelled meanwhile, close it there once open.

    Opening may wait long for the write lock (another process's transaction), and a cancelled await
    does not stop the worker: it opens the transaction anyway. Left open, it would hold the lock against
    every writer of the store until its frames were collected, so its rollback is queued behind it
    (the worker runs its calls one at a time, in order).
    """
    entered = False

    def enter() -> None:
        nonlocal entered
        cm.__enter__()
        entered = True

    try:
        await loop.run_in_executor(executor, enter)
    except BaseException as exc:
        failure = exc  # ``exc`` is unbound when the except block ends; ``undo`` runs later

        def undo() -> None:
            if entered:
                cm.__exit__(type(failure), failure, failure.__traceback__)

        executor.submit(undo)
        raise


class AsyncStore:
    """Awaitable methods over a synchronous store; ``store`` is the wrapped one (still usable directly)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @property
    def space(self) -> str:
        """The wrapped store's vector space."""
        return self.store.space

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        executor = _TX_EXECUTOR.get()
        if executor is None:
            return await asyncio.to_thread(fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(executor, lambda: fn(*args, **kwargs))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """Group this task's awaited writes into one atomic unit (nested blocks become savepoints)."""
        loop = asyncio.get_running_loop()
        outer = _TX_EXECUTOR.get()
        if outer is not None:
            cm = await self._call(self.store.transaction)
            await _enter(loop, outer, cm)
            try:
                yield
            except BaseException as exc:
                await self._call(cm.__exit__, type(exc), exc, exc.__traceback__)
                raise
            await self._call(cm.__exit__, None, None, None)
            return
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="memwise-store-tx")
        try:
            cm = await loop.run_in_executor(executor, self.store.transaction)
            await _enter(loop, executor, cm)
            token = _TX_EXECUTOR.set(executor)
            try:
                yield
            except BaseException as exc:
                _TX_EXECUTOR.reset(token)
                await loop.run_in_executor(executor, cm.__exit__, type(exc), exc, exc.__traceback__)
                raise
            _TX_EXECUTOR.reset(token)
            await loop.run_in_executor(executor, cm.__exit__, None, None, None)
        finally:
            # Without waiting: a cancelled task may leave a call running (an enter still waiting for the
            # write lock, then its rollback), which finishes in the worker without holding up the event loop.
            executor.shutdown(wait=False)

    async def close(self) -> None:
        """Close the wrapped store, in a worker thread."""
        await self._call(self.store.close)

    async def add(
        self, records: Iterable[Record], vectors: npt.ArrayLike | None = None, *, space: str | None = None
    ) -> list[str]:
        """:meth:`Store.add` in a worker thread; ``records`` is read into a list first, on the loop."""
        return await self._call(self.store.add, list(records), vectors, space=space)

    async def update(self, record_id: str, **changes: Any) -> Record:
        """:meth:`Store.update` in a worker thread."""
        return await self._call(self.store.update, record_id, **changes)

    async def delete(self, record_id: str) -> bool:
        """:meth:`Store.delete` in a worker thread."""
        return await self._call(self.store.delete, record_id)

    async def invalidate(self, record_id: str, at: float | None = None) -> Record:
        """:meth:`Store.invalidate` in a worker thread."""
        return await self._call(self.store.invalidate, record_id, at)

    async def get(self, record_id: str) -> Record | None:
        """:meth:`Store.get` in a worker thread."""
        return await self._call(self.store.get, record_id)

    async def get_for_update(self, record_id: str) -> Record | None:
        """:meth:`Store.get_for_update` in a worker thread (inside this store's :meth:`transaction`)."""
        return await self._call(self.store.get_for_update, record_id)

    async def get_many(self, ids: Iterable[str]) -> list[Record]:
        """:meth:`Store.get_many` in a worker thread; ``ids`` is read into a list first, on the loop."""
        return await self._call(self.store.get_many, list(ids))

    async def get_vector(self, record_id: str, *, space: str | None = None) -> npt.NDArray[np.float32] | None:
        """:meth:`Store.get_vector` in a worker thread."""
        return await self._call(self.store.get_vector, record_id, space=space)

    async def list_records(
        self, filters: Filters | None = None, limit: int | None = None, offset: int = 0
    ) -> list[Record]:
        """:meth:`Store.list_records` in a worker thread."""
        return await self._call(self.store.list_records, filters, limit, offset)

    async def count(self, filters: Filters | None = None) -> int:
        """:meth:`Store.count` in a worker thread."""
        return await self._call(self.store.count, filters)

    async def search_text(self, query: str, top_k: int = 10, filters: Filters | None = None) -> list[ScoredRecord]:
        """:meth:`Store.search_text` in a worker thread."""
        return await self._call(self.store.search_text, query, top_k, filters)

    async def search_vector(
        self, query_vec: npt.ArrayLike, top_k: int = 10, filters: Filters | None = None, *, space: str | None = None
    ) -> list[ScoredRecord]:
        """:meth:`Store.search_vector` in a worker thread."""
        return await self._call(self.store.search_vector, query_vec, top_k, filters, space=space)

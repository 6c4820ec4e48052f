"""Run concurrent model work so that nothing outlives the failure that stops it.

``asyncio.gather`` returns at the first exception and leaves the other awaitables running. In a run
that means sibling calls keep retrying, then fail against a ledger the caller has already closed
("Cannot operate on a closed database") and their failures are never counted. :func:`gather_or_cancel`
has :class:`asyncio.TaskGroup` semantics instead: the first failure cancels the siblings and waits for
them to finish (each records its own outcome in the ledger while it is still open), and only then is
the failure raised, as itself rather than wrapped in an ``ExceptionGroup``, so callers keep catching
``LLMError`` and friends as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


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

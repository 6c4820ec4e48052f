"""The loop in a thread trl's synchronous reward calls run memwise's async executors on.

It is :class:`memwise._aio.LoopThread` under the name the GRPO code and its callers have always used.
"""

from __future__ import annotations

from memwise._aio import LoopThread

__all__ = ["AsyncBridge"]


class AsyncBridge(LoopThread):
    """A :class:`~memwise._aio.LoopThread` named for the GRPO bridge thread.

    Example:
        >>> async def double(x: int) -> int:
        ...     return 2 * x
        >>> with AsyncBridge() as bridge:
        ...     bridge.run(double(21))
        42
    """

    def __init__(self, name: str = "memwise-umem-bridge") -> None:
        super().__init__(name)

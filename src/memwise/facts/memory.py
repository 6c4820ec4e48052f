"""The factual memory as users call it: :class:`Memory` (blocking) and :class:`AsyncMemory` (awaitable).

The operations: ``add``, ``search``, ``get_all``, ``update``, ``delete``, ``delete_all``, ``history``,
``answer``, ``export``/``import_jsonl`` and ``reset``, every one scoped to a user but ``reset``.

The names and arguments are mem0's, so a mem0 user can switch by changing an import: ``Memory()``
with no arguments reads the usual settings, ``add`` takes a string, a message or a list, ``metadata=``
is stored and returned, ``search(query, user_id=..., limit=..., filters={...})`` applies metadata
filters inside the store, and every list result has ``to_dict()`` for mem0's ``{"results": [...]}`` shape.

:class:`AsyncMemory` (in :mod:`memwise.facts.async_memory`) is the implementation; :class:`Memory` is
its synchronous twin, one-line wrappers that run the async methods on a private event loop (so model
backends, whose connection pools and semaphores belong to one loop, keep working across calls). Both
are imported from here.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar

from memwise._aio import LoopThread
from memwise.embed.base import Embedder
from memwise.facts.async_memory import AsyncMemory, Mode, Retriever
from memwise.llm.base import ChatModel
from memwise.runs.ledger import Ledger
from memwise.store.base import Store

__all__ = ["AsyncMemory", "Memory", "Mode"]

T = TypeVar("T")
P = ParamSpec("P")


def _blocking(
    method: Callable[Concatenate[AsyncMemory, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[Memory, P], T]:
    """``method`` as a blocking method of :class:`Memory`, with the same parameters and docstring.

    The parameters travel through ``ParamSpec``, so type checkers and editors show the async method's
    real signature (and ``inspect.signature`` follows ``__wrapped__``), without a second copy to drift.
    """

    @functools.wraps(method)
    def blocking(self: Memory, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._run(method(self.inner, *args, **kwargs))

    return blocking


def _forwarding(method: Callable[Concatenate[AsyncMemory, P], T]) -> Callable[Concatenate[Memory, P], T]:
    """A plain (not async) method of :class:`AsyncMemory` as the same method of :class:`Memory`."""

    @functools.wraps(method)
    def forwarding(self: Memory, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return method(self.inner, *args, **kwargs)

    return forwarding


def _wrapping(factory: Callable[P, AsyncMemory]) -> classmethod[Memory, P, Memory]:
    """A factory of :class:`AsyncMemory` (a bound classmethod) as a classmethod of :class:`Memory`.

    ``factory`` is already bound, so its signature lacks ``cls``: the wrapper states its own, with
    ``cls`` first and :class:`Memory` returned, for ``inspect.signature`` to show the real parameters.
    """

    @functools.wraps(factory)
    def wrapping(cls: type[Memory], /, *args: P.args, **kwargs: P.kwargs) -> Memory:
        return cls.wrap(factory(*args, **kwargs))

    signature = inspect.signature(factory)
    first = inspect.Parameter("cls", inspect.Parameter.POSITIONAL_ONLY)
    wrapping.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[first, *signature.parameters.values()], return_annotation="Memory"
    )
    return classmethod(wrapping)


class Memory:
    """The synchronous twin of :class:`AsyncMemory`: same methods, same arguments, blocking.

    Each method is a one-line wrapper that runs the async one on a private event loop (model backends'
    connection pools and semaphores belong to one loop, so one loop serves every call).
    ``Memory()`` with no arguments uses the configured settings, as mem0's ``Memory()`` does.

    Example:
        >>> from memwise.testing import FakeEmbedder
        >>> from memwise.store.sqlite import SQLiteStore
        >>> import tempfile, pathlib
        >>> mem = Memory(store=SQLiteStore(pathlib.Path(tempfile.mkdtemp()) / "m.db"), embedder=FakeEmbedder())
        >>> _ = mem.add({"role": "user", "content": "My sister lives in Lisbon."}, user_id="alice")
        >>> mem.get_all(user_id="alice").to_dict()["results"][0]["memory"]
        'user: My sister lives in Lisbon.'
        >>> mem.close()
    """

    def __init__(
        self,
        *,
        store: Store | None = None,
        embedder: Embedder | None = None,
        llm: ChatModel | None = None,
        retriever: Retriever | None = None,
        ledger: Ledger | None = None,
        mode: Mode = "turns",
        inner: AsyncMemory | None = None,
    ) -> None:
        self.inner = (
            inner
            if inner is not None
            else AsyncMemory(store=store, embedder=embedder, llm=llm, retriever=retriever, ledger=ledger, mode=mode)
        )
        self._loop = LoopThread("memwise-memory")

    @classmethod
    def wrap(cls, inner: AsyncMemory) -> Memory:
        """A sync view of an existing :class:`AsyncMemory`."""
        return cls(inner=inner)

    from_settings = _wrapping(AsyncMemory.from_settings)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._loop.run(coro)

    add = _blocking(AsyncMemory.add)
    add_conversation = _blocking(AsyncMemory.add_conversation)
    search = _blocking(AsyncMemory.search)
    get = _blocking(AsyncMemory.get)
    get_all = _blocking(AsyncMemory.get_all)
    update = _blocking(AsyncMemory.update)
    consolidate = _blocking(AsyncMemory.consolidate)
    delete = _blocking(AsyncMemory.delete)
    delete_all = _blocking(AsyncMemory.delete_all)
    reset = _blocking(AsyncMemory.reset)
    history = _blocking(AsyncMemory.history)
    answer = _blocking(AsyncMemory.answer)
    import_jsonl = _blocking(AsyncMemory.import_jsonl)
    export = _forwarding(AsyncMemory.export)

    def close(self) -> None:
        """Close the store, embedder and model, and stop the private loop; closing again does nothing."""
        if self._loop.closed:  # e.g. close() inside a ``with`` block, which closes again on the way out
            return
        try:
            self._run(self.inner.aclose())
        finally:
            self._loop.close()

    def __enter__(self) -> Memory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

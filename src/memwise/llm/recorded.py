"""A chat model that records every call in a run ledger and replays what was recorded.

Requests for n samples are split into n single-sample calls (seed + i), each keyed on its own, so a
run that died after 3 of 5 samples pays for 2 on resume. Identical calls in flight at the same moment
are made once and shared. Retried attempts the backend reports on its reply (``ChatResponse.retries``)
are recorded with the call under its stage, so reports can show them.
"""

from __future__ import annotations

import asyncio

from memwise._aio import gather_or_cancel
from memwise.exceptions import LLMError
from memwise.llm.base import ChatModel, ChatRequest, ChatResponse, Sample
from memwise.llm.recorder import CallRecorder


class RecordedLLM:
    """Wraps a backend with a call recorder (the run ledger); ``stage`` labels the calls for the run report.

    Example:
        >>> from memwise.testing import ScriptedLLM
        >>> import tempfile, pathlib
        >>> from memwise.runs.ledger import Ledger
        >>> led = Ledger(pathlib.Path(tempfile.mkdtemp()) / "l.sqlite3")
        >>> llm = RecordedLLM(ScriptedLLM(["hi"]), led, stage="demo")
        >>> asyncio.run(llm.complete(ChatRequest.of("hello"))).text
        'hi'
    """

    def __init__(self, inner: ChatModel, ledger: CallRecorder, *, stage: str = "default") -> None:
        self.inner = inner
        self.ledger = ledger
        self.stage = stage
        self.name = inner.name
        self._inflight: dict[str, asyncio.Future[Sample]] = {}

    def with_stage(self, stage: str) -> RecordedLLM:
        """The same backend and ledger, with calls labelled ``stage``."""
        view = RecordedLLM(self.inner, self.ledger, stage=stage)
        view._inflight = self._inflight  # share in-flight de-duplication across stages
        return view

    def describe(self) -> str:
        """The inner model's description and the ledger it records into."""
        return f"{self.inner.describe()} [ledger {self.ledger.path}]"

    async def aclose(self) -> None:
        """Close the inner model; the ledger belongs to the run and stays open."""
        await self.inner.aclose()

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """Each sample replayed from the ledger when recorded, else asked for and recorded, concurrently."""
        samples = await gather_or_cancel(*(self._one(request, i) for i in range(request.n)))
        return ChatResponse(model=self.name, samples=tuple(samples))

    async def _one(self, request: ChatRequest, index: int) -> Sample:
        key = request.cache_key(self.name, index)
        recorded = self.ledger.lookup(key)
        if recorded is not None:
            return recorded
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Sample] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            single = request.single(index)
            try:
                response = await self.inner.complete(single)
            except LLMError as exc:
                self.ledger.record_error(key, model=self.name, stage=self.stage, error=str(exc))
                raise
            sample = response.samples[0]
            self.ledger.record(
                key,
                model=self.name,
                stage=self.stage,
                sample_index=index,
                request=request,
                sample=sample,
                retries=response.retries,
            )
            future.set_result(sample)
            return sample
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            if not future.done():
                future.set_exception(exc)
                future.exception()  # mark retrieved: waiters, if any, re-raise it themselves
            raise
        finally:
            self._inflight.pop(key, None)

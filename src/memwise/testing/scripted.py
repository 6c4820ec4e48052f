"""A scripted chat model for tests of control flow (never a stand-in for a real model)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from memwise.llm.base import ChatRequest, ChatResponse, Sample, Usage

Reply = str | Sample
Handler = Callable[[ChatRequest], Reply | Awaitable[Reply]]


@dataclass
class ScriptedLLM:
    """Replies from a handler function or a list of scripted replies, and remembers every request.

    A request for n samples calls the handler once per sample with ``request.single(i)``, so a
    handler can tell samples apart by their seed. With a ``latency_s``, :attr:`peak_in_flight` tells a
    concurrency test how many calls its callers had open at once.

    Example:
        >>> llm = ScriptedLLM(lambda req: req.messages[-1].content.upper())
        >>> asyncio.run(llm.complete(ChatRequest.of("hi"))).text
        'HI'
    """

    script: Handler | Iterable[Reply]
    name: str = "scripted"
    latency_s: float = 0.0
    requests: list[ChatRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        if callable(self.script):
            self._handler: Handler | None = self.script
            self._replies: list[Reply] = []
        else:
            self._handler = None
            self._replies = list(self.script)
        self._in_flight = 0
        self._peak = 0

    @property
    def calls(self) -> int:
        """Backend calls made (one per sample)."""
        return len(self.requests)

    @property
    def peak_in_flight(self) -> int:
        """The most calls that were in progress at once."""
        return self._peak

    def describe(self) -> str:
        """The script's name, for logs and ledgers."""
        return f"scripted({self.name})"

    async def aclose(self) -> None:
        """Nothing to release."""
        return None

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """The next scripted reply (or the handler's) for each of the ``n`` samples, in order."""
        samples = [await self._sample(request.single(i)) for i in range(request.n)]
        return ChatResponse(model=self.name, samples=tuple(samples))

    async def _sample(self, request: ChatRequest) -> Sample:
        self.requests.append(request)
        self._in_flight += 1
        self._peak = max(self._peak, self._in_flight)
        try:
            return await self._reply(request)
        finally:
            self._in_flight -= 1

    async def _reply(self, request: ChatRequest) -> Sample:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if self._handler is not None:
            reply = self._handler(request)
            if inspect.isawaitable(reply):
                reply = await reply
        elif self._replies:
            reply = self._replies.pop(0)
        else:
            raise AssertionError(f"ScriptedLLM ran out of scripted replies after {self.calls - 1} calls")
        if isinstance(reply, Sample):
            return reply
        prompt_tokens = sum(len(m.content.split()) for m in request.messages)
        return Sample(
            text=reply, finish_reason="stop", usage=Usage(prompt_tokens, len(reply.split())), latency_s=self.latency_s
        )

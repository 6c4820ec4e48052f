"""The one chat-model interface every part of memwise calls.

A request asks for ``n`` samples; a response carries each sample's text, finish reason, token usage
and latency. Backends implement :class:`ChatModel`; wrappers (the run ledger) compose over it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol, runtime_checkable

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message."""

    role: Role
    content: str

    def to_dict(self) -> dict[str, str]:
        """The OpenAI chat wire shape, ``{"role": ..., "content": ...}``."""
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """What to ask a chat model.

    ``json_schema`` asks for output that conforms to a JSON schema; backends that can constrain
    decoding do so, the others are parsed tolerantly by the caller.

    Example:
        >>> req = ChatRequest.of("Say hi", max_tokens=8)
        >>> req.messages[0].role
        'user'
    """

    messages: tuple[Message, ...]
    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 512
    seed: int | None = None
    stop: tuple[str, ...] = ()
    json_schema: dict[str, Any] | None = None
    schema_name: str = "output"

    def __post_init__(self) -> None:
        """Refuse a request no backend could serve before it is sent (and retried)."""
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if not self.messages:
            raise ValueError("a ChatRequest needs at least one message")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")

    @classmethod
    def of(cls, prompt: str, *, system: str | None = None, **params: Any) -> ChatRequest:
        """A request from a user prompt and an optional system prompt."""
        msgs = ([Message("system", system)] if system else []) + [Message("user", prompt)]
        return cls(messages=tuple(msgs), **params)

    @classmethod
    def from_messages(cls, messages: Sequence[Message | dict[str, str]], **params: Any) -> ChatRequest:
        """A request from messages given as :class:`Message` or OpenAI-style dicts; ``params`` are the other fields."""
        converted = tuple(m if isinstance(m, Message) else Message(m["role"], m["content"]) for m in messages)  # type: ignore[arg-type]
        return cls(messages=converted, **params)

    def single(self, sample_index: int) -> ChatRequest:
        """The one-sample request for sample ``sample_index``: the seed moves with the index.

        Splitting n samples into n seeded single calls is what lets the ledger replay each sample on
        its own, so a resumed run pays only for the samples it lacks.
        """
        seed = None if self.seed is None else self.seed + sample_index
        return replace(self, n=1, seed=seed)

    def params(self) -> dict[str, Any]:
        """The sampling parameters, as recorded in the ledger."""
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
            "stop": list(self.stop),
            "json_schema": self.json_schema,
        }

    def cache_key(self, model: str, sample_index: int) -> str:
        """A stable hash of (model, messages, parameters, sample index)."""
        payload = {
            "model": model,
            "messages": [m.to_dict() for m in self.messages],
            "params": self.params(),
            "sample": sample_index,
        }
        blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts for one sample or one call."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens, what most budgets count."""
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.prompt_tokens + other.prompt_tokens, self.completion_tokens + other.completion_tokens)


@dataclass(frozen=True, slots=True)
class Sample:
    """One generated sample."""

    text: str
    finish_reason: str
    usage: Usage
    latency_s: float
    cached: bool = False


@dataclass(frozen=True, slots=True)
class ChatResponse:
    """All samples of one request, in sample-index order.

    ``retries`` says why each failed attempt was retried before this reply came (``"HTTP 429"``,
    ``"timeout"``...), empty when the first attempt answered; the run ledger counts them per stage.
    """

    model: str
    samples: tuple[Sample, ...] = field(default_factory=tuple)
    retries: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        """The first sample's text: the common case of n=1."""
        return self.samples[0].text

    @property
    def texts(self) -> list[str]:
        """Each sample's text, in sample order."""
        return [s.text for s in self.samples]

    @property
    def usage(self) -> Usage:
        """The tokens of all samples summed; each sample carries the prompt's tokens."""
        total = Usage()
        for s in self.samples:
            total = total + s.usage
        return total


@runtime_checkable
class ChatModel(Protocol):
    """The async chat-model protocol.

    ``name`` identifies the model for caching (two backends serving the same weights under the same
    name share ledger entries); ``describe()`` names the backend and endpoint for errors and
    ``memwise doctor``.
    """

    name: str

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """Return ``request.n`` samples, or raise :class:`memwise.exceptions.LLMError`."""
        ...

    def describe(self) -> str:
        """One line for logs and run records: backend, model and where it runs."""
        ...

    async def aclose(self) -> None:
        """Release connections or the loaded model; the chat model is not used afterwards."""
        ...

"""memwise: memory for LLM agents that learns how it should be used."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from memwise._version import __version__
from memwise.config import EmbedConfig, ModelConfig, Settings, load_settings  # noqa: E402
from memwise.exceptions import (  # noqa: E402
    ConfigError,
    DatasetError,
    EmbeddingError,
    LLMError,
    MemwiseError,
    ParseError,
    StoreError,
)
from memwise.llm.base import ChatModel, ChatRequest, ChatResponse, Message, Sample, Usage  # noqa: E402

if TYPE_CHECKING:
    from memwise.facts.memory import AsyncMemory, Memory

# Loaded on first use, so ``import memwise`` (and the CLI's start) does not pay for numpy, the store and
# the retriever; ``from memwise import Memory`` is the drop-in for ``from mem0 import Memory``.
_LAZY = {"Memory": "memwise.facts.memory", "AsyncMemory": "memwise.facts.memory"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'memwise' has no attribute {name!r}")


__all__ = [
    "AsyncMemory",
    "ChatModel",
    "ChatRequest",
    "ChatResponse",
    "ConfigError",
    "DatasetError",
    "EmbedConfig",
    "EmbeddingError",
    "LLMError",
    "Memory",
    "MemwiseError",
    "Message",
    "ModelConfig",
    "ParseError",
    "Sample",
    "Settings",
    "StoreError",
    "Usage",
    "__version__",
    "load_settings",
]

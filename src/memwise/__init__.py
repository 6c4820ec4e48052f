"""memwise: memory for LLM agents that learns how it should be used."""

from __future__ import annotations

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

__all__ = [
    "ChatModel",
    "ChatRequest",
    "ChatResponse",
    "ConfigError",
    "DatasetError",
    "EmbedConfig",
    "EmbeddingError",
    "LLMError",
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

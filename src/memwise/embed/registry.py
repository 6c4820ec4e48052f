"""Turn an embedding setting into an embedder, so callers never import a backend directly.

Backends are imported only when chosen: the OpenAI-compatible client must work without torch, and
the local model must work without an HTTP client configured.
"""

from __future__ import annotations

from pathlib import Path

from memwise.config import EmbedConfig
from memwise.embed.base import Embedder
from memwise.exceptions import ConfigError

_MINILM_NAMES = ("", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")


def build_embedder(cfg: EmbedConfig, cache_path: str | Path | None = None) -> Embedder:
    """The embedder ``cfg`` describes, behind a persistent cache when ``cache_path`` is given.

    Raises:
        ConfigError: an unknown backend, a model the backend cannot serve, or a missing extra.
    """
    inner: Embedder
    if cfg.backend == "minilm":
        if cfg.model not in _MINILM_NAMES:
            raise ConfigError(
                f"embedding backend 'minilm' serves only all-MiniLM-L6-v2, not {cfg.model!r}; "
                "use backend 'openai' with a server for other models"
            )
        from memwise.embed.minilm import MiniLMEmbedder

        inner = MiniLMEmbedder(batch_size=cfg.batch_size)
    elif cfg.backend == "openai":
        from memwise.embed.openai_compat import OpenAICompatEmbedder

        inner = OpenAICompatEmbedder.from_config(cfg)
    else:
        raise ConfigError(f"unknown embedding backend {cfg.backend!r}: use 'minilm' or 'openai'")
    if cache_path is None:
        return inner
    from memwise.embed.cache import CachedEmbedder

    return CachedEmbedder(inner, cache_path)

"""Turn an embedding setting into an embedder, so callers never import a backend directly.

The backend class comes from :data:`memwise.config.EMBED_BACKENDS`, the one list of embedding
backends. Backends are imported only when chosen: the OpenAI-compatible client must work without torch, and
the local model must work without an HTTP client configured.
"""

from __future__ import annotations

from pathlib import Path

from memwise.config import EMBED_BACKENDS, EmbedConfig, import_backend
from memwise.embed.base import Embedder


def build_embedder(cfg: EmbedConfig, cache_path: str | Path | None = None) -> Embedder:
    """The embedder ``cfg`` describes, behind a persistent cache when ``cache_path`` is given.

    Raises:
        ConfigError: an unknown backend, a model the backend cannot serve, or a missing extra.
    """
    inner: Embedder = import_backend(EMBED_BACKENDS, cfg.backend, "embedding").from_config(cfg)
    if cache_path is None:
        return inner
    from memwise.embed.cache import CachedEmbedder

    return CachedEmbedder(inner, cache_path)

"""The store, embedder and model a memory is built from when the caller passes none: the configured ones.

``Memory()`` with no arguments and ``Memory.from_settings`` come here; so does the CLI, for where a
memory lives when no ``--db`` is given.
"""

from __future__ import annotations

import os
from pathlib import Path

from memwise.config import Settings
from memwise.embed.base import Embedder
from memwise.llm.base import ChatModel
from memwise.store.base import Store
from memwise.store.registry import build_store, is_dsn


def build_parts(
    settings: Settings, path: str | Path | None, *, with_llm: bool
) -> tuple[Store, Embedder, ChatModel | None]:
    """The store, embedder and policy model the settings describe (the model loads on first use)."""
    from memwise.embed.registry import build_embedder
    from memwise.llm.registry import build_llm

    spec: str | Path = path if path is not None else (settings.store or default_store_path())
    cache: Path | None = None
    if not is_dsn(spec) and "://" not in str(spec):
        file = Path(spec)
        file.parent.mkdir(parents=True, exist_ok=True)
        cache = file.with_name(file.stem + ".embeddings.sqlite3")
    store = build_store(spec)
    try:
        embedder = build_embedder(settings.embedding, cache_path=cache)
        llm = build_llm(settings.model("policy")) if with_llm else None
    except BaseException:
        store.close()
        raise
    return store, embedder, llm


def default_store_path() -> Path:
    """Where the CLI keeps memory when no ``--db`` is given: ``$MEMWISE_HOME/memory.sqlite3``."""
    home = Path(os.environ.get("MEMWISE_HOME") or Path.home() / ".memwise")
    return home / "memory.sqlite3"

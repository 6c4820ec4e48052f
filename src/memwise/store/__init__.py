"""Stores: records with scope, text search and vector search, in SQLite (one file) or PostgreSQL (shared).

``build_store(spec)`` picks one from a path or a ``postgresql://`` DSN; every store satisfies
:class:`Store`, and :class:`AsyncStore` gives any of them an awaitable face.
"""

from __future__ import annotations

from memwise.store.aio import AsyncStore
from memwise.store.base import Filters, Record, ScoredRecord, Store
from memwise.store.registry import build_store
from memwise.store.sqlite import SQLiteStore

__all__ = ["AsyncStore", "Filters", "Record", "SQLiteStore", "ScoredRecord", "Store", "build_store"]

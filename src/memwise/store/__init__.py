"""The SQLite store: records with scope, FTS5 text search and exact vector search in one file."""

from __future__ import annotations

from memwise.store.base import Filters, Record, ScoredRecord
from memwise.store.sqlite import SQLiteStore

__all__ = ["Filters", "Record", "SQLiteStore", "ScoredRecord"]

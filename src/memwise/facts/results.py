"""What the memory API hands back, and the caller metadata it accepts, in the shapes mem0 users know.

Caller metadata is flat (JSON scalars) so every metadata filter can be expressed in both stores, and it
may not use the keys memwise writes on units itself. Results are plain lists of records with a
``to_dict()`` for mem0's ``{"results": [...]}``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from memwise.exceptions import ConfigError
from memwise.facts._text import day_label
from memwise.facts.ingest import DELETED
from memwise.facts.units import check_scope_id, from_epoch
from memwise.store.base import Record, ScoredRecord, new_id

MetadataFilter = Mapping[str, Any]
"""mem0's filter dict: ``{"k": v}``, ``{"k": {"gte": 1}}``, ``{"k": {"in": [...]}}``, ``{"AND"|"OR": [...]}``."""

RESERVED_METADATA = frozenset(
    {
        "speaker",
        "conversation_id",
        "session_id",
        "source_ids",
        "timestamp",
        "supersedes",
        "superseded_by",
        "edited",
        "context_before",
        "context_after",
        "entity_keys",
        DELETED,
        # Scope ids: a filter on them narrows the scope (as in mem0), so metadata under these names could
        # never be filtered on.
        "user_id",
        "agent_id",
        "run_id",
    }
)
"""Metadata keys memwise writes on memory units itself, and the scope ids; a caller's metadata may not use them."""


def check_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """A caller's metadata as stored: string keys, JSON scalar values, no key memwise uses itself.

    Flat values keep every metadata filter expressible in both stores (SQLite JSON paths, jsonb).

    Example:
        >>> check_metadata({"category": "pets", "year": 2024})
        {'category': 'pets', 'year': 2024}
    """
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise ConfigError(f"metadata must be a mapping of names to values, got {type(metadata).__name__}")
    clean: dict[str, Any] = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not key:
            raise ConfigError(f"metadata keys must be non-empty strings, got {key!r}")
        check_scope_id(f"metadata key {key!r}", key)
        if '"' in key or "\\" in key:  # SQLite's JSON path syntax cannot carry either, so no filter could find it
            raise ConfigError(f"metadata key {key!r}: double quotes and backslashes are not allowed in a key")
        if key in RESERVED_METADATA:
            raise ConfigError(f"metadata key {key!r} is reserved by memwise; choose another name")
        if value is not None and not isinstance(value, str | int | float | bool):
            raise ConfigError(
                f"metadata {key!r}: values must be strings, numbers, booleans or null, got {type(value).__name__}"
            )
        if isinstance(value, float) and value != value:  # NaN: no store can compare it
            raise ConfigError(f"metadata {key!r}: NaN cannot be stored or filtered")
        if isinstance(value, float) and math.isinf(value):
            # Written as JSON's non-standard ``Infinity``, which the stores' JSON functions cannot read:
            # every later filtered read of the store would fail on that one row.
            raise ConfigError(f"metadata {key!r}: {value} cannot be stored or filtered; use a finite number")
        clean[key] = value
    return clean


def user_metadata(record: Record) -> dict[str, Any]:
    """The caller's part of a record's metadata (what ``add(metadata=...)`` stored)."""
    return {k: v for k, v in record.metadata.items() if k not in RESERVED_METADATA}


def next_version(old: Record, text: str, *, labels: Mapping[str, Any], now: float) -> Record:
    """The record an edit of ``old`` writes: a new id, the new text, valid from ``now``, linked to ``old``.

    The caller metadata becomes ``labels``; memwise's own keys (speaker, session, sources) carry over,
    so the new version is found and shown as the old one was. A dated memory keeps its date in the
    words full-text search indexes.
    """
    system = {k: v for k, v in old.metadata.items() if k in RESERVED_METADATA}
    return replace(
        old,
        id=new_id(),
        text=text,
        index_text=f"[{day_label(from_epoch(old.ts))}] {text}" if old.ts is not None else None,
        created_at=now,
        valid_from=now,
        valid_to=None,
        metadata={**labels, **system, "supersedes": [old.id], "superseded_by": None, "edited": True},
    )


def memory_to_dict(record: Record, score: float | None = None) -> dict[str, Any]:
    """One memory in mem0's result shape (``memory`` is the text; times as ISO strings, UTC)."""
    created = from_epoch(record.created_at).isoformat() + "+00:00"
    item: dict[str, Any] = {
        "id": record.id,
        "memory": record.text,
        "hash": record.content_hash(),
        "metadata": user_metadata(record),
        "created_at": created,
        # An edit writes a new version (see next_version), so the version's own creation is the update.
        "updated_at": created if record.metadata.get("edited") else None,
        "user_id": record.user_id,
    }
    if record.agent_id is not None:
        item["agent_id"] = record.agent_id
    if record.run_id is not None:
        item["run_id"] = record.run_id
    if record.ts is not None:
        item["event_time"] = from_epoch(record.ts).isoformat()
    if record.valid_to is not None:
        item["valid_to"] = from_epoch(record.valid_to).isoformat() + "+00:00"
    if score is not None:
        item["score"] = score
    return item


class MemoryList(list[Record]):
    """A list of memories that also renders as mem0's ``{"results": [...]}``."""

    def to_dict(self) -> dict[str, list[dict[str, Any]]]:
        """mem0's result shape."""
        return {"results": [memory_to_dict(r) for r in self]}


class SearchResults(list[ScoredRecord]):
    """Search hits, best first, that also render as mem0's ``{"results": [...]}`` (with scores)."""

    def to_dict(self) -> dict[str, list[dict[str, Any]]]:
        """mem0's result shape."""
        return {"results": [memory_to_dict(h.record, h.score) for h in self]}

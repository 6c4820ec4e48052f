"""A user's memory as JSONL, and back: every version of every memory, so a round trip is exact.

Export format (one record a line, every version of every memory, history included)::

    {"id": "...", "kind": "turn", "text": "...", "index_text": "...",
     "scope": {"user_id": "alice", "agent_id": null, "run_id": null},
     "metadata": {...}, "ts": 1683554160.0, "created_at": 1733200000.0,
     "valid_from": null, "valid_to": null}

Vectors are not exported: they are a function of the text and the embedder, and an import into a
memory with another embedder must embed with that one anyway.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from memwise.embed.base import Embedder
from memwise.exceptions import DatasetError, StoreError
from memwise.facts.units import from_epoch
from memwise.store.base import Filters, Record, Store


class ImportConflict(StoreError):
    """An imported record's id exists already with different content; nothing was written."""


def record_to_json(record: Record) -> dict[str, Any]:
    """One export line's object: every field of the record, the scope grouped."""
    return {
        "id": record.id,
        "kind": record.kind,
        "text": record.text,
        "index_text": record.index_text,
        "scope": {"user_id": record.user_id, "agent_id": record.agent_id, "run_id": record.run_id},
        "metadata": record.metadata,
        "ts": record.ts,
        "created_at": record.created_at,
        "valid_from": record.valid_from,
        "valid_to": record.valid_to,
    }


def export_lines(store: Store, *, user_id: str) -> Iterator[str]:
    """Every record of ``user_id``, history included, as JSONL lines (each ending in a newline)."""
    for record in store.list_records(Filters(user_id=user_id, include_invalid=True)):
        yield json.dumps(record_to_json(record), ensure_ascii=False, sort_keys=True) + "\n"


def _opt_float(obj: Mapping[str, Any], key: str, where: str) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DatasetError(f"{key!r} must be a number or null, got {type(value).__name__}", path=where)
    try:  # every such field is a time: one no datetime can hold would fail each later rendering of the record
        from_epoch(float(value))
    except (OverflowError, ValueError, OSError) as exc:
        raise DatasetError(f"{key!r} is {value}, not a time between the years 1 and 9999", path=where) from exc
    return float(value)


def _opt_str(obj: Mapping[str, Any], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise DatasetError(f"{key!r} must be a string or null, got {type(value).__name__}", path=where)
    return value


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (math.inf, -math.inf):
        raise ValueError(f"{text} is too large for a number")
    return value


def parse_export_line(line: str, *, user_id: str, where: str) -> Record:
    """One export line as a record of ``user_id``.

    The importing user's scope is applied: a line that names another user is refused, never re-owned,
    so one user's export cannot be planted in (or claim to be) another user's memory.

    Raises:
        DatasetError: the line is not JSON, misses a field, has a wrong type, or belongs to another user.
    """
    try:
        obj = json.loads(line, parse_constant=_no_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"not valid JSON ({exc.msg} at column {exc.colno})", path=where) from exc
    except ValueError as exc:  # from the two hooks: stored, such a number breaks the stores' JSON functions
        raise DatasetError(f"not valid JSON ({exc})", path=where) from exc
    if not isinstance(obj, dict):
        raise DatasetError("each line must be a JSON object", path=where)
    missing = [name for name in ("id", "kind", "text", "created_at") if name not in obj]
    if missing:
        raise DatasetError(f"missing field(s) {', '.join(missing)}; lines are written by export", path=where)
    scope = obj.get("scope") or {}
    if not isinstance(scope, dict):
        raise DatasetError("'scope' must be an object", path=where)
    owner = scope.get("user_id")
    if owner is not None and owner != user_id:
        raise DatasetError(
            f"the line belongs to user {owner!r}, not to {user_id!r} who is importing; "
            "import a user's export as that user",
            path=where,
        )
    metadata = obj.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise DatasetError("'metadata' must be an object", path=where)
    for key in ("id", "kind", "text"):
        if not isinstance(obj[key], str) or (key != "text" and not obj[key]):
            raise DatasetError(f"{key!r} must be a non-empty string", path=where)
    created_at = _opt_float(obj, "created_at", where)
    try:
        return Record(
            id=obj["id"],
            kind=obj["kind"],
            text=obj["text"],
            index_text=_opt_str(obj, "index_text", where),
            user_id=user_id,
            agent_id=_opt_str(scope, "agent_id", where),
            run_id=_opt_str(scope, "run_id", where),
            metadata=metadata,
            ts=_opt_float(obj, "ts", where),
            created_at=time.time() if created_at is None else created_at,
            valid_from=_opt_float(obj, "valid_from", where),
            valid_to=_opt_float(obj, "valid_to", where),
        )
    except StoreError as exc:
        raise DatasetError(str(exc), path=where) from exc


def parse_export(lines: Iterable[str], *, user_id: str, source: str = "import") -> list[Record]:
    """Every line parsed, or the first bad line's error (blank lines are skipped)."""
    records: list[Record] = []
    for number, line in enumerate(lines, 1):
        if line.strip():
            records.append(parse_export_line(line, user_id=user_id, where=f"{source} line {number}"))
    return records


async def import_records(store: Store, embedder: Embedder, records: list[Record]) -> tuple[int, int]:
    """Write imported records in one transaction, re-embedded: ``(imported, skipped)``.

    A record whose id is present already with identical content (and validity) is skipped; one present
    with different content aborts the whole import with :class:`ImportConflict`, nothing written.
    Vectors are made first, as ingest does (index text, else text), so no await falls inside the
    transaction.
    """
    unique: dict[str, Record] = {}
    for record in records:
        if record.id in unique and unique[record.id] != record:
            raise ImportConflict(f"import: record id {record.id!r} appears twice with different content")
        unique[record.id] = record
    existing = {r.id: r for r in store.get_many(unique)}
    fresh: list[Record] = []
    for rid, record in unique.items():
        old = existing.get(rid)
        if old is None:
            fresh.append(record)
        elif old.content_hash() != record.content_hash() or old.valid_to != record.valid_to:
            raise ImportConflict(
                f"import: memory {rid!r} exists already with different content; nothing was imported. "
                "Delete it first or drop that line."
            )
    if not fresh:
        return 0, len(unique)
    vectors = await embedder.embed([r.indexed_text for r in fresh])
    with store.transaction():
        store.add(fresh, vectors)
    return len(fresh), len(unique) - len(fresh)

"""Checks of the memory API's arguments, made before anything is read or written.

Every method of :class:`~memwise.facts.async_memory.AsyncMemory` is scoped to a user, so a missing or
malformed scope id is refused here with a ConfigError that says which argument is wrong, as is a
metadata filter the store could not apply.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from memwise.exceptions import ConfigError, StoreError
from memwise.facts.results import MetadataFilter
from memwise.facts.units import check_scope_id, from_epoch, to_epoch
from memwise.store.base import Filters
from memwise.store.filters import Cmp, In, MetaFilter, Not
from memwise.store.filters import parse as parse_metadata_filter

MAX_FILTER_DEPTH = 20
"""Nesting of AND/OR/NOT a filter may have; SQLite's parser overflows its stack a little past 30."""

MAX_FILTER_TERMS = 500
"""Values a filter may test in all (each ``in`` value counts); SQLite refuses an expression of ~1000."""


SCOPE_KEYS = ("user_id", "agent_id", "run_id")
"""Scope ids, which mem0 lets a ``filters`` dict carry beside the metadata conditions."""


def scope_from_filters(
    filters: MetadataFilter | None, user_id: str, agent_id: str | None, run_id: str | None
) -> tuple[MetadataFilter | None, str | None, str | None]:
    """``(filters less its scope ids, agent_id, run_id)``: scope ids given in ``filters`` narrow the scope.

    A mem0 caller writes ``filters={"agent_id": "planner"}`` beside ``user_id=`` to get one agent's
    memories. Read as a metadata condition it would match nothing, silently, so the top-level scope ids
    of ``filters`` join the arguments instead. One that contradicts its argument, or is not one plain
    id, is refused: a filter can narrow a scope, never move or widen it.

    Example:
        >>> scope_from_filters({"agent_id": "planner", "topic": "pets"}, "alice", None, None)
        ({'topic': 'pets'}, 'planner', None)
    """
    if not isinstance(filters, Mapping) or not any(key in filters for key in SCOPE_KEYS):
        return filters, agent_id, run_id
    rest = dict(filters)
    given: dict[str, str | None] = {"user_id": user_id, "agent_id": agent_id, "run_id": run_id}
    for key in SCOPE_KEYS:
        if key not in rest:
            continue
        value = rest.pop(key)
        if not isinstance(value, str) or not value:
            raise ConfigError(f"filters.{key}: a scope id is one plain non-empty string (no operators), got {value!r}")
        if given[key] is not None and given[key] != value:
            raise ConfigError(f"filters.{key}={value!r} contradicts the argument {key}={given[key]!r}")
        given[key] = value
    return (rest or None), given["agent_id"], given["run_id"]


def read_scope(
    filters: MetadataFilter | None, *, user_id: str, agent_id: str | None, run_id: str | None, **fields: Any
) -> Filters:
    """The store filter of a read or bulk retire: the caller's scope, narrowed by ``filters``' scope ids.

    ``fields`` are the other :class:`~memwise.store.base.Filters` fields (time bounds, history).
    """
    filters, agent_id, run_id = scope_from_filters(filters, user_id, agent_id, run_id)
    check_scope(user_id, agent_id, run_id)
    return Filters(user_id=user_id, agent_id=agent_id, run_id=run_id, metadata=metadata_filter(filters), **fields)


def metadata_filter(filters: MetadataFilter | None) -> MetaFilter | None:
    """A caller's filter dict, parsed; a malformed one is the caller's mistake (ConfigError), said once.

    A filter too big for the store's SQL is refused here too: past the bounds SQLite fails the query
    itself, which would read as a store failure rather than as the request's fault.
    """
    if filters is None:
        return None
    if not isinstance(filters, Mapping):
        raise ConfigError(f"filters must be a mapping (mem0's filter language), got {type(filters).__name__}")
    try:
        parsed = parse_metadata_filter(filters)
    except StoreError as exc:
        raise ConfigError(f"filters: {exc}") from exc
    depth, terms, keys = _shape(parsed)
    scoped = sorted(keys & set(SCOPE_KEYS))
    if scoped:
        raise ConfigError(
            f"filters: {', '.join(scoped)} is a scope id, not metadata; give it at the top level of filters "
            "or as an argument (inside AND/OR/NOT it would match nothing)"
        )
    if depth > MAX_FILTER_DEPTH:
        raise ConfigError(f"filters: nested {depth} levels deep; at most {MAX_FILTER_DEPTH} are allowed")
    if terms > MAX_FILTER_TERMS:
        raise ConfigError(
            f"filters: {terms} values to test; at most {MAX_FILTER_TERMS} are allowed (split the request)"
        )
    return parsed


def _shape(node: MetaFilter) -> tuple[int, int, set[str]]:
    """``(nesting depth, values tested, metadata keys tested)`` of a parsed filter."""
    if isinstance(node, Cmp):
        return 0, 1, {node.key}
    if isinstance(node, In):
        return 0, len(node.values), {node.key}
    items = (node.item,) if isinstance(node, Not) else node.items
    shapes = [_shape(item) for item in items]
    return 1 + max(d for d, _, _ in shapes), sum(t for _, t, _ in shapes), set().union(*(k for _, _, k in shapes))


def check_time_range(since: datetime | None, until: datetime | None) -> None:
    """Refuse a bound that is not a datetime, and a range that ends before it starts (it can match nothing)."""
    for name, bound in (("since", since), ("until", until)):
        if bound is not None and not isinstance(bound, datetime):
            raise ConfigError(f"{name} must be a datetime, got {type(bound).__name__}")
    start, end = to_epoch(since), to_epoch(until)
    if start is not None and end is not None and start > end:
        raise ConfigError(f"since ({since}) is after until ({until}); swap them or drop one")


def check_session_time(session_time: datetime | None) -> None:
    """Refuse a session time that could be stored but never shown again.

    A datetime whose UTC time falls outside the years 1-9999 has an epoch value that no datetime can
    hold, so every later rendering of the memory (``to_dict``, ``answer``) would fail on it.
    """
    if session_time is None:
        return
    if not isinstance(session_time, datetime):
        raise ConfigError(f"session_time must be a datetime, got {type(session_time).__name__}")
    try:
        epoch = to_epoch(session_time)
        if epoch is not None:
            from_epoch(epoch)
    except (OverflowError, ValueError, OSError) as exc:
        raise ConfigError(f"session_time {session_time} is outside the years 1-9999 once in UTC") from exc


def check_offset(offset: int) -> None:
    """Refuse an ``offset`` that is not a non-negative integer."""
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ConfigError(f"offset must be a non-negative integer, got {offset!r}")


def check_limit(limit: int | None) -> None:
    """Refuse a ``limit``/``top_k`` that is not a positive integer (``True`` is not a count)."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"limit/top_k must be a positive integer, got {limit!r}")


def require_user(user_id: str) -> None:
    """Refuse a call without a usable ``user_id``: every memory operation is scoped to one user."""
    if not isinstance(user_id, str) or not user_id:
        raise ConfigError("user_id is required and must be a non-empty string")
    check_scope_id("user_id", user_id)


def check_scope(user_id: str, agent_id: str | None, run_id: str | None) -> None:
    """Refuse, before anything is written, scope ids that would be stored for good in an unusable form."""
    require_user(user_id)
    check_scope_id("agent_id", agent_id, optional=True)
    check_scope_id("run_id", run_id, optional=True)

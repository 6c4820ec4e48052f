"""Checks of the memory API's arguments, made before anything is read or written.

Every method of :class:`~memwise.facts.async_memory.AsyncMemory` is scoped to a user, so a missing or
malformed scope id is refused here with a ConfigError that says which argument is wrong, as is a
metadata filter the store could not apply.
"""

from __future__ import annotations

from collections.abc import Mapping

from memwise.exceptions import ConfigError, StoreError
from memwise.facts.results import MetadataFilter
from memwise.facts.units import check_scope_id
from memwise.store.filters import MetaFilter
from memwise.store.filters import parse as parse_metadata_filter


def metadata_filter(filters: MetadataFilter | None) -> MetaFilter | None:
    """A caller's filter dict, parsed; a malformed one is the caller's mistake (ConfigError), said once."""
    if filters is None:
        return None
    if not isinstance(filters, Mapping):
        raise ConfigError(f"filters must be a mapping (mem0's filter language), got {type(filters).__name__}")
    try:
        return parse_metadata_filter(filters)
    except StoreError as exc:
        raise ConfigError(f"filters: {exc}") from exc


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

"""The Postgres store's searches: full text by ``ts_rank``, vectors by HNSW or, for a small scope, exactly.

Each function runs on a connection the store hands it (pooled, or the thread's open transaction);
filters arrive already rendered as a SQL condition over the alias ``r``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from memwise.store._pg_schema import COLS, row_to_record
from memwise.store.base import Filters, ScoredRecord

MAX_EF_SEARCH = 1000  # pgvector's limit


def tsquery(words: Sequence[str]) -> str:
    """A to_tsquery expression ORing the quoted words; quoting makes operators in them plain text."""
    return " | ".join("'" + w.replace("\\", "\\\\").replace("'", "''") + "'" for w in words)


def search_text(conn: Any, words: Sequence[str], top_k: int, where: str, params: list[Any]) -> list[ScoredRecord]:
    """The best ``ts_rank`` matches for any of ``words`` among the records ``where`` allows, best first."""
    sql = (
        f"SELECT {COLS}, ts_rank(r.search_doc, q.query) AS rank "
        "FROM records r, to_tsquery('english', %s) AS q(query) "
        f"WHERE r.search_doc @@ q.query AND {where} ORDER BY rank DESC, r.seq LIMIT %s"
    )
    rows = conn.execute(sql, [tsquery(words), *params, top_k]).fetchall()
    return [ScoredRecord(row_to_record(row), float(row[-1])) for row in rows]


def is_small_scope(conn: Any, filters: Filters, where: str, params: list[Any], limit: int) -> bool:
    """True when ``filters`` name a scope and at most ``limit`` records pass them."""
    if filters.user_id is None and filters.agent_id is None and filters.run_id is None:
        return False
    sql = f"SELECT count(*) FROM (SELECT 1 FROM records r WHERE {where} LIMIT %s) scoped"
    (count,) = conn.execute(sql, [*params, limit + 1]).fetchone()
    return int(count) <= limit


def search_exact(
    conn: Any, query: npt.NDArray[np.float32], dim: int, space: str, top_k: int, where: str, params: list[Any]
) -> list[ScoredRecord]:
    """Every record of ``space`` that ``where`` allows ranked by cosine: a materialised scope skips HNSW."""
    distance = f"(v.embedding::vector({dim})) <=> %s::vector({dim})"
    sql = (
        f"WITH scoped AS MATERIALIZED (SELECT {COLS}, ({distance}) AS d FROM vectors v "
        f"JOIN records r ON r.id = v.record_id WHERE v.space = %s AND {where}) "
        "SELECT *, 1 - d FROM scoped ORDER BY d LIMIT %s"
    )
    rows = conn.execute(sql, [query, space, *params, top_k]).fetchall()
    return [ScoredRecord(row_to_record(row[:-2]), float(row[-1])) for row in rows]


def search_hnsw(
    conn: Any,
    query: npt.NDArray[np.float32],
    dim: int,
    space: str,
    top_k: int,
    where: str,
    params: list[Any],
    *,
    ef_search: int,
) -> list[ScoredRecord]:
    """The ``top_k`` nearest records through the space's HNSW index, scanned until enough pass ``where``.

    Above pgvector's ``ef_search`` limit one HNSW pass cannot return that many neighbours, so the
    planner is steered to an exact scan instead.
    """
    distance = f"(v.embedding::vector({dim})) <=> %s::vector({dim})"
    sql = (
        f"SELECT {COLS}, 1 - ({distance}) AS score FROM vectors v JOIN records r ON r.id = v.record_id "
        f"WHERE v.space = %s AND {where} ORDER BY {distance} LIMIT %s"
    )
    with conn.transaction():
        if top_k > MAX_EF_SEARCH:
            conn.execute("SELECT set_config('enable_indexscan', 'off', true)")
        else:
            conn.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(max(ef_search, top_k)),))
            conn.execute("SELECT set_config('hnsw.iterative_scan', 'strict_order', true)")
        rows = conn.execute(sql, [query, space, *params, query, top_k]).fetchall()
    return [ScoredRecord(row_to_record(row), float(row[-1])) for row in rows]

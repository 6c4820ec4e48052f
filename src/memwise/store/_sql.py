"""Schema, row mapping and SQL fragments shared by the store's read and write paths."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Sequence
from typing import Any, Literal

from memwise.store.base import Filters, Record
from memwise.store.filters import to_postgres, to_sqlite

SCHEMA_VERSION = 2

# `index_text`, when set, is what full-text search indexes instead of `text`: the words a record is
# found by (a session date, a speaker) need not be the words it is shown with.
# `seq` is the rowid: it orders inserts and is the FTS content rowid. `id` is the caller-facing key.
# `changes` holds, per record id ever touched, the sequence number of its last change; readers that
# cache (the vector index) poll `MAX(seq)` and reload only ids changed since they last looked.
# Deleted ids keep their `changes` row as a tombstone, so the table is bounded by distinct ids.
# `vectors` is a rowid table on purpose: a 384-d blob (1.5 KB) fits in a rowid table's page but
# would spill to overflow pages in a WITHOUT ROWID table, making full scans several times slower.
DDL = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    text TEXT NOT NULL,
    user_id TEXT,
    agent_id TEXT,
    run_id TEXT,
    metadata TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    ts REAL,
    valid_from REAL,
    valid_to REAL,
    content_hash TEXT NOT NULL,
    index_text TEXT
);
CREATE INDEX IF NOT EXISTS records_user ON records(user_id);
CREATE INDEX IF NOT EXISTS records_agent ON records(agent_id);
CREATE INDEX IF NOT EXISTS records_run ON records(run_id);
CREATE INDEX IF NOT EXISTS records_kind ON records(kind);
CREATE INDEX IF NOT EXISTS records_created ON records(created_at);
CREATE INDEX IF NOT EXISTS records_ts ON records(ts);
CREATE VIRTUAL TABLE IF NOT EXISTS records_fts USING fts5(
    text, content='records', content_rowid='seq', tokenize='porter unicode61'
);
CREATE TRIGGER IF NOT EXISTS records_fts_insert AFTER INSERT ON records BEGIN
    INSERT INTO records_fts(rowid, text) VALUES (new.seq, coalesce(new.index_text, new.text));
END;
CREATE TRIGGER IF NOT EXISTS records_fts_delete AFTER DELETE ON records BEGIN
    INSERT INTO records_fts(records_fts, rowid, text) VALUES ('delete', old.seq, coalesce(old.index_text, old.text));
END;
CREATE TRIGGER IF NOT EXISTS records_fts_update AFTER UPDATE OF text, index_text ON records BEGIN
    INSERT INTO records_fts(records_fts, rowid, text) VALUES ('delete', old.seq, coalesce(old.index_text, old.text));
    INSERT INTO records_fts(rowid, text) VALUES (new.seq, coalesce(new.index_text, new.text));
END;
CREATE TABLE IF NOT EXISTS vectors (
    record_id TEXT NOT NULL REFERENCES records(id) ON DELETE CASCADE,
    space TEXT NOT NULL,
    dim INTEGER NOT NULL,
    vec BLOB NOT NULL,
    PRIMARY KEY (record_id, space)
);
CREATE INDEX IF NOT EXISTS vectors_space ON vectors(space);
CREATE TABLE IF NOT EXISTS changes (
    record_id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL UNIQUE
);
"""


def migrate(conn: sqlite3.Connection) -> None:
    """Bring a store written by an older memwise up to date, inside the caller's write transaction.

    Version 2 added ``records.index_text`` and made full-text search index it: the column is added
    and the old triggers dropped, so the DDL that follows recreates them in their new form. Existing
    rows have no index text, so what FTS holds for them (their text) stays right.
    """
    has_records = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'records'").fetchone()
    if not has_records:
        return
    columns = {row[1] for row in conn.execute("PRAGMA table_info(records)")}
    if "index_text" not in columns:
        conn.execute("ALTER TABLE records ADD COLUMN index_text TEXT")
        for trigger in ("records_fts_insert", "records_fts_delete", "records_fts_update"):
            conn.execute(f"DROP TRIGGER IF EXISTS {trigger}")


def statements(script: str) -> list[str]:
    """Split a script into complete statements (triggers contain semicolons of their own).

    ``executescript`` would do the splitting but commits any open transaction first, and schema
    creation must happen inside the store's own write transaction.
    """
    out: list[str] = []
    current = ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            out.append(current.strip())
            current = ""
    if current.strip():
        out.append(current.strip())
    return out


RECORD_COLUMNS = (
    "id, kind, text, user_id, agent_id, run_id, metadata, created_at, ts, valid_from, valid_to, content_hash, "
    "index_text"
)


RECORD_MARKS = ", ".join("?" * len(RECORD_COLUMNS.split(",")))


def prefixed(alias: str) -> str:
    """RECORD_COLUMNS qualified by a table alias, for joins."""
    return ", ".join(f"{alias}.{c.strip()}" for c in RECORD_COLUMNS.split(","))


def row_to_record(row: sqlite3.Row | Sequence[Any], *, json_text: bool = True) -> Record:
    """A `records` row (selected as RECORD_COLUMNS, in order) as a Record.

    SQLite hands metadata back as JSON text (``json_text``); Postgres's jsonb arrives already decoded.
    """
    return Record(
        id=row[0],
        kind=row[1],
        text=row[2],
        user_id=row[3],
        agent_id=row[4],
        run_id=row[5],
        metadata=json.loads(row[6]) if json_text else row[6],
        created_at=row[7],
        ts=row[8],
        valid_from=row[9],
        valid_to=row[10],
        index_text=row[12],
    )


def record_params(record: Record, content_hash: str) -> tuple[Any, ...]:
    """Values for an INSERT of RECORD_COLUMNS (the hash is passed in: callers have computed it)."""
    return (
        record.id,
        record.kind,
        record.text,
        record.user_id,
        record.agent_id,
        record.run_id,
        dump_metadata(record),
        record.created_at,
        record.ts,
        record.valid_from,
        record.valid_to,
        content_hash,
        record.index_text,
    )


def dump_metadata(record: Record) -> str:
    return json.dumps(record.metadata, ensure_ascii=False, sort_keys=True, default=str)


def where_clause(
    filters: Filters, now: float, alias: str = "r", *, dialect: Literal["sqlite", "postgres"] = "sqlite"
) -> tuple[str, list[Any]]:
    """SQL condition (never empty) and parameters for ``filters`` over the ``records`` alias.

    Rendered from :meth:`Filters.terms`, the one definition of the predicate; ``dialect`` picks the
    parameter style (``?`` or ``%s``), the kind-list form and the metadata rendering (JSON text or jsonb).
    """
    mark = "?" if dialect == "sqlite" else "%s"
    parts: list[str] = ["1" if dialect == "sqlite" else "TRUE"]
    params: list[Any] = []
    for term in filters.terms(now):
        column = f"COALESCE({alias}.ts, {alias}.created_at)" if term.column == "event" else f"{alias}.{term.column}"
        if term.op == "in" and dialect == "sqlite":
            parts.append(f"{column} IN ({', '.join(mark * len(term.value))})")
            params.extend(term.value)
            continue
        if term.op == "in":
            parts.append(f"{column} = ANY({mark})")
            params.append(list(term.value))
            continue
        sql = {
            "eq": f"{column} = {mark}",
            "ge": f"{column} >= {mark}",
            "lt": f"{column} < {mark}",
            "unset_or_gt": f"({column} IS NULL OR {column} > {mark})",
        }[term.op]
        parts.append(sql)
        params.append(term.value)
    if filters.meta is not None:
        render = to_sqlite if dialect == "sqlite" else to_postgres
        sql, more = render(filters.meta, f"{alias}.metadata")
        parts.append(sql)
        params.extend(more)
    return " AND ".join(parts), params


_WORD = re.compile(r"\w+", re.UNICODE)
MAX_QUERY_TERMS = 64
# Words that occur in nearly every record: ORed in, they make the query match the whole table and
# cost time at scale while bm25 gives them almost no weight anyway.
STOPWORDS = frozenset(
    "a an and are as at be been but by can could did do does for from had has have he her him his how i if in "
    "into is it its me my no not of on or our she so than that the their them then there these they this to "
    "was we were what when where which who whom why will with would you your".split()
)


def fts_query(text: str) -> str | None:
    """An FTS5 MATCH expression that cannot be a syntax error: each word quoted, all ORed.

    User text reaches this unfiltered (a question, a whole turn), so operators such as ``AND``,
    ``NEAR``, ``*``, ``:`` or stray quotes must lose their meaning. Words are cut at non-word
    characters, which is what the unicode61 tokenizer would do anyway; English stopwords are dropped
    unless nothing else is left; only the first MAX_QUERY_TERMS distinct words count. Returns None
    when nothing searchable is left.
    """
    content = query_words(text)
    if not content:
        return None
    return " OR ".join('"' + word.replace('"', '""') + '"' for word in content)


def query_words(text: str) -> list[str]:
    """The distinct searchable words of a query, as :func:`fts_query` and the Postgres store use them."""
    words = list(dict.fromkeys(match.group(0) for match in _WORD.finditer(text.lower())))
    content = [word for word in words if word not in STOPWORDS] or words
    return content[:MAX_QUERY_TERMS]


VECTOR_SPACES = "SELECT space, COUNT(*) FROM vectors GROUP BY space"
"""How many vectors each space holds (both dialects)."""


def missing_vector_ids(
    space: str,
    *,
    source: str | None,
    after: str | None,
    limit: int,
    dialect: Literal["sqlite", "postgres"] = "sqlite",
) -> tuple[str, list[Any]]:
    """SQL (and parameters) for the ids of records embedded elsewhere but not in ``space``, by id after ``after``.

    "Elsewhere" is ``source`` or, when None, any other space: a record that was never embedded (an
    ingest receipt) stays text-only. Paging by id rather than offset keeps each page one index range
    even while earlier pages gain their vectors.
    """
    mark = "?" if dialect == "sqlite" else "%s"
    other = f"v.space = {mark}" if source is not None else f"v.space <> {mark}"
    sql = (
        f"SELECT r.id FROM records r WHERE r.id > {mark} "
        f"AND EXISTS (SELECT 1 FROM vectors v WHERE v.record_id = r.id AND {other}) "
        f"AND NOT EXISTS (SELECT 1 FROM vectors v WHERE v.record_id = r.id AND v.space = {mark}) "
        f"ORDER BY r.id LIMIT {mark}"
    )
    return sql, [after or "", space if source is None else source, space, max(limit, 0)]

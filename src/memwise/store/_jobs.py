"""The ``jobs`` table both stores keep for the server (:class:`memwise.store.base.JobLog`), in one place.

The statements differ between the dialects only in the parameter mark and Postgres's ``jsonb`` cast, so
each store's JobLog methods are one call here with its connection handle and dialect.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol, TypeVar

from memwise.store.base import FINISHED_JOB_STATUSES, job_state_json

T = TypeVar("T")
Dialect = Literal["sqlite", "postgres"]


class _Db(Protocol):
    """What both stores' connection handles offer: a write and a read, each named for its errors."""

    def write(self, work: Callable[[Any], T], what: str) -> T: ...

    def read(self, work: Callable[[Any], T], what: str) -> T: ...


def save_job(db: _Db, dialect: Dialect, job_id: str, status: str, state: Mapping[str, Any]) -> None:
    """Insert or replace a job's state."""
    mark = "?" if dialect == "sqlite" else "%s"
    doc_mark = mark if dialect == "sqlite" else "%s::jsonb"
    doc = job_state_json(job_id, state)
    sql = (
        f"INSERT INTO jobs(id, status, updated_at, state) VALUES ({mark}, {mark}, {mark}, {doc_mark}) "
        "ON CONFLICT (id) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at, "
        "state = excluded.state"
    )
    db.write(lambda conn: conn.execute(sql, (job_id, status, time.time(), doc)), f"saving job {job_id}")


def load_job(db: _Db, dialect: Dialect, job_id: str) -> dict[str, Any] | None:
    """A job's last saved state, or None (SQLite keeps JSON text, Postgres hands back the jsonb as a dict)."""
    mark = "?" if dialect == "sqlite" else "%s"
    row = db.read(
        lambda conn: conn.execute(f"SELECT state FROM jobs WHERE id = {mark}", (job_id,)).fetchone(), f"job {job_id}"
    )
    if row is None:
        return None
    return dict(json.loads(row[0]) if isinstance(row[0], str) else row[0])


def prune_jobs(db: _Db, dialect: Dialect, keep: int) -> int:
    """Forget finished jobs beyond the ``keep`` most recently saved; returns how many."""
    mark = "?" if dialect == "sqlite" else "%s"
    sql = (
        f"DELETE FROM jobs WHERE status IN ({', '.join([mark] * len(FINISHED_JOB_STATUSES))}) "
        f"AND id NOT IN (SELECT id FROM jobs ORDER BY updated_at DESC LIMIT {mark})"
    )
    return int(db.write(lambda conn: conn.execute(sql, (*FINISHED_JOB_STATUSES, max(keep, 0))).rowcount, "job pruning"))

"""Edits racing across processes on one Postgres schema: a memory never ends up with two current versions.

Each PostgresStore instance stands for a process (its own pool of connections). On SQLite the same
races are closed by the file's write lock (tests/facts/test_memory.py); Postgres needs the row lock
that :meth:`~memwise.store.base.Store.get_for_update` takes.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from memwise.exceptions import StoreError
from memwise.facts.memory import Memory
from memwise.store.postgres import PostgresStore
from memwise.testing import FakeEmbedder


@pytest.fixture
def schema(pg_database: str) -> Iterator[str]:
    name = f"mw_race_{uuid.uuid4().hex[:10]}"
    yield name
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def _edit_slowly(store: PostgresStore, memory_id: str, started: threading.Event) -> None:
    """Another process's edit of ``memory_id``: it reads the version, takes its time, then closes it."""
    with store.transaction():
        record = store.get_for_update(memory_id)
        assert record is not None
        started.set()
        time.sleep(0.5)
        store.update(memory_id, metadata={**record.metadata, "superseded_by": "elsewhere"})
        store.invalidate(memory_id)


@pytest.mark.parametrize("operation", ["update", "delete"])
def test_an_edit_committed_by_another_process_meanwhile_wins(pg_database: str, schema: str, operation: str) -> None:
    with (
        PostgresStore(pg_database, schema=schema) as here,
        PostgresStore(pg_database, schema=schema) as there,
        Memory(store=here, embedder=FakeEmbedder()) as memory,
    ):
        memory_id = memory.add("I live in Porto.", user_id="alice").unit_ids[0]
        started = threading.Event()
        other = threading.Thread(target=_edit_slowly, args=(there, memory_id, started))
        other.start()
        assert started.wait(10)
        try:
            if operation == "update":
                # Without the row lock this read the version as current (the other edit was not committed),
                # wrote a new version, then overwrote the other edit's close: two current versions.
                with pytest.raises(StoreError, match="no longer current"):
                    memory.update(memory_id, "I live in Lisbon.", user_id="alice")
            else:
                memory.delete(memory_id, user_id="alice")  # follows to "elsewhere", which does not exist
        finally:
            other.join()
        current = memory.get_all(user_id="alice")
        assert [r.id for r in current] == []
        record = here.get(memory_id)
        assert record is not None and record.metadata["superseded_by"] == "elsewhere"

"""Child-process bodies for the store's multi-process tests.

They live outside the test module because pytest imports tests with ``--import-mode=importlib``,
under names a spawned child cannot import; the tests put this folder on ``sys.path`` (which spawn
passes to the child) and import this module by its plain name.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from memwise.store.base import Record
from memwise.store.sqlite import SQLiteStore

DIM = 16


def vec_for(key: str, dim: int = DIM) -> np.ndarray:
    """A deterministic vector per key, so every process writes identical content for an id."""
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


def record_for(owner: int, j: int) -> Record:
    """Record j of process ``owner``: the same content whichever process writes it."""
    return Record(
        text=f"sharedword process{owner} item{j} note",
        id=f"p{owner}-{j}",
        user_id=f"user{owner % 2}",
        kind="fact" if j % 2 else "turn",
        metadata={"owner": owner, "j": j},
        ts=float(j),
    )


def writer(path: str, owner: int, n: int, processes: int) -> int:
    """Write n records in small batches, then re-add some of its own and some of a neighbour's."""
    store = SQLiteStore(path)
    try:
        batch = 25
        for start in range(0, n, batch):
            recs = [record_for(owner, j) for j in range(start, min(start + batch, n))]
            vecs = np.stack([vec_for(r.id) for r in recs])
            if start % 100 == 0:  # some batches as two adds grouped in one transaction
                with store.transaction():
                    store.add(recs[:10], vecs[:10])
                    store.add(recs[10:], vecs[10:])
            else:
                store.add(recs, vecs)
        # Re-adds: its own ids (a retried ingest) and the neighbour's (racing the neighbour's writes).
        for who in (owner, (owner + 1) % processes):
            recs = [record_for(who, j) for j in range(0, n, 10)]
            store.add(recs, np.stack([vec_for(r.id) for r in recs]))
        return n
    finally:
        store.close()


def crash_inside_transaction(path: str) -> None:
    """Die holding an open transaction: no commit, no rollback, no cleanup."""
    store = SQLiteStore(path)
    with store.transaction():
        ids = [f"c{i}" for i in range(50)]
        store.add([Record(text=f"memory {i}", id=i) for i in ids], np.stack([vec_for(i) for i in ids]))
        os._exit(3)


def late_writer(path: str) -> None:
    store = SQLiteStore(path)
    store.add([Record(text="memory late", id="late", user_id="u")], vec_for("late")[None, :])
    store.close()


def pg_writer(dsn: str, owner: int, n: int) -> int:
    """``n`` adds of its own records on a Postgres store, plus re-adds of the other writer's ids."""
    from memwise.store.postgres import PostgresStore

    with PostgresStore(dsn) as store:
        for start in range(0, n, 20):
            recs = [record_for(owner, j) for j in range(start, min(start + 20, n))]
            store.add(recs, np.stack([vec_for(r.id) for r in recs]))
        for who in (owner, 1 - owner):  # overlapping writes of identical content: written once
            recs = [record_for(who, j) for j in range(0, n, 7)]
            store.add(recs, np.stack([vec_for(r.id) for r in recs]))
    return n


def pg_open(dsn: str) -> int:
    """Open (and so migrate) a Postgres store; returns how many records it sees."""
    from memwise.store.postgres import PostgresStore

    with PostgresStore(dsn) as store:
        return store.count()

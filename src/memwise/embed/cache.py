r"""A persistent embedding cache: the same text is never embedded twice by the same model.

Benchmarks re-ingest the same conversations under many configurations, and a CPU model embeds a
few hundred texts a second at best, so vectors are kept in SQLite keyed by
``sha256(embedder.name + "\0" + text)``. The name is part of the key, so two models never share an
entry; several processes may share one cache file.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from memwise._sqlite import Database
from memwise.embed.base import Embedder, Vectors
from memwise.exceptions import ConfigError, EmbeddingError

_DDL = (
    "CREATE TABLE IF NOT EXISTS embeddings (key BLOB PRIMARY KEY, dim INTEGER NOT NULL, vec BLOB NOT NULL) "
    "WITHOUT ROWID"
)
_CHUNK = 500


class CachedEmbedder:
    """Wraps an :class:`Embedder`, answering repeated texts from a SQLite file.

    Args:
        inner: the embedder that computes misses.
        path: the cache file (created with its folders when missing).
        busy_timeout_s: how long to wait for another process holding the file's write lock.

    Only texts missing from the cache reach ``inner``, each once per call however often it repeats;
    a text already being embedded by a concurrent call on the same event loop is awaited, not
    recomputed. ``hits`` and ``misses`` count texts answered each way.
    """

    def __init__(self, inner: Embedder, path: str | Path, *, busy_timeout_s: float = 30.0) -> None:
        self.inner = inner
        self.name = inner.name
        if "\0" in self.name:
            # The key joins name and text with a NUL; one inside the name could make two pairs meet.
            raise ConfigError(f"embedder name {self.name!r} contains a NUL character; name the model without one")
        self.path = Path(path)
        self.hits = 0
        self.misses = 0
        self._inflight: dict[bytes, asyncio.Future[np.ndarray]] = {}
        self._db = Database(self.path, label="embedding cache", busy_timeout_s=busy_timeout_s)
        try:
            self._db.migrate(1, lambda conn, old: conn.execute(_DDL))
        except BaseException:
            self._db.close()
            raise

    @property
    def dim(self) -> int:
        """The inner embedder's dimension, read live: a remote model may learn it on its first reply."""
        return self.inner.dim

    def describe(self) -> str:
        """The inner embedder's description and the cache file."""
        return f"{self.inner.describe()} [cached in {self.path}]"

    def close(self) -> None:
        """Close the cache database only; :meth:`aclose` also closes the inner embedder."""
        self._db.close()

    async def aclose(self) -> None:
        """Close the cache database and the embedder it wraps."""
        self.close()
        await self.inner.aclose()

    def key(self, text: str) -> bytes:
        """The cache key of ``text`` under this embedder's name."""
        return hashlib.sha256(f"{self.name}\0{text}".encode()).digest()

    # -- SQLite, run in worker threads ----------------------------------------------------------

    def _lookup(self, keys: list[bytes]) -> dict[bytes, np.ndarray]:
        def work(conn: sqlite3.Connection) -> dict[bytes, np.ndarray]:
            found: dict[bytes, np.ndarray] = {}
            for start in range(0, len(keys), _CHUNK):
                chunk = keys[start : start + _CHUNK]
                sql = f"SELECT key, dim, vec FROM embeddings WHERE key IN ({', '.join('?' * len(chunk))})"
                for key, dim, blob in conn.execute(sql, chunk):
                    if (dim == self.dim or not self.dim) and len(blob) == 4 * dim:
                        found[key] = np.frombuffer(blob, dtype=np.float32)
            return found

        return self._db.read(work, "reading the embedding cache")

    def _save(self, rows: list[tuple[bytes, np.ndarray]]) -> None:
        packed = [(key, vec.shape[0], np.ascontiguousarray(vec, dtype=np.float32).tobytes()) for key, vec in rows]
        self._db.write(
            lambda conn: conn.executemany("INSERT OR IGNORE INTO embeddings(key, dim, vec) VALUES (?, ?, ?)", packed),
            "writing the embedding cache",
        )

    async def _compute(
        self, batch: list[str], keys: list[bytes], mine: dict[bytes, asyncio.Future[np.ndarray]]
    ) -> dict[bytes, np.ndarray]:
        """Embed the texts behind ``mine`` with ``inner``, store them, and resolve the futures."""
        text_of = dict(zip(keys, batch, strict=True))
        try:
            vectors = np.asarray(await self.inner.embed([text_of[key] for key in mine]), dtype=np.float32)
            if vectors.ndim != 2 or vectors.shape[0] != len(mine) or (self.dim and vectors.shape[1] != self.dim):
                raise EmbeddingError(
                    f"{self.inner.name} returned shape {vectors.shape} for {len(mine)} texts; "
                    f"expected ({len(mine)}, {self.dim or 'dim'})"
                )
            fresh = dict(zip(mine, vectors, strict=True))
            await asyncio.to_thread(self._save, list(fresh.items()))
        except Exception as exc:
            for future in mine.values():
                if not future.done():
                    future.set_exception(exc)
                    future.exception()  # mark retrieved: no "never retrieved" log when nobody waits
            raise
        except BaseException:
            for future in mine.values():
                future.cancel()
            raise
        finally:
            for key, future in mine.items():
                if self._inflight.get(key) is future:
                    del self._inflight[key]
        for key, future in mine.items():
            if not future.done():
                future.set_result(fresh[key])
        return fresh

    # -- the Embedder protocol ------------------------------------------------------------------

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """Vectors for ``texts`` from the cache where present, from ``inner`` otherwise."""
        if isinstance(texts, str):
            raise EmbeddingError(f"{self.name}: embed takes a sequence of texts, not one string")
        batch = list(texts)
        if not batch:
            return np.zeros((0, self.dim), dtype=np.float32)
        keys = [self.key(text) for text in batch]
        unique = list(dict.fromkeys(keys))
        found = await asyncio.to_thread(self._lookup, unique)

        loop = asyncio.get_running_loop()
        waiting: dict[bytes, asyncio.Future[np.ndarray]] = {}
        mine: dict[bytes, asyncio.Future[np.ndarray]] = {}
        for key in unique:
            if key in found:
                continue
            pending = self._inflight.get(key)
            if pending is not None and pending.get_loop() is loop and not pending.done():
                waiting[key] = pending
            else:
                mine[key] = self._inflight[key] = loop.create_future()
        self.hits += sum(1 for key in keys if key in found)
        self.misses += sum(1 for key in keys if key not in found)

        if mine:
            found.update(await self._compute(batch, keys, mine))
        if waiting:
            # asyncio.wait never raises the futures' errors; our own cancellation still propagates.
            await asyncio.wait(waiting.values())
            redo: list[bytes] = []
            for key, future in waiting.items():
                if future.cancelled():
                    redo.append(key)  # the call computing it was cancelled: not our failure, compute it
                elif (error := future.exception()) is not None:
                    raise error
                else:
                    found[key] = future.result()
            if redo:
                found.update(await self._compute(batch, keys, {key: loop.create_future() for key in redo}))
        dims = {found[key].shape[0] for key in unique}
        if len(dims) != 1:
            raise EmbeddingError(f"{self.path}: cached vectors for {self.name} disagree on dimension: {sorted(dims)}")
        return np.stack([found[key] for key in keys]).astype(np.float32, copy=False)

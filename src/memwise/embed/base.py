"""The embedding interface: texts in, unit-norm float32 vectors out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]


@runtime_checkable
class Embedder(Protocol):
    """Async embedding protocol.

    ``embed`` returns an array of shape ``(len(texts), dim)``, dtype float32, each row L2-normalised,
    so a dot product is a cosine similarity. ``name`` keys the embedding cache: two embedders with the
    same name must produce the same vectors.
    """

    # Read-only in the protocol: a wrapper (the cache) forwards them as properties, and a remote
    # model may learn ``dim`` from its first reply; a plain attribute satisfies them too.
    @property
    def name(self) -> str:
        """Identifies the vectors; the cache key, so it must change when the vectors would."""
        ...

    @property
    def dim(self) -> int:
        """Width of each row; 0 until a remote model whose size is not known has answered once."""
        ...

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """One row per text, in the order given; the batch size is the caller's to choose."""
        ...

    def describe(self) -> str:
        """One line for logs and run records: backend, model and where it runs."""
        ...

    async def aclose(self) -> None:
        """Release connections or files; the embedder is not used afterwards."""
        ...


def normalise(vectors: npt.ArrayLike) -> Vectors:
    """Rows scaled to unit length (zero rows stay zero)."""
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None, :]
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (arr / norms).astype(np.float32, copy=False)

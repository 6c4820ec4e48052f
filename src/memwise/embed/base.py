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

    name: str
    dim: int

    async def embed(self, texts: Sequence[str]) -> Vectors: ...

    def describe(self) -> str: ...

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

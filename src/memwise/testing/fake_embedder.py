"""A deterministic stand-in for a real embedding model, for tests of control flow.

Vectors are hashed bags of words and character trigrams, so texts that share words (or word
pieces) get a high cosine and unrelated texts a low one, in every process and on every run (the
hash is blake2b, not Python's salted ``hash``). No model, no torch, no network. It knows nothing
of meaning: "car" and "automobile" are strangers to it. Use it to test plumbing, never quality.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

from memwise.embed.base import Vectors, normalise
from memwise.exceptions import EmbeddingError

_WORD = re.compile(r"\w+", re.UNICODE)
_WORD_WEIGHT = 2.0
_GRAM_WEIGHT = 0.5


class FakeEmbedder:
    """Hashed word + character-trigram embedder.

    Args:
        dim: vector size (default 384, like all-MiniLM-L6-v2, so it can stand in for it).

    ``calls`` and ``texts_embedded`` count the work done, for tests that check caching.
    """

    def __init__(self, dim: int = 384) -> None:
        if dim < 8:
            raise EmbeddingError(f"FakeEmbedder: dim must be at least 8, got {dim}")
        self.dim = dim
        self.name = f"fake-ngram-{dim}"
        self.calls = 0
        self.texts_embedded = 0

    def describe(self) -> str:
        """Says plainly that this is a test double, so no report mistakes it for a model."""
        return f"{self.name}: hashed word and character-trigram features, {self.dim}-d (test double, no model)"

    async def aclose(self) -> None:
        """Nothing to release."""
        return None

    def _features(self, text: str) -> list[tuple[str, float]]:
        words = _WORD.findall(text.lower())
        if not words:
            return [("\0empty", 1.0)]
        feats: list[tuple[str, float]] = []
        for word in words:
            feats.append(("w:" + word, _WORD_WEIGHT))
            padded = f"#{word}#"
            feats.extend(("g:" + padded[i : i + 3], _GRAM_WEIGHT) for i in range(len(padded) - 2))
        return feats

    def _vector(self, text: str) -> np.ndarray:
        vec = np.zeros(self.dim, dtype=np.float32)
        for feature, weight in self._features(text):
            digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
            value = int.from_bytes(digest, "little")
            sign = 1.0 if value & 1 else -1.0
            vec[(value >> 1) % self.dim] += sign * weight
        return vec

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """Unit-norm vectors, one row per text (an empty text gets a fixed vector of its own)."""
        if isinstance(texts, str):
            raise EmbeddingError("FakeEmbedder.embed takes a sequence of texts, not one string")
        self.calls += 1
        self.texts_embedded += len(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return normalise(np.stack([self._vector(text) for text in texts]))

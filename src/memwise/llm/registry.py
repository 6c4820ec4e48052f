"""Chat models from settings: the backend class comes from :data:`memwise.config.MODEL_BACKENDS`.

The names live in that one table (settings validation reads it too), imported lazily so a server-only
install stays light.
"""

from __future__ import annotations

from memwise.config import MODEL_BACKENDS, ModelConfig, Settings, import_backend
from memwise.llm.base import ChatModel


def build_llm(cfg: ModelConfig) -> ChatModel:
    """A chat model for one configuration.

    Example:
        >>> build_llm(ModelConfig(backend="openai", base_url="http://127.0.0.1:9/v1", model="m")).name
        'm'
    """
    backend = import_backend(MODEL_BACKENDS, cfg.backend, "model")
    return backend.from_config(cfg)


class ModelSet:
    """The chat models of a run, one per role, built on first use.

    Roles with equal settings share one instance, so the embedded model is loaded once even when it
    serves as policy, judge and optimizer.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._built: dict[ModelConfig, ChatModel] = {}

    def get(self, role: str) -> ChatModel:
        """The model for ``role`` (policy, judge, optimizer...), built on first use and shared by equal settings."""
        cfg = self.settings.model(role)
        if cfg not in self._built:
            self._built[cfg] = build_llm(cfg)
        return self._built[cfg]

    async def aclose(self) -> None:
        """Close every model built so far; a later :meth:`get` builds afresh."""
        for model in self._built.values():
            await model.aclose()
        self._built.clear()

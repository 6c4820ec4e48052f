"""Global CLI options and how they override configuration (flags > environment > TOML > defaults)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from memwise.config import Settings, load_settings
from memwise.exceptions import ConfigError
from memwise.facts.readers import parse_datetime


@dataclass(frozen=True)
class GlobalOptions:
    """Flags given before the command, e.g. ``memwise --base-url URL --model M chat "hi"``."""

    config: Path | None = None
    backend: str | None = None
    base_url: str | None = None
    model: str | None = None
    api_key_env: str | None = None
    concurrency: int | None = None
    judge_base_url: str | None = None
    judge_model: str | None = None
    optimizer_base_url: str | None = None
    optimizer_model: str | None = None
    embed_backend: str | None = None
    embed_base_url: str | None = None
    embed_model: str | None = None

    def settings(self) -> Settings:
        return load_settings(
            self.config,
            overrides={
                "policy": {
                    "backend": self.backend,
                    "base_url": self.base_url,
                    "model": self.model,
                    "api_key_env": self.api_key_env,
                    "max_concurrency": self.concurrency,
                },
                "judge": {"base_url": self.judge_base_url, "model": self.judge_model},
                "optimizer": {"base_url": self.optimizer_base_url, "model": self.optimizer_model},
                "embedding": {
                    "backend": self.embed_backend,
                    "base_url": self.embed_base_url,
                    "model": self.embed_model,
                },
            },
        )


def parse_when(value: str | None, flag: str) -> datetime | None:
    """A date given on the command line (LoCoMo, LongMemEval or ISO form), or a clear error naming the flag."""
    if value is None:
        return None
    try:
        return parse_datetime(value)
    except ValueError as exc:
        raise ConfigError(f"{flag}: cannot read {value!r} as a date ({exc})") from exc

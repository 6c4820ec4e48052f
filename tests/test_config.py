from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import get_args

import pytest

from memwise.config import (
    EMBED_BACKENDS,
    MODEL_BACKENDS,
    EmbedBackend,
    EmbedConfig,
    ModelBackend,
    ModelConfig,
    import_backend,
    load_settings,
)
from memwise.embed.registry import build_embedder
from memwise.exceptions import ConfigError
from memwise.llm.registry import build_llm


def test_nothing_configured_means_the_embedded_model_everywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(env={})
    assert settings.source == "defaults"
    for role in ("policy", "judge", "optimizer"):
        assert settings.model(role).backend == "local"
    assert settings.embedding.backend == "minilm"


def test_toml_then_env_then_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "memwise.toml"
    cfg.write_text(
        """
[models.policy]
base_url = "http://127.0.0.1:8000/v1"
model = "toml-model"
max_concurrency = 8

[models.judge]
base_url = "http://127.0.0.1:9000/v1"
model = "judge-model"
api_key_env = "JUDGE_KEY"
"""
    )
    env = {"MEMWISE_MODEL": "env-model", "MEMWISE_JUDGE_CONCURRENCY": "3"}
    settings = load_settings(cfg, env=env, overrides={"policy": {"max_concurrency": 32, "model": None}})
    policy, judge = settings.model("policy"), settings.model("judge")
    assert (policy.backend, policy.base_url, policy.model, policy.max_concurrency) == (
        "openai",
        "http://127.0.0.1:8000/v1",
        "env-model",
        32,
    )
    assert (judge.base_url, judge.model, judge.api_key_env, judge.max_concurrency) == (
        "http://127.0.0.1:9000/v1",
        "judge-model",
        "JUDGE_KEY",
        3,
    )
    # The optimizer role was never set: it follows the policy model.
    assert settings.model("optimizer") == policy


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[models.policy]\nbase_urll = 'x'\n", "unknown setting 'base_urll'"),
        ("[models.critic]\nmodel = 'x'\n", "unknown model role [models.critic]"),
        ("[models.policy\n", "not valid TOML"),
        ("[models.policy]\nbackend = 'openai'\n", "needs base_url"),
        ("[models.policy]\nmax_concurrency = 'many'\n", "must be an integer"),
    ],
)
def test_bad_config_files_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_settings(cfg, env={})


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found: .*nope.toml"):
        load_settings(tmp_path / "nope.toml", env={})


def test_unknown_role_is_rejected() -> None:
    with pytest.raises(ConfigError, match="unknown model role"):
        load_settings(env={}).model("critic")


def test_model_config_validates() -> None:
    with pytest.raises(ConfigError, match="unknown model backend"):
        ModelConfig(backend="vllm")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="max_concurrency"):
        ModelConfig(max_concurrency=0)


@pytest.mark.parametrize(
    ("table", "literal", "kind"),
    [(MODEL_BACKENDS, ModelBackend, "model"), (EMBED_BACKENDS, EmbedBackend, "embedding")],
)
def test_one_backend_registry_per_kind_feeds_validation_and_building(table: object, literal: object, kind: str) -> None:
    """The registry is the only list: the type, the validation message and the builders all follow it."""
    assert isinstance(table, Mapping)
    assert set(get_args(literal)) == set(table)
    for name in table:
        backend = import_backend(table, name, kind)
        assert callable(backend.from_config), name
    cls = ModelConfig if kind == "model" else EmbedConfig
    with pytest.raises(ConfigError) as caught:
        cls(backend="nope")  # type: ignore[arg-type]
    assert all(repr(name) in str(caught.value) for name in table)


def test_registry_backends_build_from_settings() -> None:
    llm = build_llm(ModelConfig(backend="openai", base_url="http://127.0.0.1:9/v1", model="m"))
    assert type(llm).__name__ == MODEL_BACKENDS["openai"].rpartition(":")[2]
    embedder = build_embedder(EmbedConfig(backend="openai", base_url="http://127.0.0.1:9/v1", model="e"))
    assert type(embedder).__name__ == EMBED_BACKENDS["openai"].rpartition(":")[2]
    with pytest.raises(ConfigError, match="only all-MiniLM-L6-v2"):
        build_embedder(EmbedConfig(backend="minilm", model="bge-small"))


def test_a_role_naming_only_a_model_is_served_where_the_policy_is() -> None:
    env = {
        "MEMWISE_BASE_URL": "http://127.0.0.1:8000/v1",
        "MEMWISE_MODEL": "Qwen/Qwen3-8B",
        "MEMWISE_OPTIMIZER_MODEL": "my-mem-optimizer",
    }
    settings = load_settings(env=env)
    optimizer = settings.model("optimizer")
    assert (optimizer.backend, optimizer.base_url, optimizer.model) == (
        "openai",
        "http://127.0.0.1:8000/v1",
        "my-mem-optimizer",
    )
    # A role with its own server keeps it; an unset role follows the policy whole.
    own = {"MEMWISE_JUDGE_BASE_URL": "http://127.0.0.1:8001/v1", "MEMWISE_JUDGE_MODEL": "j"}
    judged = load_settings(env={**env, **own})
    assert judged.model("judge").base_url == "http://127.0.0.1:8001/v1"
    assert settings.model("judge") == settings.model("policy")

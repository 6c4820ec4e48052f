"""The error tree as callers meet it: misuse is ConfigError, a missing memory is NotFoundError."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from memwise.cli import app
from memwise.exceptions import ConfigError, MemoryNotFoundError, NotFoundError, StoreError
from memwise.facts.memory import Memory
from memwise.server.service import MemoryNotFound
from memwise.store.sqlite import SQLiteStore
from memwise.testing import FakeEmbedder, FakeOpenAIServer
from memwise.umem.bank import InsightBank
from memwise.umem.evolve_config import EvolveConfig
from memwise.umem.grpo_settings import GRPOSettings


def test_a_missing_or_foreign_memory_is_not_found_and_still_a_store_error(tmp_path: Path) -> None:
    with Memory(store=SQLiteStore(tmp_path / "m.db"), embedder=FakeEmbedder()) as mem:
        added = mem.add({"role": "user", "content": "My sister lives in Lisbon."}, user_id="alice")
        [unit] = added.unit_ids
        for memory_id, user in (("no-such-id", "alice"), (unit, "bob")):
            with pytest.raises(NotFoundError, match="no memory") as caught:
                mem.delete(memory_id, user_id=user)
            assert isinstance(caught.value, StoreError)  # callers that caught StoreError keep working


def test_the_servers_not_found_is_the_trees_not_found() -> None:
    assert issubclass(MemoryNotFound, MemoryNotFoundError) and issubclass(MemoryNotFound, NotFoundError)


@pytest.mark.parametrize(
    "build",
    [
        lambda _: GRPOSettings(group_size=1),
        lambda _: EvolveConfig(suite="mmlu", top_k=0),
        lambda tmp: InsightBank(SQLiteStore(tmp / "bank.db"), FakeEmbedder()),
    ],
    ids=["grpo-settings", "evolve-config", "bank-without-scope"],
)
def test_umem_misuse_is_a_config_error(build: Callable[[Path], object], tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        build(tmp_path)


def test_the_cli_does_not_relabel_a_library_value_error_as_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ValueError from trl or torch is a bug to report with its traceback, not "check your settings"."""
    import memwise.umem.grpo as grpo

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("shape mismatch inside the trainer")

    monkeypatch.setattr(grpo, "train_mem_optimizer", broken)
    data = tmp_path / "mmlu.jsonl"
    rows = [{"question": f"Which gas, case {i}?", "type": "b", "choices": ["O2", "CO2"], "answer": 1} for i in range(5)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with FakeOpenAIServer(responder=lambda call: "Answer: B").in_thread() as srv:
        url = srv.base_url
        result = CliRunner().invoke(
            app,
            [
                "--base-url", url, "--model", "m", "--embed-backend", "openai", "--embed-base-url", url,
                "umem", "train", "--suite", "mmlu", "--path", str(data), "--optimizer-model", str(tmp_path),
                "--run-dir", str(tmp_path / "run"), "--max-tokens", "16", "--floor", "0",
            ],
        )  # fmt: skip
    assert type(result.exception) is ValueError, result.output
    assert "shape mismatch" in str(result.exception)

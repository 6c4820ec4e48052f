"""The memwise command as a user runs it: real embedded model, fake OpenAI server on loopback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from memwise.cli import app
from memwise.testing import FakeOpenAIServer

runner = CliRunner()


def test_chat_on_the_embedded_model_prints_reply_and_usage() -> None:
    result = runner.invoke(app, ["chat", "Say hello.", "--max-tokens", "8", "--json"])
    assert result.exit_code == 0, result.output
    reply = json.loads(result.stdout.splitlines()[-1])
    assert reply["model"].startswith("SmolLM2-135M-Instruct")
    sample = reply["samples"][0]
    assert sample["text"].strip()
    assert sample["completion_tokens"] > 0 and sample["prompt_tokens"] > 0


def test_chat_schema_against_a_server_and_ledger_replay(tmp_path: Path) -> None:
    schema = tmp_path / "s.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"x": {"type": "integer"}}}))
    with FakeOpenAIServer(json_responder=lambda call, schema: '{"x": 7}').in_thread() as srv:
        args = ["--base-url", srv.base_url, "--model", "m", "chat", "give x", "--schema", str(schema)]
        args += ["--run-dir", str(tmp_path / "run"), "--json"]
        first = runner.invoke(app, args)
        assert first.exit_code == 0, first.output
        sample = json.loads(first.stdout.splitlines()[-1])["samples"][0]
        assert (json.loads(sample["text"]), sample["cached"]) == ({"x": 7}, False)
        again = runner.invoke(app, args)
        assert json.loads(again.stdout.splitlines()[-1])["samples"][0]["cached"] is True
        assert srv.stats().completions == 1


def test_chat_bad_schema_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    result = runner.invoke(app, ["chat", "hi", "--schema", str(bad)])
    assert result.exit_code != 0
    assert "is not valid JSON" in str(result.exception) or "is not valid JSON" in result.output


def test_doctor_reports_backends_versions_and_health(tmp_path: Path) -> None:
    with FakeOpenAIServer().in_thread() as srv:
        result = runner.invoke(
            app,
            ["--base-url", srv.base_url, "--model", "m", "--embed-backend", "openai", "--embed-base-url",
             srv.base_url, "doctor"],
        )
    assert result.exit_code == 0, result.output
    out = result.output
    assert "openai-compatible" in out and srv.base_url in out
    assert "llama-cpp-python" in out and "embedded model file" in out
    assert "ok  model:policy" in out and "ok  embedding" in out


def test_doctor_fails_when_a_backend_is_down(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMWISE_RETRY_BUDGET", "0.5")
    monkeypatch.setenv("MEMWISE_MAX_RETRIES", "1")
    result = runner.invoke(app, ["--base-url", "http://127.0.0.1:9/v1", "--model", "m", "doctor"])
    assert result.exit_code == 1
    assert "FAIL  model:policy" in result.output

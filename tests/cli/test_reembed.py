"""`memwise reembed`: a memory ingested with one embedding model is searched with another after re-embedding."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from typer.testing import CliRunner

from memwise.cli import app
from memwise.exceptions import ConfigError, StoreError
from memwise.testing import FakeOpenAIServer

runner = CliRunner()
SESSIONS = [
    {"session_id": "s1", "turns": [{"speaker": "user", "content": "I adopted a beagle called Pepper."}]},
    {"session_id": "s2", "turns": [{"speaker": "user", "content": "My sister moved to Lisbon in May."}]},
]


def _embed(url: str, model: str) -> list[str]:
    return ["--embed-backend", "openai", "--embed-base-url", url, "--embed-model", model]


def _spaces(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT space, COUNT(*) FROM vectors GROUP BY space").fetchall())


def test_reembed_moves_a_memory_to_the_new_model(tmp_path: Path) -> None:
    data = tmp_path / "sessions.jsonl"
    data.write_text("".join(json.dumps(s) + "\n" for s in SESSIONS))
    db = tmp_path / "mem.sqlite3"
    with FakeOpenAIServer().in_thread() as srv:
        old, new = _embed(srv.base_url, "e"), _embed(srv.base_url, "e2")
        ingest = runner.invoke(app, [*old, "ingest", "--path", str(data), "--user-id", "u", "--db", str(db)])
        assert ingest.exit_code == 0, ingest.output
        refused = runner.invoke(app, [*new, "search", "beagle", "--user-id", "u", "--db", str(db)])
        assert isinstance(refused.exception, StoreError) and "memwise reembed" in str(refused.exception)

        first = runner.invoke(app, [*new, "reembed", "--db", str(db), "--batch-size", "1"])
        assert first.exit_code == 0, first.output
        assert "re-embed for e2" in first.output and "vectors in e" in first.output
        assert _spaces(db) == {"e": 2, "e2": 2}

        again = runner.invoke(app, [*new, "reembed", "--db", str(db), "--drop-old", "--json"])
        assert again.exit_code == 0, again.output
        report = json.loads(next(line for line in again.stdout.splitlines() if line.startswith("{")))
        assert report["embedded"] == 0 and report["already_present"] == 2 and report["dropped"] == ["e"]
        assert report["spaces_before"] == {"e": 2, "e2": 2} and report["spaces_after"] == {"e2": 2}

        found = runner.invoke(app, [*new, "search", "beagle Pepper", "--user-id", "u", "--db", str(db), "--json"])
        assert found.exit_code == 0, found.output
        assert "beagle called Pepper" in json.loads(found.stdout)[0]["memory"]


def test_reembed_refuses_a_missing_database(tmp_path: Path) -> None:
    result = runner.invoke(app, [*_embed("http://127.0.0.1:9/v1", "e"), "reembed", "--db", str(tmp_path / "nope.db")])
    assert isinstance(result.exception, ConfigError) and "no memory at" in str(result.exception)
    assert not (tmp_path / "nope.db").exists()

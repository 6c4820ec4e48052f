"""`memwise ingest` given bad input: one line on stderr, exit status 1, no traceback, no database left."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from memwise.cli import main

# Server backends on a port nothing listens on: these runs must fail before any model is needed.
OFFLINE = ["--base-url", "http://127.0.0.1:9/v1", "--model", "m"]
OFFLINE += ["--embed-backend", "openai", "--embed-base-url", "http://127.0.0.1:9/v1", "--embed-model", "e"]


def _ingest(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], path: Path, db: Path) -> str:
    monkeypatch.setattr(sys, "argv", ["memwise", *OFFLINE, "ingest", str(path), "--db", str(db)])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert not db.exists()
    return lines[0]


def test_binary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "photo.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 64)
    line = _ingest(monkeypatch, capsys, path, tmp_path / "m.sqlite3")
    assert str(path) in line and "not valid UTF-8 text at byte offset 0 (line 1)" in line


def test_latin1_jsonl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "sessions.jsonl"
    path.write_bytes(b'{"session_id": "s1", "turns": [{"speaker": "a", "content": "caf\xe9"}]}\n')
    line = _ingest(monkeypatch, capsys, path, tmp_path / "m.sqlite3")
    assert f"{path}, record 0: line 1: not valid UTF-8 text at byte offset 63 (line 1): 0xe9" in line


def test_directory_and_missing_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    assert "is a directory; give the path of a file inside it" in _ingest(monkeypatch, capsys, folder, tmp_path / "m")
    missing = tmp_path / "nope.json"
    assert f"not found: {missing} does not exist" in _ingest(monkeypatch, capsys, missing, tmp_path / "m")


def test_line_over_the_record_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "sessions.jsonl"
    path.write_text(json.dumps({"session_id": "s1", "turns": [{"speaker": "a", "content": "x" * 5000}]}) + "\n")
    monkeypatch.setenv("MEMWISE_MAX_RECORD_MB", "0.001")
    line = _ingest(monkeypatch, capsys, path, tmp_path / "m.sqlite3")
    assert "line 1 is longer than 1048 bytes" in line and "MEMWISE_MAX_RECORD_MB" in line

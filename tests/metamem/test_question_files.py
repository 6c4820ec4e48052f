"""MetaMem question files given as bad input: binary or non-UTF-8 bytes, a directory, a missing path."""

from __future__ import annotations

from pathlib import Path

import pytest

from memwise.exceptions import ConfigError, DatasetError
from memwise.metamem.data import load_questions

GOOD = b'{"question_id": "q1", "question": "Who?", "answer": "Ann", "memories": []}\n'


def test_binary_file_names_file_and_byte_offset(tmp_path: Path) -> None:
    path = tmp_path / "questions.jsonl"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 8)
    with pytest.raises(DatasetError, match=r"not valid UTF-8 text at byte offset 0 \(line 1\): 0x89") as info:
        load_questions(path)
    assert info.value.path == str(path)


def test_latin1_answer_is_located_by_offset_and_line(tmp_path: Path) -> None:
    path = tmp_path / "questions.jsonl"
    bad = b'{"question_id": "q2", "question": "Where?", "answer": "Caf\xe9", "memories": []}\n'
    path.write_bytes(GOOD + bad)
    offset = len(GOOD) + bad.index(b"\xe9")
    with pytest.raises(DatasetError, match=rf"byte offset {offset} \(line 2\): 0xe9"):
        load_questions(path)


def test_directory_and_missing_path_say_which(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="question file .* is a directory"):
        load_questions(tmp_path)
    with pytest.raises(ConfigError, match="question file not found: .* does not exist"):
        load_questions(tmp_path / "nope.jsonl")


def test_utf8_bom_is_still_accepted(tmp_path: Path) -> None:
    path = tmp_path / "questions.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD)
    assert [q.answer for q in load_questions(path)] == ["Ann"]

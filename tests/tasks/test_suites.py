"""Suite loading, option shuffling, answer extraction and scoring."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from memwise.exceptions import ConfigError, DatasetError
from memwise.tasks.suites import (
    extract_choice,
    extract_integer,
    extract_span,
    grade,
    load_suite,
    normalize_integer_answer,
    score_answer,
)
from memwise.tasks.suites.gpqa import REQUIRED

# --------------------------------------------------------------------------------------------
# Real shared files


def test_mmlu_real_file(shared_data: Path) -> None:
    tasks = load_suite("mmlu", shared_data / "mmlu" / "mmlu_stem_test.jsonl")
    assert len(tasks) == 3018
    assert {t.answer for t in tasks} <= set("ABCD")
    assert all(len(t.choices) == 4 and t.suite == "mmlu" and t.metadata["subject"] for t in tasks)
    assert len({t.id for t in tasks}) == len(tasks)
    first = tasks[0]
    assert first.text in first.prompt and "\nA) " in first.prompt and "\nD) " in first.prompt
    assert "A)" not in first.text


@pytest.mark.parametrize("name", ["aime24", "aime25"])
def test_aime_real_files(shared_data: Path, name: str) -> None:
    tasks = load_suite("aime", shared_data / "aime" / f"{name}.jsonl")
    assert len(tasks) == 30
    assert all(0 <= int(t.answer) <= 999 and t.answer == str(int(t.answer)) for t in tasks)
    assert tasks[0].id == f"{name}-0" and len({t.id for t in tasks}) == 30
    assert all("Please reason" not in t.text and t.text for t in tasks)


def test_limit_and_unknown_suite(shared_data: Path) -> None:
    path = shared_data / "aime" / "aime24.jsonl"
    assert [t.id for t in load_suite("AIME", path, limit=3)] == ["aime24-0", "aime24-1", "aime24-2"]
    assert load_suite("aime", path, limit=0) == []
    with pytest.raises(ConfigError):
        load_suite("aime", path, limit=-1)
    with pytest.raises(ConfigError, match="unknown suite"):
        load_suite("squad", path)
    with pytest.raises(ConfigError, match="not found"):
        load_suite("mmlu", shared_data / "mmlu" / "nope.jsonl")


# --------------------------------------------------------------------------------------------
# Malformed JSONL


@pytest.mark.parametrize(
    ("suite", "bad"),
    [
        ("mmlu", '{"question": "q", "choices": ["a", "b"], "answer": 2}'),
        ("mmlu", '{"question": "q", "choices": "ab", "answer": 0}'),
        ("mmlu", '{"question": "", "choices": ["a", "b"], "answer": 0}'),
        ("mmlu", '{"question": "q", "choices": ["a", "b"], "answer": true}'),
        ("mmlu", "{not json"),
        ("mmlu", "[1, 2]"),
        ("aime", '{"problem": "p", "answer": "3/4"}'),
        ("aime", '{"problem": "p", "answer": "1000"}'),
        ("aime", '{"answer": "5"}'),
    ],
)
def test_malformed_jsonl_names_file_and_record(tmp_path: Path, suite: str, bad: str) -> None:
    good = {
        "mmlu": '{"question": "q", "type": "x", "choices": ["a", "b", "c", "d"], "answer": 1}',
        "aime": '{"problem": "p", "answer": "005"}',
    }[suite]
    path = tmp_path / "data.jsonl"
    path.write_text(f"{good}\n\n{good}\n{bad}\n", encoding="utf-8")
    with pytest.raises(DatasetError) as info:
        load_suite(suite, path)
    assert info.value.path == str(path) and info.value.index == 2
    assert str(path) in str(info.value) and "record 2" in str(info.value)


def test_aime_answer_forms(tmp_path: Path) -> None:
    path = tmp_path / "aime.jsonl"
    rows = [{"problem": "p", "answer": a, "id": i} for i, a in enumerate(["073", "$\\boxed{12}$", 0, "1,0"])]
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    tasks = load_suite("aime", path)
    assert [t.answer for t in tasks] == ["73", "12", "0", "10"]
    assert tasks[1].id == "aime-1"


# --------------------------------------------------------------------------------------------
# GPQA (official CSV layout)


def _gpqa_row(i: int, record_id: str | None = None) -> dict[str, str]:
    row = {
        "Pre-Revision Question": "old",
        "Question": f"Question {i}?",
        "Correct Answer": f" right {i}\n",
        "Incorrect Answer 1": f"wrong {i}a",
        "Incorrect Answer 2": f"wrong {i}b",
        "Incorrect Answer 3": f"wrong {i}c",
        "Record ID": record_id if record_id is not None else f"rec{i:03d}",
        "High-level domain": "Physics",
        "Subdomain": "Optics",
    }
    return row


def _write_gpqa(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_gpqa_shuffle_is_stable_per_seed_and_tracks_correct(tmp_path: Path) -> None:
    path = _write_gpqa(tmp_path / "gpqa_diamond.csv", [_gpqa_row(i) for i in range(20)])
    a, b = load_suite("gpqa", path, seed=0), load_suite("gpqa", path, seed=0)
    c = load_suite("gpqa", path, seed=1)
    assert [t.choices for t in a] == [t.choices for t in b]
    assert [t.choices for t in a] != [t.choices for t in c]
    assert len({t.answer for t in a}) > 1  # the correct answer is not always in one place
    for i, task in enumerate(a + c):
        i %= 20
        assert task.choices["ABCD".index(task.answer)] == f"right {i}"
        assert sorted(task.choices) == sorted([f"right {i}", f"wrong {i}a", f"wrong {i}b", f"wrong {i}c"])
        assert f"{task.answer}) right {i}" in task.prompt
        assert task.id == f"gpqa-rec{i:03d}" and task.metadata["domain"] == "Physics"
    # the order of a task depends on its record id, not on which other rows the file holds
    alone = load_suite("gpqa", _write_gpqa(tmp_path / "one.csv", [_gpqa_row(7)]), seed=0)
    assert alone[0].choices == a[7].choices


def test_gpqa_without_record_id_uses_index(tmp_path: Path) -> None:
    path = _write_gpqa(tmp_path / "g.csv", [_gpqa_row(i, record_id="") for i in range(3)])
    assert [t.id for t in load_suite("gpqa", path)] == ["gpqa-0", "gpqa-1", "gpqa-2"]


def test_gpqa_malformed(tmp_path: Path) -> None:
    rows = [_gpqa_row(0), _gpqa_row(1)]
    rows[1]["Incorrect Answer 2"] = "  "
    path = _write_gpqa(tmp_path / "bad.csv", rows)
    with pytest.raises(DatasetError) as info:
        load_suite("gpqa", path)
    assert info.value.index == 1 and "Incorrect Answer 2" in str(info.value) and str(path) in str(info.value)
    missing = _write_gpqa(tmp_path / "cols.csv", [{k: v for k, v in _gpqa_row(0).items() if k != "Correct Answer"}])
    with pytest.raises(DatasetError, match="missing GPQA columns"):
        load_suite("gpqa", missing)
    assert "Correct Answer" in REQUIRED


# --------------------------------------------------------------------------------------------
# HotpotQA (official JSON layout)


def _hotpot_record(i: int) -> dict[str, object]:
    return {
        "_id": f"5a8b57f25542995d1e6f{i:04d}",
        "question": f"Were Scott Derrickson and Ed Wood of the same nationality ({i})?",
        "answer": "yes" if i % 2 == 0 else "The United States",
        "type": "comparison",
        "level": "hard",
        "supporting_facts": [["Scott Derrickson", 0], ["Ed Wood", 0]],
        "context": [
            ["Scott Derrickson", ["Scott Derrickson is an American director.", " He lives in LA."]],
            ["Ed Wood", ["Edward Wood Jr. was an American filmmaker."]],
        ],
    }


def test_hotpotqa_load_and_score(tmp_path: Path) -> None:
    path = tmp_path / "hotpot_dev_distractor_v1.json"
    path.write_text(json.dumps([_hotpot_record(i) for i in range(4)]), encoding="utf-8")
    tasks = load_suite("hotpotqa", path, limit=2)
    assert [t.id for t in tasks] == ["5a8b57f25542995d1e6f0000", "5a8b57f25542995d1e6f0001"]
    task = tasks[1]
    assert task.text.startswith("Were Scott") and task.prompt.endswith(f"Question: {task.text}")
    assert "Ed Wood: Edward Wood Jr. was an American filmmaker." in task.prompt
    assert task.metadata["level"] == "hard" and task.metadata["titles"] == ["Scott Derrickson", "Ed Wood"]
    assert score_answer("hotpotqa", "the united states.", task)
    assert not score_answer("hotpotqa", "United States of America", task)
    assert not score_answer("hotpotqa", None, task)
    assert grade("hotpotqa", "Both are American.\nAnswer: The United States", task) == ("The United States", True)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda r: r.pop("answer"),
        lambda r: r.update(question=3),
        lambda r: r.update(context=[["title only"]]),
    ],
)
def test_hotpotqa_malformed(tmp_path: Path, mutate: Callable[[dict[str, object]], object]) -> None:
    records = [_hotpot_record(i) for i in range(3)]
    mutate(records[2])
    path = tmp_path / "hotpot.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    with pytest.raises(DatasetError) as info:
        load_suite("hotpotqa", path)
    assert info.value.index == 2 and info.value.path == str(path)


def test_hotpotqa_not_a_list(tmp_path: Path) -> None:
    path = tmp_path / "hotpot.json"
    path.write_text('{"_id": "x"}', encoding="utf-8")
    with pytest.raises(DatasetError, match="JSON array"):
        load_suite("hotpotqa", path)
    path.write_text("[{", encoding="utf-8")
    with pytest.raises(DatasetError, match="invalid JSON"):
        load_suite("hotpotqa", path)


# --------------------------------------------------------------------------------------------
# Bad input: binary files, directories, over-long lines

BINARY = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 64


@pytest.mark.parametrize("suite", ["mmlu", "aime", "gpqa", "hotpotqa"])
def test_binary_file_names_file_and_byte_offset(tmp_path: Path, suite: str) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(BINARY)
    with pytest.raises(DatasetError, match=r"not valid UTF-8 text at byte offset 0 \(line 1\): 0x89") as info:
        load_suite(suite, path)
    assert info.value.path == str(path)


def test_non_utf8_byte_later_in_a_jsonl_file_is_located(tmp_path: Path) -> None:
    good = b'{"question": "q", "choices": ["a", "b"], "answer": 0}\n'
    path = tmp_path / "mmlu.jsonl"
    path.write_bytes(good * 3 + b'{"question": "caf\xe9", "choices": ["a", "b"], "answer": 0}\n')
    with pytest.raises(DatasetError, match=rf"byte offset {3 * len(good) + 17} \(line 4\): 0xe9"):
        load_suite("mmlu", path)


@pytest.mark.parametrize("suite", ["mmlu", "aime", "gpqa", "hotpotqa"])
def test_directory_given_for_a_file_suite_says_so(tmp_path: Path, suite: str) -> None:
    with pytest.raises(ConfigError, match="is a directory; give the path of a file inside it"):
        load_suite(suite, tmp_path)
    with pytest.raises(ConfigError, match="not found: .* does not exist"):
        load_suite(suite, tmp_path / "missing.jsonl")


def test_alfworld_given_a_file_says_a_directory_is_expected(tmp_path: Path) -> None:
    path = tmp_path / "valid_unseen.json"
    path.write_text("[]", encoding="utf-8")
    with pytest.raises(ConfigError, match="ALFWorld split directory .* is a file, but a directory is expected"):
        load_suite("alfworld", path)
    with pytest.raises(ConfigError, match="ALFWorld split directory not found: .* does not exist"):
        load_suite("alfworld", tmp_path / "nope")


def test_alfworld_binary_game_file_is_a_dataset_error(tmp_path: Path) -> None:
    trial = tmp_path / "valid_unseen" / "pick_and_place_simple-Mug-None-Desk-1" / "trial_A"
    trial.mkdir(parents=True)
    (trial / "game.tw-pddl").write_bytes(BINARY)
    with pytest.raises(DatasetError, match="not valid UTF-8 text at byte offset 0") as info:
        load_suite("alfworld", tmp_path / "valid_unseen")
    assert info.value.path == str(trial / "game.tw-pddl")


def test_jsonl_line_over_the_record_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "mmlu.jsonl"
    path.write_text(json.dumps({"question": "q" * 3000, "choices": ["a", "b"], "answer": 0}) + "\n", encoding="utf-8")
    monkeypatch.setenv("MEMWISE_MAX_RECORD_MB", "0.001")
    with pytest.raises(DatasetError, match="line 1 is longer than 1048 bytes.*MEMWISE_MAX_RECORD_MB"):
        load_suite("mmlu", path)
    monkeypatch.delenv("MEMWISE_MAX_RECORD_MB")
    assert len(load_suite("mmlu", path)) == 1


# --------------------------------------------------------------------------------------------
# Answer extraction


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Answer: C", "C"),
        ("I think B is tempting. However, the answer is (C).", "C"),
        ("The final answer is **D**.", "D"),
        ("Reasoning...\n**B**", "B"),
        ("Long reasoning about option A.\n\n(A)", "A"),
        ("Reasoning.\nC", "C"),
        ("Answer: A\nWait, re-checking. Answer: B", "B"),
        ("The correct option is D) because...", "D"),
        ("\\boxed{\\text{C}}", "C"),
        ("The answer is a function of x.", None),
        ("Answer: Carbon dioxide", None),
        ("Option B is wrong and option A is wrong.", None),
        ("Answer: E", None),  # only A-D in a four-option question
        ("", None),
        ("I am not sure.", None),
    ],
)
def test_extract_choice(text: str, expected: str | None) -> None:
    assert extract_choice(text) == expected


def test_extract_choice_more_options() -> None:
    assert extract_choice("Answer: E", n_choices=5) == "E"
    with pytest.raises(ValueError):
        extract_choice("A", n_choices=0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so the result is \\boxed{204}.", "204"),
        ("first \\boxed{12}, then corrected: $\\boxed{073}$", "73"),
        ("\\boxed{\\text{113}}", "113"),
        ("\\boxed{\\frac{1}{2}}", None),
        ("Thus m+n = 25. The answer is 25.", "25"),
        ("Final answer: 1,000", "1000"),
        ("answer is 3/4", None),
        ("No idea.", None),
        ("\\boxed{", None),
    ],
)
def test_extract_integer(text: str, expected: str | None) -> None:
    assert extract_integer(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Both are American.\nAnswer: yes", "yes"),
        ("Answer: no\nHmm.\nFinal Answer: **Paris**\n", "Paris"),
        ("answer:\nThe Eiffel Tower", "The Eiffel Tower"),
        ("Some reasoning.\n\nLondon\n", "London"),
        ("   \n", None),
    ],
)
def test_extract_span(text: str, expected: str | None) -> None:
    assert extract_span(text) == expected


def test_normalize_integer_answer() -> None:
    assert normalize_integer_answer(" 007 ") == "7"
    assert normalize_integer_answer("12.0") == "12"
    assert normalize_integer_answer(True) is None
    assert normalize_integer_answer(None) is None


def test_score_and_grade_choices_and_integers(shared_data: Path) -> None:
    mmlu = load_suite("mmlu", shared_data / "mmlu" / "mmlu_stem_test.jsonl", limit=1)[0]
    assert mmlu.answer == "C"
    assert score_answer("mmlu", "(c)", mmlu) and not score_answer("mmlu", "B", mmlu)
    assert grade("mmlu", "Hmm.\nAnswer: C", mmlu) == ("C", True)
    assert grade("mmlu", "no idea", mmlu) == (None, False)
    aime = load_suite("aime", shared_data / "aime" / "aime24.jsonl", limit=1)[0]
    assert score_answer("aime", "0204", aime) and not score_answer("aime", "205", aime)
    assert grade("aime", "... \\boxed{204}", aime) == ("204", True)
    with pytest.raises(ConfigError):
        score_answer("nope", "A", mmlu)


# --------------------------------------------------------------------------------------------
# HLE (official record layout, built here in miniature)

HLE = [
    {"id": "a1", "question": "What is the capital of France?", "image": "", "answer": "Paris",
     "answer_type": "exactMatch", "category": "Other"},
    {"id": "b2", "question": "Which is a noble gas?\n\nAnswer Choices:\nA. Oxygen\nB. Argon\nC. Iron",
     "image": "", "answer": "B", "answer_type": "multipleChoice", "category": "Chemistry"},
    {"id": "c3", "question": "What does the figure show?", "image": "data:image/png;base64,AAAA", "answer": "a cat",
     "answer_type": "exactMatch", "category": "Other"},
]  # fmt: skip


@pytest.mark.parametrize("ext", ["jsonl", "json", "parquet"])
def test_hle_keeps_text_records_and_counts_skipped_images(tmp_path: Path, ext: str) -> None:
    from memwise.tasks.suites import read_hle

    path = tmp_path / f"hle.{ext}"
    if ext == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in HLE))
    elif ext == "json":
        path.write_text(json.dumps(HLE))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(HLE), path)
    loaded = read_hle(path)
    assert loaded.skipped_images == 1
    assert [t.id for t in loaded.tasks] == ["hle-a1", "hle-b2"]
    mc = loaded.tasks[1]
    assert mc.choices == ("Oxygen", "Argon", "Iron") and mc.answer == "B"
    assert [t.id for t in load_suite("hle", path)] == ["hle-a1", "hle-b2"]
    assert grade("hle", "Paris is the capital.\nAnswer: paris", loaded.tasks[0]) == ("paris", True)
    assert grade("hle", "Argon is inert, so \\boxed{B}", mc) == ("B", True)
    assert grade("hle", "Answer: C", mc) == ("C", False)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r.update(answer_type="freeform"), "answer_type"),
        (lambda r: r.pop("question"), "'question'"),
        (lambda r: r.update(answer_type="multipleChoice", answer="Argon"), "option letter"),
    ],
)
def test_hle_malformed_record_names_file_and_record(
    tmp_path: Path, mutate: Callable[[dict[str, object]], object], message: str
) -> None:
    records = [dict(r) for r in HLE]
    mutate(records[1])
    path = tmp_path / "hle.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(DatasetError, match=message) as info:
        load_suite("hle", path)
    assert info.value.path == str(path) and info.value.index == 1

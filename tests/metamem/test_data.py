"""MetaMem question files: our field names and the reference's, and every way a gold answer can go missing."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from memwise.exceptions import ConfigError, DatasetError
from memwise.metamem.data import MetaQuestion, load_questions, save_questions

OURS: dict[str, Any] = {
    "question_id": "q1",
    "question": "Where did I move last month?",
    "answer": "Lisbon",
    "question_type": "knowledge-update",
    "question_date": "2023/06/01 (Thu) 10:00",
    "memories": [
        "2023-05-02 09:00 Tuesday user: I moved to Lisbon.",
        "2023-01-03 10:00 Tuesday user: I live in Porto.",
    ],
}
REFERENCE: dict[str, Any] = {
    "question_id": "q2",
    "problem": "How many days ago did I adopt the dog?",
    "groundtruth": 3,
    "task": "temporal-reasoning",
    "related_memories": "2023-05-28 08:00 Sunday user: I adopted a dog.\n\n2023-05-29 08:00 Monday user: Walked it.\n",
}


def _jsonl(tmp_path: Path, *records: Any, name: str = "q.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _error(tmp_path: Path, *records: Any) -> DatasetError:
    path = _jsonl(tmp_path, *records)
    with pytest.raises(DatasetError) as caught:
        load_questions(path)
    assert caught.value.path == str(path)
    return caught.value


def test_our_field_names_load_with_date_text_and_parsed_date(tmp_path: Path) -> None:
    (q,) = load_questions(_jsonl(tmp_path, OURS))
    assert (q.question_id, q.answer, q.question_type) == ("q1", "Lisbon", "knowledge-update")
    assert q.question_date == "2023/06/01 (Thu) 10:00"
    assert q.question_datetime == datetime(2023, 6, 1, 10, 0)
    assert q.memories == tuple(OURS["memories"])
    assert q.metadata == {}


def test_reference_field_names_load_and_numeric_gold_becomes_text(tmp_path: Path) -> None:
    (q,) = load_questions(_jsonl(tmp_path, REFERENCE))
    assert q.question == REFERENCE["problem"]
    assert q.answer == "3"
    assert q.question_type == "temporal-reasoning"
    # One fragment a line; blank lines are not fragments.
    assert q.memories == ("2023-05-28 08:00 Sunday user: I adopted a dog.", "2023-05-29 08:00 Monday user: Walked it.")
    assert q.question_date is None and q.question_datetime is None


def test_memories_as_one_string_or_a_list_read_the_same(tmp_path: Path) -> None:
    as_list = {**OURS, "question_id": "a"}
    as_string = {**OURS, "question_id": "b", "memories": "\n".join(OURS["memories"])}
    first, second = load_questions(_jsonl(tmp_path, as_list, as_string))
    assert first.memories == second.memories == tuple(OURS["memories"])


def test_both_spellings_that_agree_are_accepted(tmp_path: Path) -> None:
    record = {**OURS, "groundtruth": "Lisbon", "problem": OURS["question"], "task": "knowledge_update"}
    (q,) = load_questions(_jsonl(tmp_path, record))
    assert q.answer == "Lisbon"


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"groundtruth": "Porto"}, "groundtruth"),
        ({"problem": "Something else?"}, "problem"),
        ({"task": "multi-session"}, "task"),
        ({"related_memories": ["another fragment"]}, "related_memories"),
    ],
)
def test_conflicting_spellings_are_an_error(tmp_path: Path, extra: dict[str, Any], field: str) -> None:
    err = _error(tmp_path, {**OURS, "question_id": "ok", "question_type": "multi-session"}, {**OURS, **extra})
    assert err.index == 1
    assert field in str(err) and "disagrees" in str(err)


@pytest.mark.parametrize("gold", ["missing", None, "", "   "])
def test_a_missing_or_blank_gold_answer_is_an_error_naming_file_record_and_field(tmp_path: Path, gold: Any) -> None:
    broken = {k: v for k, v in OURS.items() if k != "answer"}
    if gold != "missing":
        broken["answer"] = gold
    err = _error(tmp_path, {**OURS, "question_id": "fine"}, broken)
    assert err.index == 1
    assert "'answer'" in str(err)
    assert "q.jsonl, record 1" in str(err)
    if gold == "missing" or gold is None:
        assert "'groundtruth'" in str(err)  # the message lists every accepted spelling


def test_reference_record_without_groundtruth_is_an_error_too(tmp_path: Path) -> None:
    broken = {k: v for k, v in REFERENCE.items() if k != "groundtruth"}
    err = _error(tmp_path, broken)
    assert err.index == 0 and "gold answer" in str(err)


def test_missing_memories_field_is_an_error_but_an_empty_list_is_not(tmp_path: Path) -> None:
    err = _error(tmp_path, {k: v for k, v in OURS.items() if k != "memories"})
    assert "memories" in str(err)
    (q,) = load_questions(_jsonl(tmp_path, {**OURS, "memories": []}, name="empty.jsonl"))
    assert q.memories == ()


def test_question_type_defaults_to_generic_only_when_absent_and_says_so(tmp_path: Path) -> None:
    absent = {k: v for k, v in OURS.items() if k != "question_type"}
    locomo = {**OURS, "question_id": "q9", "question_type": "2"}
    untyped, temporal = load_questions(_jsonl(tmp_path, absent, locomo))
    assert untyped.question_type == "generic" and untyped.metadata["question_type_defaulted"] is True
    assert temporal.question_type == "temporal" and "question_type_defaulted" not in temporal.metadata
    err = _error(tmp_path, {**OURS, "question_type": "temporal-reasonning"})
    assert "question_type" in str(err)


def test_duplicate_question_ids_are_an_error(tmp_path: Path) -> None:
    err = _error(tmp_path, OURS, {**OURS, "question": "Same id, different question?"})
    assert err.index == 1 and "duplicate question_id 'q1'" in str(err)


def test_json_list_and_questions_object_and_jsonl_read_alike(tmp_path: Path) -> None:
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps([OURS, REFERENCE], indent=2))
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"questions": [OURS, REFERENCE]}, indent=2))
    lines = _jsonl(tmp_path, OURS, REFERENCE)
    assert load_questions(listed) == load_questions(wrapped) == load_questions(lines)
    assert len(load_questions(lines)) == 2


def test_jsonl_errors_report_the_physical_line(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps(OURS) + "\n\n{not json\n")
    with pytest.raises(DatasetError, match="line 3") as caught:
        load_questions(path)
    assert caught.value.index == 2


def test_unknown_keys_are_kept_in_metadata(tmp_path: Path) -> None:
    (q,) = load_questions(_jsonl(tmp_path, {**OURS, "haystack": "s", "metadata": {"fold": 1}}))
    assert q.metadata == {"fold": 1, "haystack": "s"}
    err = _error(tmp_path, {**OURS, "fold": 2, "metadata": {"fold": 1}})
    assert "fold" in str(err)


def test_unparsable_question_date_keeps_its_text() -> None:
    q = MetaQuestion("q", "?", "a", "generic", question_date="the day after the party")
    assert q.question_date == "the day after the party" and q.question_datetime is None
    locomo = MetaQuestion("q", "?", "a", "generic", question_date="6:46 pm on 23 July, 2023")
    assert locomo.question_datetime == datetime(2023, 7, 23, 18, 46)


def test_save_then_load_round_trips_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    questions = load_questions(_jsonl(tmp_path, OURS, REFERENCE, {**OURS, "question_id": "q3", "question_date": None}))
    out = save_questions(tmp_path / "out" / "questions.jsonl", questions)
    assert load_questions(out) == questions
    assert sorted(p.name for p in out.parent.iterdir()) == ["questions.jsonl"]


def test_failed_save_keeps_the_old_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "questions.jsonl"
    good = [MetaQuestion("q1", "?", "a", "generic")]
    save_questions(target, good)
    before = target.read_text()
    unserialisable = [*good, MetaQuestion("q2", "?", "a", "generic", metadata={"when": datetime(2023, 1, 1)})]
    with pytest.raises(TypeError):
        save_questions(target, unserialisable)
    with pytest.raises(DatasetError, match="duplicate"):
        save_questions(target, [*good, *good])
    assert target.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["questions.jsonl"]


def test_missing_file_and_empty_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_questions(tmp_path / "nope.jsonl")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DatasetError, match="empty file"):
        load_questions(empty)
    listed = tmp_path / "none.json"
    listed.write_text("[]")
    assert load_questions(listed) == []

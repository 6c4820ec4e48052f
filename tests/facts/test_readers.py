"""Readers: the real LoCoMo dev file, small LongMemEval/JSONL files written here, and malformed inputs."""

from __future__ import annotations

import io
import json
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from memwise.exceptions import ConfigError, DatasetError
from memwise.facts.readers import (
    detect_format,
    iter_conversations,
    iter_locomo,
    iter_longmemeval,
    iter_sessions_jsonl,
    normalise_evidence,
    parse_datetime,
    read_conversations,
    read_locomo,
    read_longmemeval,
    read_sessions_jsonl,
)
from memwise.facts.readers._jsonstream import iter_json_array
from memwise.facts.types import Conversation

# ---------------------------------------------------------------- the real LoCoMo dev file


@pytest.fixture(scope="module")
def locomo_dev(shared_data: Path) -> Path:
    return shared_data / "locomo" / "locomo10_dev.json"


@pytest.fixture(scope="module")
def dev(locomo_dev: Path) -> list[Conversation]:
    return read_locomo(locomo_dev)


def test_real_file_counts(dev: list[Conversation]) -> None:
    assert [c.id for c in dev] == ["conv-26", "conv-30", "conv-41", "conv-42", "conv-43"]
    assert sum(len(c.sessions) for c in dev) == 128
    assert sum(len(c.turns()) for c in dev) == 2760
    categories = Counter(q.category for c in dev for q in c.questions)
    assert categories == {"1": 142, "2": 156, "3": 46, "4": 418, "5": 237}
    assert sum(n for cat, n in categories.items() if cat != "5") == 762
    assert dev[0].speakers == ("Caroline", "Melanie")
    assert dev[0].questions[0].id == "conv-26:q0"


def test_real_file_evidence_resolves_or_is_counted(dev: list[Conversation]) -> None:
    unresolved = {}
    for conv in dev:
        turn_ids = {t.id for t in conv.turns()}
        for q in conv.questions:
            assert set(q.evidence) <= turn_ids, q.id
            if "unresolved_evidence" in q.metadata:
                unresolved[q.id] = q.metadata["unresolved_evidence"]
    # "D10:19" points past a 16-turn session; "D" is a bare letter.
    assert unresolved == {"conv-42:q58": ("D10:19",), "conv-42:q88": ("D",)}
    assert [c.metadata["unresolved_evidence_count"] for c in dev] == [0, 0, 0, 2, 0]
    by_id = {q.id: q for c in dev for q in c.questions}
    assert by_id["conv-26:q37"].evidence == ("D8:6", "D9:17")  # stored as "D8:6; D9:17"
    assert "D11:26" in by_id["conv-43:q18"].evidence  # stored as "D:11:26"
    assert sum(1 for q in by_id.values() if q.category == "3" and not q.evidence) == 2


def test_real_file_dates(dev: list[Conversation]) -> None:
    first = dev[0].sessions[0]
    assert first.raw_timestamp == "1:56 pm on 8 May, 2023"
    assert first.timestamp == datetime(2023, 5, 8, 13, 56)
    for conv in dev:
        stamps = [s.timestamp for s in conv.sessions]
        assert None not in stamps and stamps == sorted(stamps)  # type: ignore[type-var]
        assert all(t.timestamp == s.timestamp for s in conv.sessions for t in s.turns)
    # conv-26 lists dates for sessions 20-35 that have no turns.
    assert [c.metadata["unused_session_dates"] for c in dev] == [16, 0, 0, 0, 0]


def test_real_file_answers(dev: list[Conversation]) -> None:
    by_id = {q.id: q for c in dev for q in c.questions}
    assert by_id["conv-26:q1"].answer == "2022"  # a JSON number in the file
    both = by_id["conv-26:q167"]  # has answer "No" and adversarial_answer "Yes"
    assert (both.answer, both.metadata["adversarial_answer"], both.metadata["adversarial"]) == ("No", "Yes", True)
    for q in by_id.values():
        assert isinstance(q.answer, str) and q.answer
        assert q.metadata["adversarial"] == (q.category == "5")
        assert q.question_date is None


def test_real_file_photos(dev: list[Conversation], locomo_dev: Path) -> None:
    turn = dev[0].sessions[0].turns[4]
    assert turn.id == "D1:5" and turn.index == 4 and turn.session_id == "session_1"
    assert turn.text.endswith("[shares a photo: a photo of a dog walking past a wall with a painting of a woman]")
    assert (
        turn.metadata["raw_text"]
        == "The transgender stories were so inspiring! I was so happy and thankful for all the support."
    )
    assert turn.metadata["img_url"] == ["https://i.redd.it/l7hozpetnhlb1.jpg"]
    assert sum(1 for c in dev for t in c.turns() if "blip_caption" in t.metadata) == 602
    bare = next(iter_locomo(locomo_dev, render_photos=False))
    assert bare.sessions[0].turns[4].text == turn.metadata["raw_text"]


def test_real_file_streams_same_as_read(dev: list[Conversation], locomo_dev: Path) -> None:
    with iter_locomo(locomo_dev, chunk_size=512) as stream:
        assert list(stream) == dev
    assert detect_format(locomo_dev) == "locomo"


# ---------------------------------------------------------------- LoCoMo built here, and malformed


def locomo_sample(sample_id: str, **overrides: Any) -> dict[str, Any]:
    sample: dict[str, Any] = {
        "sample_id": sample_id,
        "conversation": {
            "speaker_a": "Ann",
            "speaker_b": "Bob",
            "session_1_date_time": "9:05 am on 2 March, 2023",
            "session_1": [
                {"speaker": "Ann", "dia_id": "D1:1", "text": "I got a puppy."},
                {"speaker": "Bob", "dia_id": "D1:2", "text": "Nice!"},
            ],
        },
        "qa": [
            {"question": "What did Ann get?", "answer": "a puppy", "evidence": ["D1:1"], "category": 4},
            {"question": "What did Bob get?", "adversarial_answer": "a puppy", "evidence": [], "category": 5},
        ],
    }
    sample.update(overrides)
    return sample


def write_json(path: Path, records: Any) -> Path:
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def test_locomo_small_file(tmp_path: Path) -> None:
    path = write_json(tmp_path / "lc.json", [locomo_sample("a")])
    [conv] = read_locomo(path)
    assert conv.sessions[0].timestamp == datetime(2023, 3, 2, 9, 5)
    adversarial = conv.questions[1]
    assert (adversarial.id, adversarial.answer, adversarial.metadata["adversarial"]) == ("a:q1", "a puppy", True)
    assert read_locomo(write_json(tmp_path / "empty.json", [])) == []


def broken_samples() -> list[tuple[str, Any, str]]:
    no_speaker = locomo_sample("x")
    del no_speaker["conversation"]["session_1"][0]["speaker"]
    int_text = locomo_sample("x")
    int_text["conversation"]["session_1"][1]["text"] = 42
    bad_date = locomo_sample("x")
    bad_date["conversation"]["session_1_date_time"] = "sometime in spring"
    no_date = locomo_sample("x")
    del no_date["conversation"]["session_1_date_time"]
    bad_category = locomo_sample("x")
    bad_category["qa"][0]["category"] = "4"
    no_answer = locomo_sample("x")
    del no_answer["qa"][1]["adversarial_answer"]
    dup = locomo_sample("x")
    dup["conversation"]["session_1"][1]["dia_id"] = "D1:1"
    return [
        ("missing field", no_speaker, "conversation.session_1[0].speaker: missing required field"),
        ("wrong type", int_text, "conversation.session_1[1].text: expected a string, got int"),
        ("bad date", bad_date, "'sometime in spring'"),
        ("missing date", no_date, "conversation.session_1_date_time: missing"),
        ("bad category", bad_category, "qa[0].category"),
        ("no answer", no_answer, "qa[1]: missing required field"),
        ("duplicate dia_id", dup, "duplicate dia_id 'D1:1'"),
        ("no sample id", {"conversation": {}, "qa": []}, "sample_id: missing required field"),
        ("not an object", [1, 2], "record: expected an object, got list"),
    ]


@pytest.mark.parametrize(("case", "bad", "fragment"), broken_samples(), ids=[c[0] for c in broken_samples()])
def test_locomo_malformed_record_names_file_index_and_field(tmp_path: Path, case: str, bad: Any, fragment: str) -> None:
    path = write_json(tmp_path / "lc.json", [locomo_sample("good"), bad])
    with pytest.raises(DatasetError) as info:
        read_locomo(path)
    assert info.value.path == str(path) and info.value.index == 1
    assert str(path) in str(info.value) and "record 1" in str(info.value)
    assert fragment in str(info.value)


def test_streaming_yields_good_records_before_raising(tmp_path: Path) -> None:
    good, bad = locomo_sample("g1"), locomo_sample("bad", qa="oops")
    path = write_json(tmp_path / "lc.json", [good, locomo_sample("g2"), bad, locomo_sample("g3")])
    stream = iter_locomo(path)
    assert [next(stream).id, next(stream).id] == ["g1", "g2"]
    with pytest.raises(DatasetError, match=r"record 2: 'bad': qa: expected a list"):
        next(stream)
    assert list(stream) == []  # a failed stream stays finished


def test_collect_mode_skips_and_keeps_errors(tmp_path: Path) -> None:
    samples = [locomo_sample("g1"), locomo_sample("b1", qa=None), locomo_sample("g2"), 7, locomo_sample("g3")]
    with iter_locomo(write_json(tmp_path / "lc.json", samples), errors="collect") as stream:
        assert [c.id for c in stream] == ["g1", "g2", "g3"]
    assert stream.skipped == 2 and [e.index for e in stream.errors] == [1, 3]


def test_truncated_json(tmp_path: Path) -> None:
    text = json.dumps([locomo_sample("g1"), locomo_sample("g2")])
    path = tmp_path / "cut.json"
    path.write_text(text[: len(text) - 40], encoding="utf-8")
    stream = iter_locomo(path, chunk_size=64)
    assert next(stream).id == "g1"
    with pytest.raises(DatasetError, match=r"record 1: invalid or truncated JSON") as info:
        next(stream)
    assert info.value.path == str(path)
    collected = iter_locomo(path, errors="collect")
    assert [c.id for c in collected] == ["g1"] and len(collected.errors) == 1


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty file"),
        ('{"a": 1}', "expected a JSON array"),
        ("[1, 2", "ends without ']'"),
        ("[1 2]", "expected ',' or ']'"),
        ("[1] x", "unexpected data after"),
        ("[1,]", "invalid or truncated JSON"),
    ],
)
def test_json_array_framing_errors(text: str, fragment: str) -> None:
    with pytest.raises(DatasetError, match=fragment):
        list(iter_json_array(io.StringIO(text), path="mem.json", chunk_size=2))


def test_json_array_decodes_across_tiny_chunks() -> None:
    text = ' [ 1 , 23 ,456, "a,]b", {"k": [1, {"z": null}]} , -7.5e3 ]  \n'
    items = [value for _, value in iter_json_array(io.StringIO(text), path="mem.json", chunk_size=1)]
    assert items == [1, 23, 456, "a,]b", {"k": [1, {"z": None}]}, -7.5e3]


def test_json_array_reads_only_as_far_as_it_needs() -> None:
    record = json.dumps({"text": "x" * 1000})
    handle = io.StringIO("[" + ",".join([record] * 1000) + "]")
    records = iter_json_array(handle, path="big.json", chunk_size=4096)
    next(records)
    assert handle.tell() <= 8192  # of about a megabyte
    assert sum(1 for _ in records) == 999


# ---------------------------------------------------------------- LongMemEval


def lme_question(question_id: str, **overrides: Any) -> dict[str, Any]:
    question: dict[str, Any] = {
        "question_id": question_id,
        "question_type": "single-session-user",
        "question": "What breed is my dog?",
        "answer": "a beagle",
        "question_date": "2023/05/30 (Tue) 23:40",
        "haystack_dates": ["2023/05/20 (Sat) 02:21", "2023/05/21 (Sun) 10:00"],
        "haystack_session_ids": ["filler_1", "answer_1"],
        "haystack_sessions": [
            [{"role": "user", "content": "Tell me a joke."}, {"role": "assistant", "content": "No."}],
            [
                {"role": "user", "content": "My beagle is sick.", "has_answer": True},
                {"role": "assistant", "content": "Sorry to hear."},
            ],
        ],
        "answer_session_ids": ["answer_1"],
    }
    question.update(overrides)
    return question


def test_longmemeval_reader(tmp_path: Path) -> None:
    no_marks = lme_question("q2_abs", answer=3)
    for turn in no_marks["haystack_sessions"][1]:
        turn.pop("has_answer", None)
    repeated = lme_question("q3", haystack_session_ids=["answer_1", "answer_1"])
    path = write_json(tmp_path / "lme.json", [lme_question("q1"), no_marks, repeated])
    first, abstain, dup = read_longmemeval(path)

    assert first.id == "q1" and first.speakers == ("user", "assistant")
    assert first.sessions[1].timestamp == datetime(2023, 5, 21, 10, 0)
    assert first.sessions[1].turns[0].metadata == {"has_answer": True}
    [q] = first.questions
    assert (q.id, q.category, q.answer, q.evidence) == ("q1", "single-session-user", "a beagle", ("answer_1:0",))
    assert q.question_date == datetime(2023, 5, 30, 23, 40)
    assert q.metadata == {"abstention": False, "answer_session_ids": ("answer_1",), "evidence_source": "has_answer"}

    [q] = abstain.questions
    assert q.answer == "3" and q.metadata["abstention"] is True
    assert (q.evidence, q.metadata["evidence_source"]) == (("answer_1:0", "answer_1:1"), "answer_sessions")

    assert [s.id for s in dup.sessions] == ["answer_1", "answer_1#2"]
    assert dup.metadata["duplicate_session_ids"] == ("answer_1",)
    assert dup.sessions[1].turns[0].id == "answer_1#2:0"

    assert detect_format(path) == "longmemeval"
    assert read_conversations(path) == [first, abstain, dup]


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ({"question_date": "30th of May"}, "question_date: unparsable date '30th of May'"),
        ({"haystack_dates": ["2023/05/20 (Sat) 02:21"]}, "parallel lists differ in length"),
        ({"answer": None}, "answer: missing required field"),
        ({"haystack_sessions": [[], [{"role": "user"}]]}, "haystack_sessions[1][0].content: missing"),
        ({"haystack_sessions": [[], [{"role": "user", "content": "x", "has_answer": "yes"}]]}, "has_answer"),
    ],
)
def test_longmemeval_malformed(tmp_path: Path, override: dict[str, Any], fragment: str) -> None:
    path = write_json(tmp_path / "lme.json", [lme_question("ok"), lme_question("broken", **override)])
    stream = iter_longmemeval(path)
    assert next(stream).id == "ok"
    with pytest.raises(DatasetError) as info:
        next(stream)
    assert info.value.index == 1 and str(path) in str(info.value) and "'broken'" in str(info.value)
    assert fragment in str(info.value)


# ---------------------------------------------------------------- JSONL sessions


def write_lines(path: Path, lines: list[Any]) -> Path:
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    return path


def session(session_id: str, **extra: Any) -> dict[str, Any]:
    turns = [{"speaker": "alice", "content": f"hello from {session_id}"}, {"role": "bot", "text": "hi"}]
    return {"session_id": session_id, "timestamp": "2024-03-01T09:00:00", "turns": turns, **extra}


def test_jsonl_grouping(tmp_path: Path) -> None:
    own_time = session("s4")
    own_time["turns"][0]["timestamp"] = "2024-03-02T10:30:00+01:00"
    own_time["turns"][0]["mood"] = "happy"
    lines = [
        session("s1", conversation_id="c1", user_id="u1"),
        "",
        session("s2", conversation_id="c1"),
        session("s3", timestamp=None),
        own_time | {"user_id": "u9"},
        session("s5", user_id="u9"),
    ]
    path = write_lines(tmp_path / "log.jsonl", lines)
    c1, alone, u9 = read_sessions_jsonl(path)
    assert (c1.id, [s.id for s in c1.sessions], c1.metadata["user_id"]) == ("c1", ["s1", "s2"], "u1")
    assert c1.speakers == ("alice", "bot") and c1.sessions[1].turns[1].id == "s2:1"
    assert c1.sessions[0].timestamp == datetime(2024, 3, 1, 9, 0)
    assert (alone.id, alone.sessions[0].timestamp, alone.metadata["first_line"]) == ("s3", None, 3)
    first_turn = u9.sessions[0].turns[0]
    assert first_turn.timestamp == datetime(2024, 3, 2, 10, 30, tzinfo=timezone(timedelta(hours=1)))
    assert first_turn.metadata == {"mood": "happy"} and u9.sessions[0].turns[1].timestamp == datetime(2024, 3, 1, 9)
    assert detect_format(path) == "jsonl"
    assert read_conversations(path, "jsonl") == [c1, alone, u9]


@pytest.mark.parametrize(
    ("bad_line", "fragment"),
    [
        ("[1, 2]", "line: expected an object, got list"),
        ('{"session_id": "s9", "turns": [', "invalid JSON"),
        (session("s9", conversation_id="c1", timestamp="soon"), "unparsable date 'soon'"),
        (
            {"conversation_id": "c1", "session_id": "s9", "turns": [{"speaker": "a"}]},
            "turns[0]: missing required field: 'content' or 'text'",
        ),
        ({"conversation_id": "c1", "session_id": "s9", "turns": "hi"}, "turns: expected a list, got str"),
        ({"conversation_id": "c1", "turns": []}, "session_id: missing required field"),
        (session("s1", conversation_id="c1"), "duplicate session_id 's1'"),
        (session("s9", conversation_id="c1", user_id="other"), "'other' differs from 'u1'"),
    ],
)
def test_jsonl_malformed(tmp_path: Path, bad_line: Any, fragment: str) -> None:
    lines = [session("s0"), session("s1", conversation_id="c1", user_id="u1"), bad_line, session("s8")]
    path = write_lines(tmp_path / "log.jsonl", lines)
    stream = iter_sessions_jsonl(path)
    assert next(stream).id == "s0"  # c1 is still open when the bad line comes, so nothing more is yielded
    with pytest.raises(DatasetError) as info:
        next(stream)
    assert info.value.index == 2 and f"{path}, record 2: line 3" in str(info.value)
    assert fragment in str(info.value)


def test_jsonl_collect_mode_drops_bad_conversation_and_line(tmp_path: Path) -> None:
    lines = [
        session("s1", conversation_id="c1"),
        session("s2", conversation_id="c1", timestamp="never"),
        "not json",
        session("s3", conversation_id="c2"),
        session("s4", conversation_id="c1"),  # c1 resumes after c2
    ]
    with iter_conversations(write_lines(tmp_path / "log.jsonl", lines), errors="collect") as stream:
        assert [c.id for c in stream] == ["c2"]
    messages = [str(e) for e in stream.errors]
    assert [e.index for e in stream.errors] == [1, 2, 4]
    assert "(conversation 'c1' skipped)" in messages[0] and "resumes after other lines" in messages[2]


# ---------------------------------------------------------------- dates, sniffing, misuse


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1:56 pm on 8 May, 2023", datetime(2023, 5, 8, 13, 56)),
        ("12:28 am on 8 November, 2023", datetime(2023, 11, 8, 0, 28)),
        ("12:05 PM on 3 Sept 2022", datetime(2022, 9, 3, 12, 5)),
        ("2023/05/30 (Tue) 23:40", datetime(2023, 5, 30, 23, 40)),
        ("2023/5/3", datetime(2023, 5, 3)),
        (" 2024-03-01T09:00:00 ", datetime(2024, 3, 1, 9, 0)),
        ("2024-03-01T09:00:00Z", datetime(2024, 3, 1, 9, 0, tzinfo=UTC)),
    ],
)
def test_parse_datetime(text: str, expected: datetime) -> None:
    assert parse_datetime(text) == expected


@pytest.mark.parametrize(
    "text", ["13:00 pm on 8 May, 2023", "1:56 pm on 8 Smarch, 2023", "2023/02/30 (Thu) 10:00", "yesterday", ""]
)
def test_parse_datetime_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="unparsable date"):
        parse_datetime(text)


def test_normalise_evidence() -> None:
    assert normalise_evidence(["D8:6; D9:17", " D:11:26 ", "d02:03", "D1:1", "D"]) == [
        "D8:6",
        "D9:17",
        "D11:26",
        "D2:3",
        "D1:1",
        "D",
    ]


def test_detect_format_and_misuse(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="unrecognised format"):
        detect_format(write_json(tmp_path / "other.json", [{"problem": "1+1"}]))
    with pytest.raises(DatasetError, match="empty file"):
        detect_format(write_lines(tmp_path / "blank.jsonl", ["  "]))
    with pytest.raises(ConfigError, match="not found"):
        iter_locomo(tmp_path / "missing.json")
    with pytest.raises(ConfigError, match="errors must be"):
        iter_sessions_jsonl(write_lines(tmp_path / "x.jsonl", [session("s")]), errors="ignore")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown dataset format"):
        iter_conversations(tmp_path / "x.jsonl", "csv")  # type: ignore[arg-type]


# ---------------------------------------------------------------- bad bytes, wrong paths, size limits

ALL_READERS = [iter_locomo, iter_longmemeval, iter_sessions_jsonl, iter_conversations]
PNG_HEAD = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"


@pytest.mark.parametrize("reader", ALL_READERS, ids=lambda f: f.__name__)
def test_binary_file_is_a_dataset_error_naming_file_and_byte(tmp_path: Path, reader: Any) -> None:
    path = tmp_path / "photo.png"
    path.write_bytes(PNG_HEAD * 100)
    with pytest.raises(DatasetError) as info:
        list(reader(path))
    assert info.value.path == str(path)
    assert "not valid UTF-8 text at byte offset 0 (line 1): 0x89" in str(info.value)


def test_latin1_byte_in_a_json_array_is_located(tmp_path: Path) -> None:
    good = json.dumps([lme_question("q1"), lme_question("q2", question="Where is caf\u00e9 X?")], ensure_ascii=False)
    data = good.encode("utf-8").replace("caf\u00e9".encode(), b"caf\xe9")
    path = tmp_path / "latin1.json"
    path.write_bytes(data)
    offset = data.index(b"\xe9")
    with pytest.raises(DatasetError, match=rf"byte offset {offset} \(line 1\): 0xe9"):
        read_longmemeval(path)


def test_jsonl_bad_line_names_line_and_offset_and_collect_skips_it(tmp_path: Path) -> None:
    lines = [json.dumps(session("s1", conversation_id="c1")).encode(), b'{"session_id": "s2", "x": "\xff"}']
    lines.append(json.dumps(session("s3", conversation_id="c3")).encode())
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    offset = len(lines[0]) + 1 + lines[1].index(b"\xff")
    with pytest.raises(DatasetError, match=rf"line 2: not valid UTF-8 text at byte offset {offset} \(line 2\)"):
        read_sessions_jsonl(path)
    with iter_sessions_jsonl(path, errors="collect") as stream:
        assert [c.id for c in stream] == ["c1", "c3"]
    assert [e.index for e in stream.errors] == [1]


@pytest.mark.parametrize("reader", [*ALL_READERS, detect_format], ids=lambda f: f.__name__)
def test_directory_and_missing_paths_say_which(tmp_path: Path, reader: Any) -> None:
    with pytest.raises(ConfigError, match="is a directory; give the path of a file inside it"):
        reader(tmp_path)
    with pytest.raises(ConfigError, match="not found: .* does not exist"):
        reader(tmp_path / "missing.json")


def _write_single_line(path: Path, size: int) -> Path:
    head = b'{"session_id": "s1", "turns": [{"speaker": "a", "content": "'
    with path.open("wb") as handle:
        handle.write(head)
        handle.write(b"x" * (size - len(head) - 4))
        handle.write(b'"}]}')
    return path


@pytest.mark.parametrize("reader", [iter_sessions_jsonl, iter_conversations], ids=lambda f: f.__name__)
def test_50mb_single_line_fails_fast_in_bounded_memory(tmp_path: Path, reader: Any) -> None:
    import time
    import tracemalloc

    path = _write_single_line(tmp_path / "huge.jsonl", 50 * 2**20)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(DatasetError) as info:
            list(reader(path))
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = str(info.value)
    assert info.value.path == str(path) and info.value.index == 0
    assert "line 1 is longer than" in message and "limit of 32 MiB" in message and "MEMWISE_MAX_RECORD_MB" in message
    assert elapsed < 3.0
    assert peak < 80 * 2**20  # the 32 MiB limit plus reading slack; the file itself is 50 MiB


def test_record_limit_is_raised_by_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    turns = [{"speaker": "a", "content": "x" * 1000}] * 2000  # about 2 MiB in one line, every turn short
    path = write_lines(tmp_path / "big.jsonl", [{"session_id": "s1", "turns": turns}])
    monkeypatch.setenv("MEMWISE_MAX_RECORD_MB", "1")
    with pytest.raises(DatasetError, match="limit of 1 MiB per record"):
        read_sessions_jsonl(path)
    monkeypatch.setenv("MEMWISE_MAX_RECORD_MB", "3")
    assert [c.id for c in read_sessions_jsonl(path)] == ["s1"]
    monkeypatch.setenv("MEMWISE_MAX_RECORD_MB", "lots")
    with pytest.raises(ConfigError, match="MEMWISE_MAX_RECORD_MB must be a positive number"):
        read_sessions_jsonl(path)


def test_json_array_record_over_the_limit_is_refused_early() -> None:
    import tracemalloc

    big = json.dumps({"text": "y" * (20 * 2**20)})
    handle = io.StringIO(f'[{{"a": 1}}, {big}, {{"b": 2}}]')
    records = iter_json_array(handle, path="big.json", limit=2**20)
    assert next(records) == (0, {"a": 1})
    tracemalloc.start()
    try:
        with pytest.raises(DatasetError, match=r"record 1 does not end within .* limit of 1 MiB") as info:
            next(records)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.index == 1 and "MEMWISE_MAX_RECORD_MB" in str(info.value)
    assert handle.tell() < 4 * 2**20 and peak < 8 * 2**20


def test_malformed_json_array_element_is_reported_without_reading_the_rest() -> None:
    handle = io.StringIO('[{"a": 1 "b": 2}, ' + ",".join(['{"c": "' + "z" * 1000 + '"}'] * 5000) + "]")
    with pytest.raises(DatasetError, match="or it is malformed: Expecting ',' delimiter"):
        list(iter_json_array(handle, path="bad.json", limit=64 * 1024))
    assert handle.tell() < 256 * 1024


@pytest.mark.parametrize(
    ("name", "content", "field"),
    [
        ("lc.json", [locomo_sample("a")], "conversation.session_1[0].text"),
        ("lme.json", [lme_question("q1")], "haystack_sessions[0][0].content"),
        ("s.jsonl", None, "turns[0].content"),
    ],
)
def test_turn_over_the_limit_names_the_field_and_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, content: Any, field: str
) -> None:
    path = write_json(tmp_path / name, content) if content else write_lines(tmp_path / name, [session("s1")])
    monkeypatch.setenv("MEMWISE_MAX_TURN_CHARS", "10")
    with pytest.raises(DatasetError) as info:
        read_conversations(path)
    message = str(info.value)
    assert info.value.index == 0 and field in message
    assert "over the limit of 10 per turn" in message and "MEMWISE_MAX_TURN_CHARS" in message
    monkeypatch.setenv("MEMWISE_MAX_TURN_CHARS", "1000")
    assert len(read_conversations(path)) == 1

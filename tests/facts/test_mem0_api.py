"""The memory API as a mem0 user calls it.

No-argument construction, metadata, filters, delete_all, reset, export/import, the
``{"results": [...]}`` shape, and sync methods with real signatures.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from memwise.exceptions import ConfigError, DatasetError
from memwise.facts.memory import AsyncMemory, Memory
from memwise.facts.transfer import ImportConflict
from memwise.store.sqlite import SQLiteStore
from memwise.testing import FakeEmbedder, ScriptedLLM


@pytest.fixture
def memory(tmp_path: Path) -> Iterator[Memory]:
    with Memory(store=SQLiteStore(tmp_path / "m.db"), embedder=FakeEmbedder()) as mem:
        yield mem


def _pets(mem: Memory) -> None:
    mem.add("I adopted a beagle called Pepper.", user_id="alice", metadata={"topic": "pets", "year": 2021})
    mem.add("My cat Tom sleeps all day.", user_id="alice", metadata={"topic": "pets", "year": 2024})
    mem.add("I work as a baker in Porto.", user_id="alice", metadata={"topic": "work", "year": 2024})
    mem.add("My dog Rex loves the beach.", user_id="bob", metadata={"topic": "pets", "year": 2024})


def test_memory_with_no_arguments_uses_the_configured_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "configured.sqlite3"
    monkeypatch.setenv("MEMWISE_STORE", str(db))
    monkeypatch.setenv("MEMWISE_EMBED_BACKEND", "openai")  # no model load: the embedder is only built
    monkeypatch.setenv("MEMWISE_EMBED_BASE_URL", "http://127.0.0.1:9/v1")
    mem = Memory()
    try:
        assert isinstance(mem.inner.store, SQLiteStore)
        assert mem.inner.store.path == db
        assert mem.inner.llm is not None  # answer() works with the configured (embedded) model
    finally:
        mem.close()
    assert db.exists()


def test_memory_with_no_arguments_defaults_to_memwise_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMWISE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MEMWISE_EMBED_BACKEND", "openai")
    monkeypatch.setenv("MEMWISE_EMBED_BASE_URL", "http://127.0.0.1:9/v1")
    with Memory() as mem:
        assert mem.inner.store.path == tmp_path / "home" / "memory.sqlite3"


def test_half_given_parts_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="both store= and embedder="):
        AsyncMemory(store=SQLiteStore(tmp_path / "m.db"))


def test_metadata_is_stored_returned_and_filtered(memory: Memory) -> None:
    _pets(memory)
    hits = memory.search("pet animal", user_id="alice", limit=10, filters={"topic": "pets"})
    assert sorted(h.record.text for h in hits) == [
        "user: I adopted a beagle called Pepper.",
        "user: My cat Tom sleeps all day.",
    ]
    assert all(h.record.metadata["topic"] == "pets" for h in hits)
    recent = memory.search("pet", user_id="alice", filters={"AND": [{"topic": "pets"}, {"year": {"gte": 2023}}]})
    assert [h.record.text for h in recent] == ["user: My cat Tom sleeps all day."]
    either = memory.get_all(user_id="alice", filters={"OR": [{"topic": "work"}, {"year": {"lt": 2022}}]})
    assert sorted(r.text for r in either) == [
        "user: I adopted a beagle called Pepper.",
        "user: I work as a baker in Porto.",
    ]
    listed = memory.get_all(user_id="alice", filters={"year": {"in": [2024]}}, limit=1)
    assert len(listed) == 1 and listed[0].metadata["year"] == 2024
    # A filter is never a way into another user's memory.
    assert [h.record.user_id for h in memory.search("dog beach", user_id="alice", filters={"topic": "pets"})] == [
        "alice",
        "alice",
    ]


def test_filtered_search_finds_a_match_that_ranks_below_the_limit(memory: Memory) -> None:
    for i in range(30):
        memory.add(f"My beagle chewed shoe number {i}.", user_id="alice", metadata={"year": 2020})
    memory.add("The vet said the beagle is healthy.", user_id="alice", metadata={"year": 2024})
    hits = memory.search("beagle chewed shoe", user_id="alice", limit=1, filters={"year": 2024})
    assert [h.record.text for h in hits] == ["user: The vet said the beagle is healthy."]


def test_bad_metadata_and_filters_are_config_errors(memory: Memory) -> None:
    with pytest.raises(ConfigError, match="reserved"):
        memory.add("x", user_id="alice", metadata={"speaker": "mallory"})
    with pytest.raises(ConfigError, match="values must be"):
        memory.add("x", user_id="alice", metadata={"nested": {"a": 1}})
    with pytest.raises(ConfigError, match="filters"):
        memory.search("x", user_id="alice", filters={"year": {"near": 2020}})
    with pytest.raises(ConfigError, match="limit"):
        memory.search("x", user_id="alice", limit=0)
    assert memory.get_all(user_id="alice") == []


def test_same_words_with_other_metadata_are_a_new_memory(memory: Memory) -> None:
    memory.add("Meeting at noon.", user_id="alice", metadata={"project": "a"})
    memory.add("Meeting at noon.", user_id="alice", metadata={"project": "a"})
    memory.add("Meeting at noon.", user_id="alice", metadata={"project": "b"})
    assert sorted(r.metadata["project"] for r in memory.get_all(user_id="alice")) == ["a", "b"]


def test_add_report_names_the_memories_it_wrote(memory: Memory) -> None:
    report = memory.add(["one", "two"], user_id="alice")
    assert sorted(memory.get(i, user_id="alice").text for i in report.unit_ids) == ["user: one", "user: two"]
    again = memory.add(["one", "two"], user_id="alice")
    assert (again.skipped, sorted(again.unit_ids)) == (True, sorted(report.unit_ids))


def test_update_keeps_metadata_or_replaces_it(memory: Memory) -> None:
    memory.add("I live in Lisbon.", user_id="alice", metadata={"topic": "home"})
    old = memory.get_all(user_id="alice")[0]
    kept = memory.update(old.id, "I live in Porto.", user_id="alice")
    assert kept.metadata["topic"] == "home" and kept.metadata["supersedes"] == [old.id]
    changed = memory.update(kept.id, "I live in Braga.", user_id="alice", metadata={"topic": "moves"})
    assert changed.metadata["topic"] == "moves"
    assert [h.record.text for h in memory.search("Braga", user_id="alice", filters={"topic": "moves"})] == [
        "I live in Braga."
    ]


def test_delete_all_retires_one_users_memories_only(memory: Memory) -> None:
    _pets(memory)
    assert memory.delete_all(user_id="alice", filters={"topic": "work"}) == 1
    assert len(memory.get_all(user_id="alice")) == 2
    assert memory.delete_all(user_id="alice") == 2
    assert memory.get_all(user_id="alice") == []
    assert len(memory.get_all(user_id="alice", include_history=True)) == 3  # history keeps them
    assert [r.text for r in memory.get_all(user_id="bob")] == ["user: My dog Rex loves the beach."]


def test_reset_erases_everything(memory: Memory) -> None:
    _pets(memory)
    assert memory.reset() >= 4
    assert memory.get_all(user_id="alice", include_history=True) == []
    assert memory.get_all(user_id="bob", include_history=True) == []
    memory.add("I adopted a beagle called Pepper.", user_id="alice")  # nothing of the old receipts remains
    assert len(memory.get_all(user_id="alice")) == 1


def test_export_import_round_trip_is_exact(memory: Memory, tmp_path: Path) -> None:
    _pets(memory)
    first = memory.get_all(user_id="alice")[0]
    memory.update(first.id, "I adopted a beagle called Pepper; she is two.", user_id="alice")
    memory.delete(memory.get_all(user_id="alice", filters={"topic": "work"})[0].id, user_id="alice")
    lines = list(memory.export(user_id="alice"))
    assert len(lines) == 4  # three adds, one update; the retired versions included
    with Memory(store=SQLiteStore(tmp_path / "other.db"), embedder=FakeEmbedder()) as other:
        assert other.import_jsonl(lines, user_id="alice") == (4, 0)
        assert list(other.export(user_id="alice")) == lines
        assert other.import_jsonl(lines, user_id="alice") == (0, 4)  # idempotent
        assert [h.record.text for h in other.search("beagle", user_id="alice", limit=1)] == [
            "I adopted a beagle called Pepper; she is two."
        ]
        with pytest.raises(DatasetError, match="belongs to user 'alice'"):
            other.import_jsonl(lines, user_id="mallory")
        assert other.get_all(user_id="mallory", include_history=True) == []


def test_import_is_all_or_nothing(memory: Memory, tmp_path: Path) -> None:
    _pets(memory)
    lines = list(memory.export(user_id="alice"))
    with Memory(store=SQLiteStore(tmp_path / "other.db"), embedder=FakeEmbedder()) as other:
        with pytest.raises(DatasetError, match="line 3"):
            other.import_jsonl([*lines[:2], "{not json", *lines[2:]], user_id="alice")
        assert other.get_all(user_id="alice", include_history=True) == []
        other.import_jsonl(lines[:1], user_id="alice")
        tampered = lines[0].replace("beagle", "poodle")
        with pytest.raises(ImportConflict):
            other.import_jsonl([lines[1], tampered], user_id="alice")
        assert len(other.get_all(user_id="alice")) == 1


def test_results_render_in_mem0s_shape(memory: Memory) -> None:
    _pets(memory)
    found = memory.search("beagle", user_id="alice", limit=1).to_dict()
    (item,) = found["results"]
    assert item["memory"] == "user: I adopted a beagle called Pepper."
    assert item["metadata"] == {"topic": "pets", "year": 2021}  # the caller's metadata, not memwise's own
    assert item["user_id"] == "alice" and isinstance(item["score"], float) and item["id"]
    listed = memory.get_all(user_id="bob").to_dict()["results"]
    assert [m["memory"] for m in listed] == ["user: My dog Rex loves the beach."] and "score" not in listed[0]


def test_sync_methods_have_the_async_signatures() -> None:
    for name, method in inspect.getmembers(AsyncMemory, inspect.iscoroutinefunction):
        if name.startswith("_") or name == "aclose":
            continue
        sync = inspect.signature(getattr(Memory, name))
        assert all(p.kind is not inspect.Parameter.VAR_KEYWORD for p in sync.parameters.values()), name
        assert list(sync.parameters) == list(inspect.signature(method).parameters), name


def test_sync_factory_and_export_have_the_async_signatures() -> None:
    for name in ("from_settings", "export"):
        sync, fast = inspect.signature(getattr(Memory, name)), inspect.signature(getattr(AsyncMemory, name))
        assert list(sync.parameters) == list(fast.parameters), name
    assert inspect.signature(Memory.from_settings).return_annotation == "Memory"


def test_saying_it_again_after_a_delete_stores_it_again(memory: Memory) -> None:
    first = memory.add("I like cats.", user_id="alice", metadata={"topic": "pets"})
    memory.delete(first.unit_ids[0], user_id="alice")
    again = memory.add("I like cats.", user_id="alice", metadata={"topic": "pets"})
    assert (again.skipped, again.units_written) == (False, 1)
    assert again.unit_ids != first.unit_ids
    assert [r.text for r in memory.get_all(user_id="alice")] == ["user: I like cats."]
    assert memory.delete_all(user_id="alice") == 1
    third = memory.add("I like cats.", user_id="alice", metadata={"topic": "pets"})
    assert third.units_written == 1 and len(set(first.unit_ids + again.unit_ids + third.unit_ids)) == 3
    assert len(memory.get_all(user_id="alice", include_history=True)) == 3  # each deleted version is kept
    assert memory.add("I like cats.", user_id="alice", metadata={"topic": "pets"}).skipped  # and a retry is a no-op


def test_a_superseded_memory_is_not_re_added_by_the_same_add(memory: Memory) -> None:
    first = memory.add("I live in Lisbon.", user_id="alice")
    memory.update(first.unit_ids[0], "I live in Porto.", user_id="alice")
    assert memory.add("I live in Lisbon.", user_id="alice").skipped  # an edit is not a delete
    assert [r.text for r in memory.get_all(user_id="alice")] == ["I live in Porto."]


def test_the_package_offers_memory_like_mem0_without_loading_it_on_import() -> None:
    import subprocess
    import sys

    import memwise

    assert memwise.Memory is Memory and memwise.AsyncMemory is AsyncMemory
    probe = "import sys, memwise; print('memwise.facts.memory' in sys.modules)"
    light = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert light.stdout.strip() == "False"  # `import memwise` alone stays cheap
    with pytest.raises(AttributeError, match="no attribute 'Memroy'"):
        _ = memwise.Memroy  # type: ignore[attr-defined]


def test_infinite_metadata_is_refused_and_cannot_break_later_filters(memory: Memory) -> None:
    memory.add("I adopted a beagle called Pepper.", user_id="alice", metadata={"score": 1})
    for bad in (math.inf, -math.inf):
        with pytest.raises(ConfigError, match="score"):
            memory.add("My cat Tom sleeps all day.", user_id="alice", metadata={"score": bad})
    (kept,) = memory.get_all(user_id="alice")
    with pytest.raises(ConfigError, match="score"):
        memory.update(kept.id, "Pepper is two.", user_id="alice", metadata={"score": math.inf})
    # Stored, an infinity is JSON no store can read: every filtered read of the store failed after it.
    assert [h.record.id for h in memory.search("beagle", user_id="alice", filters={"score": 1})] == [kept.id]
    assert [r.id for r in memory.get_all(user_id="alice", filters={"score": {"gte": 0}})] == [kept.id]


def test_a_time_range_that_ends_before_it_starts_is_a_config_error(memory: Memory) -> None:
    memory.add("I adopted a beagle called Pepper.", user_id="alice", session_time=datetime(2023, 5, 8))
    with pytest.raises(ConfigError, match="since"):
        memory.search("beagle", user_id="alice", since=datetime(2024, 1, 1), until=datetime(2023, 1, 1))
    with pytest.raises(ConfigError, match="until"):  # before: AttributeError from deep inside
        memory.search("beagle", user_id="alice", until="2024-01-01")  # type: ignore[arg-type]
    assert len(memory.search("beagle", user_id="alice", since=datetime(2023, 1, 1), until=datetime(2024, 1, 1))) == 1


def test_a_session_time_that_cannot_be_stored_is_refused_before_writing(memory: Memory) -> None:
    late = datetime(9999, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-5)))  # year 10000 in UTC
    early = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))  # year 0 in UTC
    for when in (late, early, "2024-01-01"):
        with pytest.raises(ConfigError, match="session_time"):
            memory.add("I adopted a beagle called Pepper.", user_id="alice", session_time=when)  # type: ignore[arg-type]
    # Once stored, such a date broke every later to_dict() and answer() of the user.
    assert memory.get_all(user_id="alice", include_history=True).to_dict() == {"results": []}


def test_a_filter_too_large_for_the_store_is_a_config_error(memory: Memory) -> None:
    memory.add("I adopted a beagle called Pepper.", user_id="alice", metadata={"doc": 7})
    deep: dict[str, Any] = {"doc": 7}
    for _ in range(60):
        deep = {"NOT": {"NOT": deep}}
    for bad in ({"doc": {"in": list(range(5000))}}, {"OR": [{"doc": i} for i in range(2000)]}, deep):
        with pytest.raises(ConfigError, match="filters"):
            memory.search("beagle", user_id="alice", filters=bad)
        with pytest.raises(ConfigError, match="filters"):
            memory.get_all(user_id="alice", filters=bad)
        with pytest.raises(ConfigError, match="filters"):
            memory.delete_all(user_id="alice", filters=bad)
    # A large filter that stays within the bounds still works, in both read paths.
    many = {"doc": {"in": list(range(500))}}
    assert len(memory.search("beagle", user_id="alice", filters=many)) == 1
    assert len(memory.get_all(user_id="alice", filters=many)) == 1


def test_a_blank_or_non_text_message_is_refused_not_stored(memory: Memory) -> None:
    for bad in ("", "   \n", [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None}]):
        with pytest.raises(ConfigError, match="message"):
            memory.add(bad, user_id="alice")  # type: ignore[arg-type]
    assert memory.get_all(user_id="alice") == []


def test_deleting_by_the_id_add_returned_deletes_the_memory_after_an_update(memory: Memory) -> None:
    # A mem0 user keeps the id add returned; memwise gives an edit a new id, so that id is the old version's.
    first = memory.add("I live in Lisbon.", user_id="alice").unit_ids[0]
    new = memory.update(first, "I live in Porto.", user_id="alice")
    memory.delete(first, user_id="alice")
    assert memory.get_all(user_id="alice") == []  # before: "I live in Porto." stayed, the delete a silent no-op
    assert [r.text for r in memory.history(new.id, user_id="alice")] == ["user: I live in Lisbon.", "I live in Porto."]
    memory.delete(first, user_id="alice")  # deleting again stays a no-op


def test_an_import_line_with_an_infinite_number_is_refused(memory: Memory, tmp_path: Path) -> None:
    _pets(memory)
    (line, *_) = memory.export(user_id="alice")
    poisoned = [
        line.replace('"year": 2021', '"year": Infinity'),
        line.replace('"year": 2021', '"year": 1e999'),  # too big for a float: Python reads it as inf
        line.replace('"year": 2021', '"year": NaN'),
    ]
    with Memory(store=SQLiteStore(tmp_path / "other.db"), embedder=FakeEmbedder()) as other:
        for bad in poisoned:
            assert bad != line
            with pytest.raises(DatasetError, match="line 1"):
                other.import_jsonl([bad], user_id="alice")
        # Stored, such a value failed every later filtered read of the store.
        assert other.get_all(user_id="alice", filters={"topic": "pets"}) == []
        # A time no datetime can hold (epoch 1e20) was imported, then failed every to_dict() and answer().
        for field in ("ts", "created_at", "valid_to"):
            far = json.dumps({**json.loads(line), field: 1e20})
            with pytest.raises(DatasetError, match=field):
                other.import_jsonl([far], user_id="alice")
        assert other.get_all(user_id="alice", include_history=True).to_dict() == {"results": []}


def test_an_updated_memory_says_when_it_was_updated(memory: Memory) -> None:
    first = memory.add("I live in Lisbon.", user_id="alice").unit_ids[0]
    assert memory.get_all(user_id="alice").to_dict()["results"][0]["updated_at"] is None
    new = memory.update(first, "I live in Porto.", user_id="alice")
    (item,) = memory.get_all(user_id="alice").to_dict()["results"]
    # mem0 sets updated_at on an edit; it was None on every memory whatever happened to it.
    assert item["id"] == new.id and item["updated_at"] is not None
    assert datetime.fromisoformat(item["updated_at"]).timestamp() == pytest.approx(new.created_at)


def test_infer_is_mem0s_switch_between_messages_as_said_and_extracted_facts(tmp_path: Path) -> None:
    fact = {"text": "The user has a beagle called Pepper.", "speaker": "user", "source_ids": ["T1"]}
    llm = ScriptedLLM(lambda request: json.dumps({"facts": [fact]}))
    said = "I adopted a beagle called Pepper."
    with Memory(store=SQLiteStore(tmp_path / "m.db"), embedder=FakeEmbedder(), llm=llm) as mem:
        mem.add(said, user_id="alice", infer=False)  # before: TypeError, mem0's most common flag
        assert (llm.calls, [r.kind for r in mem.get_all(user_id="alice")]) == (0, ["turn"])
        mem.add(said, user_id="bob", infer=True)
        assert [(r.kind, r.text) for r in mem.get_all(user_id="bob")] == [("fact", fact["text"])]
    with Memory(store=SQLiteStore(tmp_path / "f.db"), embedder=FakeEmbedder(), llm=llm, mode="facts") as facts:
        calls = llm.calls
        facts.add(said, user_id="alice", infer=False)
        assert (llm.calls, [r.kind for r in facts.get_all(user_id="alice")]) == (calls, ["turn"])
    with Memory(store=SQLiteStore(tmp_path / "n.db"), embedder=FakeEmbedder()) as no_model:
        with pytest.raises(ConfigError, match="model"):
            no_model.add(said, user_id="alice", infer=True)
        assert no_model.get_all(user_id="alice") == []


def test_a_metadata_key_that_filters_cannot_address_is_refused(memory: Memory) -> None:
    # SQLite's JSON path reads a backslash in a key as an escape: get_all(filters=) missed the memory
    # while search(filters=) found it.
    for key in ('a"b', "a\\b"):
        with pytest.raises(ConfigError, match="metadata key"):
            memory.add("I adopted a beagle called Pepper.", user_id="alice", metadata={key: "v"})
    assert memory.get_all(user_id="alice") == []


def test_a_system_prompt_in_the_messages_is_not_remembered(memory: Memory) -> None:
    # Agents pass their whole chat, system prompt first; mem0 leaves it out of what it stores.
    system = {"role": "system", "content": "You are a helpful assistant."}
    for said in ("I adopted a beagle called Pepper.", "I am training for the Lisbon marathon."):
        memory.add([system, {"role": "user", "content": said}], user_id="alice")
    texts = [r.text for r in memory.get_all(user_id="alice")]
    assert texts == ["user: I adopted a beagle called Pepper.", "user: I am training for the Lisbon marathon."]
    hits = memory.search("helpful assistant", user_id="alice", limit=1)  # before: the prompt, once per add
    assert all(not h.record.text.startswith("system:") for h in hits)


def test_scope_ids_in_filters_narrow_the_scope_as_in_mem0(memory: Memory) -> None:
    # mem0 callers put agent_id/run_id in filters; read as metadata they matched nothing, silently.
    memory.add("Plan the Lisbon trip for May.", user_id="alice", agent_id="planner", metadata={"topic": "travel"})
    memory.add("Book the dentist for Tuesday.", user_id="alice", agent_id="assistant", metadata={"topic": "health"})
    memory.add("Pack sunscreen for Lisbon.", user_id="alice", agent_id="planner", run_id="r1")

    def texts(results: Any) -> list[str]:
        return sorted(getattr(r, "record", r).text.split(": ", 1)[1] for r in results)

    assert texts(memory.get_all(user_id="alice", filters={"agent_id": "planner"})) == [
        "Pack sunscreen for Lisbon.",
        "Plan the Lisbon trip for May.",
    ]
    planner_travel = memory.search("Lisbon", user_id="alice", filters={"agent_id": "planner", "topic": "travel"})
    assert texts(planner_travel) == ["Plan the Lisbon trip for May."]
    assert texts(memory.search("Lisbon", user_id="alice", filters={"run_id": "r1", "user_id": "alice"})) == [
        "Pack sunscreen for Lisbon."
    ]
    assert memory.delete_all(user_id="alice", filters={"agent_id": "assistant"}) == 1
    assert len(memory.get_all(user_id="alice")) == 2


def test_scope_ids_in_filters_cannot_move_or_widen_the_scope(memory: Memory) -> None:
    _pets(memory)
    with pytest.raises(ConfigError, match="contradicts"):
        memory.search("dog", user_id="alice", filters={"user_id": "bob"})
    with pytest.raises(ConfigError, match="contradicts"):
        memory.get_all(user_id="alice", agent_id="a", filters={"agent_id": "b"})
    with pytest.raises(ConfigError, match="plain"):
        memory.get_all(user_id="alice", filters={"agent_id": {"in": ["a", "b"]}})
    with pytest.raises(ConfigError, match="scope id"):
        memory.search("dog", user_id="alice", filters={"OR": [{"agent_id": "a"}, {"topic": "pets"}]})
    with pytest.raises(ConfigError, match="reserved"):
        memory.add("I like tea.", user_id="alice", metadata={"agent_id": "planner"})
    assert memory.delete_all(user_id="alice", filters={"user_id": "alice", "topic": "work"}) == 1
    assert len(memory.get_all(user_id="bob")) == 1


def test_get_all_pages_with_offset(memory: Memory) -> None:
    _pets(memory)
    every = [r.id for r in memory.get_all(user_id="alice")]
    pages = [[r.id for r in memory.get_all(user_id="alice", limit=2, offset=o)] for o in (0, 2, 4)]
    assert pages == [every[:2], every[2:], []]
    with pytest.raises(ConfigError, match="offset"):
        memory.get_all(user_id="alice", offset=-1)

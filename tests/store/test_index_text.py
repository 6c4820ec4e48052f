"""Full-text search indexes ``index_text`` when a record has one; the record still shows ``text``."""

from __future__ import annotations

from pathlib import Path

from memwise.store.base import Record
from memwise.store.sqlite import SQLiteStore


def test_fts_finds_by_index_text_and_shows_text(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "s.db") as store:
        store.add(
            [
                Record(
                    id="a",
                    text="Caroline: I went to a support group.",
                    index_text="[8 May 2023] Caroline: I went to a support group.",
                )
            ]
        )
        hits = store.search_text("May 2023", top_k=5)
        assert [h.record.id for h in hits] == ["a"]
        assert hits[0].record.text == "Caroline: I went to a support group."
        # New text without new index words: the old index words no longer find it.
        store.update("a", text="Caroline: I went hiking.")
        assert store.search_text("May 2023", top_k=5) == []
        assert [h.record.id for h in store.search_text("hiking", top_k=5)] == ["a"]
        assert store.get("a").index_text is None  # type: ignore[union-attr]
        store.update("a", index_text="[9 June 2023] Caroline: I went hiking.")
        assert [h.record.id for h in store.search_text("June", top_k=5)] == ["a"]
        store.delete("a")
        assert store.search_text("June", top_k=5) == []


def test_a_version_1_store_is_migrated_in_place(tmp_path: Path) -> None:
    import sqlite3
    from contextlib import closing

    path = tmp_path / "old.db"
    with SQLiteStore(path) as store:
        store.add([Record(id="a", text="Caroline went hiking.")])
    # Turn it back into what memwise 0.1 wrote: no index_text column, triggers on text only, version 1.
    with closing(sqlite3.connect(path)) as conn:
        for trigger in ("records_fts_insert", "records_fts_delete", "records_fts_update"):
            conn.execute(f"DROP TRIGGER {trigger}")
        conn.execute("ALTER TABLE records DROP COLUMN index_text")
        conn.execute(
            "CREATE TRIGGER records_fts_delete AFTER DELETE ON records BEGIN "
            "INSERT INTO records_fts(records_fts, rowid, text) VALUES ('delete', old.seq, old.text); END"
        )
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
        conn.commit()
    with SQLiteStore(path) as store:
        assert store.get("a").text == "Caroline went hiking."  # type: ignore[union-attr]
        assert [h.record.id for h in store.search_text("hiking", top_k=5)] == ["a"]
        store.add([Record(id="b", text="Mel: painting.", index_text="[9 June 2023] Mel: painting.")])
        assert [h.record.id for h in store.search_text("June", top_k=5)] == ["b"]
        store.delete("a")
        assert store.search_text("hiking", top_k=5) == []

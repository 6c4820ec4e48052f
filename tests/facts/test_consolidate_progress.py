"""`memwise consolidate` draws a bar with totals: consolidation reports (units done, units in all) as it goes."""

from __future__ import annotations

from pathlib import Path

from tests.facts.test_consolidate import decide, seed_moves  # pyright: ignore[reportPrivateUsage]

from memwise.facts.consolidate import consolidate
from memwise.store.sqlite import SQLiteStore
from memwise.testing import ScriptedLLM


async def test_progress_counts_every_unit_up_to_the_total(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "mem.db")
    try:
        seed_moves(store)
        seen: list[tuple[int, int]] = []
        llm = ScriptedLLM(decide("IGNORE"))
        report = await consolidate(store, llm, user_id="A", on_progress=lambda done, total: seen.append((done, total)))
    finally:
        store.close()
    assert report.units == 4
    assert seen == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]

"""Two store instances on one file or schema, as two processes would be: each sees the other's writes at once."""

from __future__ import annotations

import numpy as np
from tests.store.test_store_contract import Make, rec, vec

from memwise.store.base import Filters, ScoredRecord


def ids(hits: list[ScoredRecord]) -> list[str]:
    return [h.record.id for h in hits]


def test_updates_invalidations_deletes_and_a_new_scope_show_at_the_other_at_once(make_store: Make) -> None:
    a, b = make_store(), make_store()
    records = [rec(f"r{i}", user_id="u") for i in range(4)]
    a.add(records, np.stack([vec(r.id) for r in records]))
    assert ids(b.search_vector(vec("r0"), 1, Filters(user_id="u"))) == ["r0"]
    a.update("r0", text="brand new words")
    assert "r0" not in ids(b.search_vector(vec("r0"), 4, Filters(user_id="u")))
    assert "r0" not in ids(b.search_vector(vec("r0"), 4))
    assert ids(b.search_text("brand")) == ["r0"]
    a.invalidate("r1")
    assert "r1" not in ids(b.search_vector(vec("r1"), 4))
    assert "r1" in ids(b.search_vector(vec("r1"), 4, Filters(include_invalid=True)))
    assert b.count() == 3 and b.count(Filters(include_invalid=True)) == 4
    a.delete("r2")
    assert "r2" not in ids(b.search_vector(vec("r2"), 4, Filters(include_invalid=True)))
    assert b.get("r2") is None
    a.add([rec("r2", user_id="v")], vec("r2")[None, :])  # re-added under another scope
    assert ids(b.search_vector(vec("r2"), 1, Filters(user_id="v"))) == ["r2"]
    assert "r2" not in ids(b.search_vector(vec("r2"), 4, Filters(user_id="u")))
    assert ids(b.search_text("r2", filters=Filters(user_id="v"))) == ["r2"]
    a.delete("r3")  # deleted and re-added under another scope between two searches of the other
    a.add([rec("r3", user_id="v", kind="fact")], vec("r3")[None, :])
    assert sorted(ids(b.search_vector(vec("r3"), 4, Filters(user_id="v")))) == ["r2", "r3"]
    assert ids(b.search_vector(vec("r3"), 4, Filters(user_id="u"))) == []
    assert ids(b.search_vector(vec("r3"), 4, Filters(kind="fact"))) == ["r3"]


def test_a_space_refilled_at_another_dimension_under_the_same_ids_is_searched_at_the_other(make_store: Make) -> None:
    # A server has space "m" cached (8-d); another process drops it and fills it again at 5-d under the
    # same ids (and leaves some out). The server's next search must see the 5-d space, not fail on it.
    a, b = make_store(), make_store()
    records = [rec(f"r{i}", user_id="u") for i in range(4)]
    a.add(records, np.stack([vec(r.id) for r in records]), space="m")
    assert ids(b.search_vector(vec("r0"), 1, space="m")) == ["r0"]
    a.drop_space("m")
    a.add(records[:3], np.stack([vec(r.id, 5) for r in records[:3]]), space="m")
    assert ids(b.search_vector(vec("r0", 5), 1, space="m")) == ["r0"]
    assert sorted(ids(b.search_vector(vec("r2", 5), 4, Filters(user_id="u"), space="m"))) == ["r0", "r1", "r2"]

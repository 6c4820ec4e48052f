"""JSONL export/import: exact round trip with history; bad lines and other users' lines refused whole."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

from .conftest import Keys


async def _seed(c: httpx.AsyncClient, h: dict[str, str]) -> None:
    first = await c.post(
        "/v1/memories",
        json={
            "messages": [{"role": "user", "content": "I adopted a beagle called Pepper."}],
            "user_id": "alice",
            "session_time": "2023-05-08T13:56:00",
            "metadata": {"topic": "pets", "rank": 2},
        },
        headers=h,
    )
    dog = first.json()["memories"][0]["id"]
    await c.put(f"/v1/memories/{dog}", json={"text": "Pepper the beagle is two.", "user_id": "alice"}, headers=h)
    second = await c.post(
        "/v1/memories",
        json={"messages": [{"role": "assistant", "content": "Noted the marathon."}], "user_id": "alice"},
        headers=h,
    )
    await c.delete(f"/v1/memories/{second.json()['memories'][0]['id']}", params={"user_id": "alice"}, headers=h)


async def test_round_trip_is_exact_history_included(make_app: Callable[..., Any], keys: Keys) -> None:
    h = Keys.bearer(keys.acme)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=make_app(keys.path)), base_url="http://a") as c:
        await _seed(c, h)
        exported = (await c.get("/v1/memories/export", params={"user_id": "alice"}, headers=h)).text
    lines = [json.loads(line) for line in exported.splitlines()]
    assert len(lines) == 3 and sum(1 for line in lines if line["valid_to"] is not None) == 2
    assert set(lines[0]) == {
        "id",
        "kind",
        "text",
        "index_text",
        "scope",
        "metadata",
        "ts",
        "created_at",
        "valid_from",
        "valid_to",
    }

    # Into an empty memory (another tenant's store, through a new app): import, then export gives the same bytes.
    other = make_app(keys.path)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=other), base_url="http://b") as c:
        g = Keys.bearer(keys.globex)
        done = await c.post("/v1/memories/import", params={"user_id": "alice"}, content=exported, headers=g)
        assert done.json() == {"imported": 3, "skipped": 0}
        again = (await c.get("/v1/memories/export", params={"user_id": "alice"}, headers=g)).text
        assert again == exported
        # History and search work on the imported records (re-embedded).
        current = (await c.get("/v1/memories", params={"user_id": "alice"}, headers=g)).json()["results"]
        assert [m["text"] for m in current] == ["Pepper the beagle is two."]
        history = await c.get(f"/v1/memories/{current[0]['id']}/history", params={"user_id": "alice"}, headers=g)
        assert [m["text"] for m in history.json()["results"]] == [
            "user: I adopted a beagle called Pepper.",
            "Pepper the beagle is two.",
        ]
        hits = await c.post("/v1/memories/search", json={"query": "beagle two", "user_id": "alice"}, headers=g)
        assert hits.json()["results"][0]["memory"]["id"] == current[0]["id"]
        # Importing the same file again is a no-op.
        repeat = await c.post("/v1/memories/import", params={"user_id": "alice"}, content=exported, headers=g)
        assert repeat.json() == {"imported": 0, "skipped": 3}


async def test_a_bad_or_foreign_line_refuses_the_whole_import(client: httpx.AsyncClient, keys: Keys) -> None:
    h = Keys.bearer(keys.acme)
    await _seed(client, h)
    exported = (await client.get("/v1/memories/export", params={"user_id": "alice"}, headers=h)).text
    fresh = exported.replace('"alice"', '"carol"')  # carol's own export, ids unchanged

    malformed = fresh + "{not json\n"
    r = await client.post("/v1/memories/import", params={"user_id": "carol"}, content=malformed, headers=h)
    assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_dataset")
    assert "line 4" in r.json()["error"]["message"]

    foreign = fresh + exported.splitlines(keepends=True)[0]  # one of alice's lines at the end
    r = await client.post("/v1/memories/import", params={"user_id": "carol"}, content=foreign, headers=h)
    assert r.status_code == 400 and "belongs to user 'alice'" in r.json()["error"]["message"]

    listed = await client.get("/v1/memories", params={"user_id": "carol", "include_history": True}, headers=h)
    assert listed.json()["results"] == []  # nothing of either refused import was written


async def test_an_id_present_with_other_content_is_a_conflict(client: httpx.AsyncClient, keys: Keys) -> None:
    h = Keys.bearer(keys.acme)
    await _seed(client, h)
    exported = (await client.get("/v1/memories/export", params={"user_id": "alice"}, headers=h)).text
    first = json.loads(exported.splitlines()[0])
    changed = json.dumps({**first, "text": "something else"}) + "\n"
    extra = json.dumps({**first, "id": "brand-new"}) + "\n"
    r = await client.post("/v1/memories/import", params={"user_id": "alice"}, content=extra + changed, headers=h)
    assert (r.status_code, r.json()["error"]["code"]) == (409, "conflict")
    missing = await client.get("/v1/memories/brand-new", params={"user_id": "alice"}, headers=h)
    assert missing.status_code == 404

"""The REST API end to end: every endpoint over real HTTP, error bodies, limits."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from memwise.cli import app as cli_app
from memwise.exceptions import ConfigError, EmbeddingError, LLMError
from memwise.server.app import create_app
from memwise.server.config import ServerConfig, check_bind
from memwise.testing import FakeEmbedder, ScriptedLLM

from .conftest import Keys, running

DOG = [{"role": "user", "content": "I adopted a beagle called Pepper."}]
RUN = [{"role": "user", "content": "I am training for the Lisbon marathon in October."}]


def _wait_job(c: httpx.Client, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        job = c.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("done", "failed"):
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} did not finish")


def test_every_endpoint_over_real_http(make_app: Callable[..., Any], keys: Keys, tmp_path: Path) -> None:
    ingest_dir = tmp_path / "datasets"
    ingest_dir.mkdir()
    line = {
        "session_id": "s1",
        "conversation_id": "c1",
        "timestamp": "2024-03-01T09:00:00",
        "turns": [{"speaker": "bob", "content": "My cat Miso hates the vacuum."}],
    }
    (ingest_dir / "sessions.jsonl").write_text(json.dumps(line) + "\n")
    app = make_app(keys.path, ingest_dir=ingest_dir)
    with running(app) as url, httpx.Client(base_url=url, headers=Keys.bearer(keys.acme), timeout=10) as c:
        assert c.get("/health").json() == {"status": "ok"}
        assert c.get("/ready").json() == {"status": "ready"}
        assert "/v1/memories/search" in c.get("/openapi.json").json()["paths"]
        assert c.get("/docs").status_code == 200

        added = c.post("/v1/memories", json={"messages": DOG, "user_id": "alice", "metadata": {"topic": "pets"}})
        assert added.status_code == 200, added.text
        dog = added.json()["memories"][0]
        assert dog["text"] == "user: I adopted a beagle called Pepper." and dog["metadata"]["topic"] == "pets"
        c.post("/v1/memories", json={"messages": RUN, "user_id": "alice", "metadata": {"topic": "sport"}})

        hits = c.post("/v1/memories/search", json={"query": "beagle Pepper", "user_id": "alice", "top_k": 1}).json()
        assert [h["memory"]["id"] for h in hits["results"]] == [dog["id"]]
        filtered = c.post(
            "/v1/memories/search", json={"query": "beagle Pepper", "user_id": "alice", "filters": {"topic": "sport"}}
        ).json()
        assert [h["memory"]["metadata"]["topic"] for h in filtered["results"]] == ["sport"]

        assert c.get(f"/v1/memories/{dog['id']}", params={"user_id": "alice"}).json()["text"] == dog["text"]
        listed = c.get("/v1/memories", params={"user_id": "alice"}).json()["results"]
        assert len(listed) == 2
        pets = c.post("/v1/memories/list", json={"user_id": "alice", "filters": {"topic": "pets"}}).json()
        assert [m["id"] for m in pets["results"]] == [dog["id"]]

        new = c.put(f"/v1/memories/{dog['id']}", json={"text": "Pepper the beagle is two.", "user_id": "alice"})
        assert new.status_code == 200, new.text
        versions = c.get(f"/v1/memories/{new.json()['id']}/history", params={"user_id": "alice"}).json()["results"]
        assert [v["text"] for v in versions] == [dog["text"], "Pepper the beagle is two."]

        answered = c.post("/v1/memories/answer", json={"question": "What is my dog called?", "user_id": "alice"})
        assert answered.json()["answer"] == "Pepper"

        exported = c.get("/v1/memories/export", params={"user_id": "alice"})
        assert exported.headers["content-type"].startswith("application/x-ndjson")
        assert len(exported.text.splitlines()) == 3  # two current memories and the superseded version
        imported = c.post("/v1/memories/import", params={"user_id": "alice"}, content=exported.content)
        assert imported.json() == {"imported": 0, "skipped": 3}

        assert c.delete(f"/v1/memories/{new.json()['id']}", params={"user_id": "alice"}).json() == {"deleted": 1}
        assert c.delete("/v1/memories", params={"user_id": "alice"}).json() == {"deleted": 1}
        assert c.get("/v1/memories", params={"user_id": "alice"}).json()["results"] == []

        job = c.post("/v1/jobs/ingest", json={"path": "sessions.jsonl", "user_id": "bob"})
        assert job.status_code == 202, job.text
        done = _wait_job(c, job.json()["id"])
        assert done["status"] == "done" and done["progress"] == {"done": 1, "total": 1}
        assert done["result"]["units_written"] == 1
        consolidated = _wait_job(c, c.post("/v1/jobs/consolidate", json={"user_id": "bob"}).json()["id"])
        assert consolidated["status"] == "done" and consolidated["progress"] == {"done": 1, "total": 1}


async def test_missing_or_bad_key_is_401(client: httpx.AsyncClient) -> None:
    for headers in ({}, {"Authorization": "Bearer mwk_not-a-key"}, {"X-API-Key": "nope"}, {"Authorization": "Basic x"}):
        r = await client.get("/v1/memories", params={"user_id": "alice"}, headers=headers)
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "unauthorized"


async def test_x_api_key_header_works(client: httpx.AsyncClient, keys: Keys) -> None:
    r = await client.get("/v1/memories", params={"user_id": "alice"}, headers={"X-API-Key": keys.acme})
    assert r.status_code == 200 and r.json() == {"results": [], "next_offset": None}


async def test_error_bodies_have_stable_codes(client: httpx.AsyncClient, keys: Keys) -> None:
    h = Keys.bearer(keys.acme)
    missing = await client.get("/v1/memories/nope", params={"user_id": "alice"}, headers=h)
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")
    invalid = await client.post("/v1/memories", json={"messages": [], "user_id": "alice"}, headers=h)
    assert (invalid.status_code, invalid.json()["error"]["code"]) == (422, "invalid_request")
    assert "messages" in invalid.json()["error"]["message"]
    too_many = await client.post("/v1/memories/search", json={"query": "q", "user_id": "a", "top_k": 101}, headers=h)
    assert (too_many.status_code, too_many.json()["error"]["code"]) == (422, "invalid_request")
    reserved = await client.post(
        "/v1/memories", json={"messages": DOG, "user_id": "alice", "metadata": {"session_id": "x"}}, headers=h
    )
    assert (reserved.status_code, reserved.json()["error"]["code"]) == (400, "invalid_request")
    job = await client.get("/v1/jobs/job_nope", headers=h)
    assert (job.status_code, job.json()["error"]["code"]) == (404, "not_found")
    added = (await client.post("/v1/memories", json={"messages": DOG, "user_id": "alice"}, headers=h)).json()
    old = added["memories"][0]["id"]
    await client.put(f"/v1/memories/{old}", json={"text": "new", "user_id": "alice"}, headers=h)
    stale = await client.put(f"/v1/memories/{old}", json={"text": "newer", "user_id": "alice"}, headers=h)
    assert (stale.status_code, stale.json()["error"]["code"]) == (409, "conflict")
    bad_dataset = await client.post("/v1/memories/import", params={"user_id": "alice"}, content=b"{oops", headers=h)
    assert (bad_dataset.status_code, bad_dataset.json()["error"]["code"]) == (400, "invalid_dataset")
    unknown_route = await client.get("/v1/nothing", headers=h)
    assert unknown_route.json()["error"]["code"] == "not_found"


async def test_body_over_the_limit_is_413(make_app: Callable[..., Any], keys: Keys) -> None:
    app = make_app(keys.path, max_body_bytes=2000)
    big = {"messages": [{"role": "user", "content": "x" * 3000}], "user_id": "alice"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.post("/v1/memories", json=big, headers=Keys.bearer(keys.acme))
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"

        async def chunks():  # no Content-Length: counted as it streams
            for _ in range(5):
                yield b"x" * 1000

        h = Keys.bearer(keys.acme)
        r = await c.post("/v1/memories/import", params={"user_id": "a"}, content=chunks(), headers=h)
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
        nothing = await c.get("/v1/memories", params={"user_id": "alice"}, headers=Keys.bearer(keys.acme))
        assert nothing.json()["results"] == []


async def test_too_many_messages_per_add(make_app: Callable[..., Any], keys: Keys) -> None:
    app = make_app(keys.path, max_messages=2)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.post("/v1/memories", json={"messages": DOG * 3, "user_id": "a"}, headers=Keys.bearer(keys.acme))
        assert r.status_code == 422 and "at most 2" in r.json()["error"]["message"]


def test_without_keys_only_loopback(tmp_path: Path) -> None:
    keyless = ServerConfig(data_dir=tmp_path)
    assert "loopback only" in (check_bind("127.0.0.1", keyless) or "")
    with pytest.raises(ConfigError, match="without API keys"):
        check_bind("0.0.0.0", keyless)
    assert check_bind("0.0.0.0", ServerConfig(data_dir=tmp_path, keys_file=tmp_path / "k.json")) is None


async def test_keyless_server_serves_the_default_tenant(make_app: Callable[..., Any], tmp_path: Path) -> None:
    app = make_app(None)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        assert (await c.post("/v1/memories", json={"messages": DOG, "user_id": "a"})).status_code == 200
    assert (tmp_path / "data" / "tenants" / "default.sqlite3").is_file()


class _BrokenEmbedder(FakeEmbedder):
    async def embed(self, texts: Sequence[str]) -> Any:
        raise EmbeddingError("embedding server at http://127.0.0.1:9 refused the connection")


def _failing_model(request: Any) -> str:
    raise LLMError("upstream overloaded", backend="openai(http://127.0.0.1:9/v1)", status=503, attempts=3)


async def test_model_and_embedder_failures_have_their_codes(tmp_path: Path, keys: Keys) -> None:
    config = ServerConfig(data_dir=tmp_path / "d", keys_file=keys.path)
    app = create_app(config, embedder=FakeEmbedder(), llm=ScriptedLLM(_failing_model))
    h = Keys.bearer(keys.acme)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.post("/v1/memories/answer", json={"question": "dog?", "user_id": "alice"}, headers=h)
        assert (r.status_code, r.json()["error"]["code"]) == (502, "model_error")
        assert "upstream overloaded" in r.json()["error"]["message"]
    broken = create_app(config, embedder=_BrokenEmbedder(), llm=None)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=broken), base_url="http://t") as c:
        ready = await c.get("/ready")
        assert (ready.status_code, ready.json()["error"]["code"]) == (503, "not_ready")
        assert (await c.get("/health")).status_code == 200
        r = await c.post("/v1/memories", json={"messages": DOG, "user_id": "alice"}, headers=h)
        assert (r.status_code, r.json()["error"]["code"]) == (502, "embedding_error")
        no_model = await c.post("/v1/memories/answer", json={"question": "dog?", "user_id": "alice"}, headers=h)
        assert (no_model.status_code, no_model.json()["error"]["code"]) == (400, "invalid_request")


def test_serve_refuses_a_public_host_without_keys(tmp_path: Path) -> None:
    done = CliRunner().invoke(cli_app, ["serve", "--host", "0.0.0.0", "--data-dir", str(tmp_path)])
    assert done.exit_code != 0
    assert isinstance(done.exception, ConfigError) and "without API keys" in str(done.exception)
    assert not (tmp_path / "tenants").exists()


async def test_metadata_filters_are_exact_and_validated(client: httpx.AsyncClient, keys: Keys) -> None:
    h = Keys.bearer(keys.acme)
    many = [{"role": "user", "content": f"My beagle Pepper chewed shoe number {i}."} for i in range(40)]
    await client.post(
        "/v1/memories", json={"messages": many, "user_id": "alice", "metadata": {"year": 2020}}, headers=h
    )
    rare = [{"role": "user", "content": "The vet said the beagle is healthy."}]
    await client.post(
        "/v1/memories", json={"messages": rare, "user_id": "alice", "metadata": {"year": 2024}}, headers=h
    )
    # The one 2024 memory ranks far below forty closer matches, yet a filtered top-1 finds it.
    query = {"query": "beagle Pepper chewed shoe", "user_id": "alice", "top_k": 1, "filters": {"year": {"gte": 2023}}}
    hits = (await client.post("/v1/memories/search", json=query, headers=h)).json()["results"]
    assert [hit["memory"]["text"] for hit in hits] == ["user: The vet said the beagle is healthy."]
    listed = await client.post(
        "/v1/memories/list", json={"user_id": "alice", "filters": {"NOT": {"year": 2020}}, "limit": 5}, headers=h
    )
    assert [m["metadata"]["year"] for m in listed.json()["results"]] == [2024]
    bad = await client.post("/v1/memories/list", json={"user_id": "alice", "filters": {"year": {"near": 1}}}, headers=h)
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "invalid_request")


async def test_bad_input_is_a_4xx_naming_the_field_never_a_500(client: httpx.AsyncClient, keys: Keys) -> None:
    h = Keys.bearer(keys.acme)
    kept = await client.post(
        "/v1/memories", json={"messages": DOG, "user_id": "alice", "metadata": {"n": 1}}, headers=h
    )
    assert kept.status_code == 200, kept.text
    raw = b'{"messages": [{"role": "user", "content": "x"}], "user_id": "alice", "metadata": {"n": Infinity}}'
    bad_requests: list[tuple[str, str, dict[str, Any], str]] = [
        ("POST", "/v1/memories", {"content": raw, "headers": {**h, "content-type": "application/json"}}, "'n'"),
        ("POST", "/v1/memories", {"json": {"messages": [{"content": "   "}], "user_id": "alice"}}, "content"),
        (
            "POST",
            "/v1/memories",
            {"json": {"messages": DOG, "user_id": "alice", "session_time": "9999-12-31T23:00:00-05:00"}},
            "session_time",
        ),
        (
            "POST",
            "/v1/memories/search",
            {"json": {"query": "dog", "user_id": "alice", "since": "2024-01-01", "until": "2023-01-01"}},
            "since",
        ),
        (
            "POST",
            "/v1/memories/list",
            {"json": {"user_id": "alice", "filters": {"n": {"in": list(range(5000))}}}},
            "filters",
        ),
    ]
    for method, path, kwargs, named in bad_requests:
        r = await client.request(method, path, **{"headers": h, **kwargs})
        assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_request"), (path, r.text)
        assert named in r.json()["error"]["message"], r.text
    # Nothing of the refused adds was stored, and the user's memory still reads, filters and answers.
    listed = await client.post("/v1/memories/list", json={"user_id": "alice", "filters": {"n": 1}}, headers=h)
    assert [m["id"] for m in listed.json()["results"]] == [kept.json()["memories"][0]["id"]]
    answered = await client.post(
        "/v1/memories/answer", json={"question": "What is my dog called?", "user_id": "alice"}, headers=h
    )
    assert answered.status_code == 200 and answered.json()["answer"] == "Pepper"


class _SlowEmbedder(FakeEmbedder):
    """Yields to the event loop while it embeds, as a real embedder (a thread, a server) does."""

    async def embed(self, texts: Sequence[str]) -> Any:
        await asyncio.sleep(0.02)
        return await super().embed(texts)


async def test_a_retried_update_is_a_conflict_not_a_second_current_version(tmp_path: Path, keys: Keys) -> None:
    app = create_app(ServerConfig(data_dir=tmp_path / "d", keys_file=keys.path), embedder=_SlowEmbedder())
    h = Keys.bearer(keys.acme)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", headers=h) as c:
        added = await c.post("/v1/memories", json={"messages": DOG, "user_id": "alice"})
        old = added.json()["memories"][0]["id"]
        put = {"text": "Pepper the beagle is two.", "user_id": "alice"}
        first, second = await asyncio.gather(
            c.put(f"/v1/memories/{old}", json=put), c.put(f"/v1/memories/{old}", json=put)
        )
        assert sorted([first.status_code, second.status_code]) == [200, 409], (first.text, second.text)
        listed = (await c.get("/v1/memories", params={"user_id": "alice"})).json()["results"]
        assert [m["text"] for m in listed] == ["Pepper the beagle is two."]


async def test_a_model_failing_during_an_add_is_a_502_and_writes_nothing(tmp_path: Path, keys: Keys) -> None:
    down = {"now": True}

    def model(request: Any) -> str:
        if down["now"]:
            raise LLMError("429 Too Many Requests", backend="openai(http://127.0.0.1:9/v1)", status=429, attempts=3)
        return json.dumps(
            {"facts": [{"text": "The user has a beagle called Pepper.", "speaker": "user", "source_ids": ["T1"]}]}
        )

    config = ServerConfig(data_dir=tmp_path / "d", keys_file=keys.path, mode="facts")
    app = create_app(config, embedder=FakeEmbedder(), llm=ScriptedLLM(model))
    chat = [
        {"role": "user", "content": f"Remark {i}: I adopted a beagle called Pepper. " + "la " * 50} for i in range(12)
    ]
    body = {"messages": chat, "user_id": "alice"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t", headers=Keys.bearer(keys.acme)
    ) as c:
        failed = await c.post("/v1/memories", json=body)
        # Before: 200, the raw turns stored in place of facts, and the session recorded as done, so a
        # retry once the model was back was a no-op and the facts were never extracted.
        assert (failed.status_code, failed.json()["error"]["code"]) == (502, "model_error"), failed.text
        assert "429" in failed.json()["error"]["message"]
        listed = await c.get("/v1/memories", params={"user_id": "alice", "include_history": True})
        assert listed.json()["results"] == []
        down["now"] = False
        retried = await c.post("/v1/memories", json=body)
        assert retried.status_code == 200, retried.text
        assert {m["kind"] for m in retried.json()["memories"]} == {"fact"}


async def test_listing_more_memories_than_a_page_says_where_the_next_page_starts(tmp_path: Path, keys: Keys) -> None:
    # Before: GET /v1/memories returned the oldest max_limit memories and nothing said there were more.
    config = ServerConfig(data_dir=tmp_path / "d", keys_file=keys.path, max_limit=2)
    app = create_app(config, embedder=FakeEmbedder(), llm=None)
    h = Keys.bearer(keys.acme)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        for said in ("I have a beagle.", "I live in Porto.", "I bake bread.", "I swim on Sundays.", "I like tea."):
            message = [{"role": "user", "content": said}]
            r = await c.post("/v1/memories", json={"messages": message, "user_id": "alice"}, headers=h)
            assert r.status_code == 200
        seen: list[str] = []
        offset: int | None = 0
        pages = 0
        while offset is not None:
            page = (await c.get("/v1/memories", params={"user_id": "alice", "offset": offset}, headers=h)).json()
            assert len(page["results"]) <= 2
            seen += [m["text"] for m in page["results"]]
            offset, pages = page["next_offset"], pages + 1
        assert pages == 3 and len(seen) == len(set(seen)) == 5
        assert seen[0].endswith("I have a beagle.") and seen[-1].endswith("I like tea.")
        exact = await c.post("/v1/memories/list", json={"user_id": "alice", "limit": 1, "offset": 4}, headers=h)
        assert [m["text"] for m in exact.json()["results"]] == [seen[-1]] and exact.json()["next_offset"] is None
        bad = await c.get("/v1/memories", params={"user_id": "alice", "offset": -1}, headers=h)
        assert bad.status_code == 422

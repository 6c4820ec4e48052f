"""A key for tenant A never reads, changes or deletes tenant B's memory: by id, query, user_id or filter.

Every test over the app runs twice: tenants as SQLite files, and tenants as schemas of one Postgres
database (``--store postgresql://...``), where the tenants of a server share one small connection pool.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from typer.testing import CliRunner

from memwise.cli import app as cli_app
from memwise.server.auth import KeyRing, create_key, hash_key

from .conftest import Keys

SECRET = [{"role": "user", "content": "Globex launch code is swordfish."}]


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest) -> str | None:
    """The server's store: None (SQLite file per tenant) or a fresh Postgres database (schema per tenant)."""
    return None if request.param == "sqlite" else str(request.getfixturevalue("pg_server_db"))


@pytest.fixture
async def client(make_app: Callable[..., Any], keys: Keys, store: str | None) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client against a keyed app on the backend under test; its stores closed afterwards."""
    app = make_app(keys.path, store=store)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
        yield c
    await app.state.memwise.aclose()


async def _globex_memory(client: httpx.AsyncClient, keys: Keys) -> dict[str, object]:
    r = await client.post(
        "/v1/memories",
        json={"messages": SECRET, "user_id": "alice", "metadata": {"tier": "secret"}},
        headers=Keys.bearer(keys.globex),
    )
    assert r.status_code == 200
    return r.json()["memories"][0]  # type: ignore[no-any-return]


async def test_other_tenant_cannot_read_by_id_query_user_or_filter(client: httpx.AsyncClient, keys: Keys) -> None:
    secret = await _globex_memory(client, keys)
    a = Keys.bearer(keys.acme)
    # The same user id in another tenant is another person.
    assert (await client.get(f"/v1/memories/{secret['id']}", params={"user_id": "alice"}, headers=a)).status_code == 404
    history = await client.get(f"/v1/memories/{secret['id']}/history", params={"user_id": "alice"}, headers=a)
    assert history.status_code == 404
    for query in (
        {"query": "launch code swordfish", "user_id": "alice"},
        {"query": "swordfish", "user_id": "alice", "filters": {"tier": "secret"}, "include_history": True},
    ):
        assert (await client.post("/v1/memories/search", json=query, headers=a)).json()["results"] == []
    listed = await client.post("/v1/memories/list", json={"user_id": "alice", "filters": {"tier": "secret"}}, headers=a)
    assert listed.json()["results"] == []
    assert (await client.get("/v1/memories", params={"user_id": "alice", "include_history": True}, headers=a)).json()[
        "results"
    ] == []
    assert (await client.get("/v1/memories/export", params={"user_id": "alice"}, headers=a)).text == ""
    answered = await client.post(
        "/v1/memories/answer", json={"question": "launch code?", "user_id": "alice"}, headers=a
    )
    assert answered.json()["memories"] == []


async def test_other_tenant_cannot_change_or_delete(client: httpx.AsyncClient, keys: Keys) -> None:
    secret = await _globex_memory(client, keys)
    a, g = Keys.bearer(keys.acme), Keys.bearer(keys.globex)
    upd = await client.put(f"/v1/memories/{secret['id']}", json={"text": "hacked", "user_id": "alice"}, headers=a)
    assert (upd.status_code, upd.json()["error"]["code"]) == (404, "not_found")
    assert (
        await client.delete(f"/v1/memories/{secret['id']}", params={"user_id": "alice"}, headers=a)
    ).status_code == 404
    assert (await client.delete("/v1/memories", params={"user_id": "alice"}, headers=a)).json() == {"deleted": 0}
    # Importing a record with the victim's id lands in the importer's own tenant, never in the victim's.
    line = json.dumps({"id": secret["id"], "kind": "turn", "text": "planted", "created_at": 1.0, "scope": {}})
    assert (await client.post("/v1/memories/import", params={"user_id": "alice"}, content=line, headers=a)).json() == {
        "imported": 1,
        "skipped": 0,
    }
    still = await client.get(f"/v1/memories/{secret['id']}", params={"user_id": "alice"}, headers=g)
    assert still.json()["text"] == secret["text"] and still.json()["valid_to"] is None


async def test_users_inside_a_tenant_are_apart(client: httpx.AsyncClient, keys: Keys) -> None:
    secret = await _globex_memory(client, keys)
    g = Keys.bearer(keys.globex)
    assert (await client.get(f"/v1/memories/{secret['id']}", params={"user_id": "bob"}, headers=g)).status_code == 404
    hits = await client.post("/v1/memories/search", json={"query": "swordfish", "user_id": "bob"}, headers=g)
    assert hits.json()["results"] == []


def test_keys_file_stores_only_hashes_and_cli_prints_the_key_once(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    done = CliRunner().invoke(cli_app, ["keys", "create", "--tenant", "acme", "--keys", str(path)])
    assert done.exit_code == 0, done.output
    secret = done.stdout.strip().splitlines()[-1]
    stored = path.read_text()
    assert secret not in stored and hash_key(secret) in stored
    assert KeyRing(path).tenant_for(secret) == "acme"
    bad = CliRunner().invoke(cli_app, ["keys", "create", "--tenant", "../etc", "--keys", str(path)])
    assert bad.exit_code != 0
    listed = CliRunner().invoke(cli_app, ["keys", "list", "--keys", str(path)])
    assert "acme" in listed.stdout and secret not in listed.stdout


async def test_a_key_created_while_running_works_at_once(client: httpx.AsyncClient, keys: Keys) -> None:
    from memwise.server.auth import create_key

    fresh, _ = create_key(keys.path, "initech")
    r = await client.get("/v1/memories", params={"user_id": "x"}, headers=Keys.bearer(fresh))
    assert r.status_code == 200


@pytest.mark.parametrize("store", ["postgres"], indirect=True)
async def test_postgres_tenants_are_separate_schemas(client: httpx.AsyncClient, keys: Keys, store: str) -> None:
    """The isolation above rests on this: each tenant's rows sit in its own schema, and only there."""
    await _globex_memory(client, keys)
    acme = await client.post(
        "/v1/memories",
        json={"messages": [{"content": "Acme likes tea."}], "user_id": "alice"},
        headers=Keys.bearer(keys.acme),
    )
    assert acme.status_code == 200
    with psycopg.connect(store) as conn:
        stored = {
            schema: " ".join(row[0] for row in conn.execute(f'SELECT text FROM "{schema}".records'))
            for schema in ("memwise_t_acme", "memwise_t_globex")
        }
        public = conn.execute("SELECT to_regclass('public.records')").fetchone()
    assert "tea" in stored["memwise_t_acme"] and "swordfish" not in stored["memwise_t_acme"]
    assert "swordfish" in stored["memwise_t_globex"] and "tea" not in stored["memwise_t_globex"]
    assert public == (None,)


TENANTS = 6
POOL = 2  # fewer connections than tenants: every connection serves several tenants in turn


async def _interleave(app: Any, keys: Keys) -> None:
    """Many tenants at once, each writing and reading the same user id; each must see its own memories only."""
    tenant_keys = {f"tenant{i}": create_key(keys.path, f"tenant{i}")[0] for i in range(TENANTS)}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:

        async def one(tenant: str, round_: int) -> dict[str, str]:
            h = Keys.bearer(tenant_keys[tenant])
            text = f"The {tenant} password of round {round_} is secret{tenant}r{round_}."
            added = await client.post(
                "/v1/memories", json={"messages": [{"content": text}], "user_id": "alice"}, headers=h
            )
            assert added.status_code == 200, added.text
            hits = await client.post(
                "/v1/memories/search", json={"query": "password secret", "user_id": "alice"}, headers=h
            )
            listed = await client.get("/v1/memories", params={"user_id": "alice"}, headers=h)
            seen = [hit["memory"]["text"] for hit in hits.json()["results"]] + [
                m["text"] for m in listed.json()["results"]
            ]
            assert seen and all(f"The {tenant} password" in t for t in seen), (tenant, seen)
            return {added.json()["memories"][0]["id"]: tenant}

        owners: dict[str, str] = {}
        for round_ in range(3):
            for found in await asyncio.gather(*(one(t, round_) for t in tenant_keys)):
                owners.update(found)
        # Every memory id answers for its own tenant only.
        for memory_id, owner in owners.items():
            for tenant, key in tenant_keys.items():
                r = await client.get(f"/v1/memories/{memory_id}", params={"user_id": "alice"}, headers=Keys.bearer(key))
                assert r.status_code == (200 if tenant == owner else 404), (memory_id, owner, tenant)


async def test_many_tenants_on_a_smaller_pool_never_see_each_other(
    make_app: Callable[..., Any], keys: Keys, store: str | None
) -> None:
    app = make_app(keys.path, store=store, pg_pool_size=POOL)
    try:
        await _interleave(app, keys)
    finally:
        await app.state.memwise.aclose()


@contextmanager
def _peak_connections(dsn: str) -> Iterator[list[int]]:
    """Sample the client connections to ``dsn``'s database (ours excluded) until the block ends; yields the samples."""
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            while not stop.is_set():
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
                ).fetchone()
                samples.append(int(row[0]) if row else 0)
                stop.wait(0.005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join(timeout=10)


@pytest.mark.parametrize("store", ["postgres"], indirect=True)
async def test_a_server_holds_at_most_its_pool_size_of_connections(
    make_app: Callable[..., Any], keys: Keys, store: str
) -> None:
    """However many tenants it serves, one server process opens at most ``pg_pool_size`` connections."""
    app = make_app(keys.path, store=store, pg_pool_size=POOL)
    with _peak_connections(store) as samples:
        try:
            await _interleave(app, keys)
        finally:
            await app.state.memwise.aclose()
    assert samples and 1 <= max(samples) <= POOL, max(samples, default=None)

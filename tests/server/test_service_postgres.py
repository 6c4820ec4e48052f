"""Two `memwise serve` processes on one Postgres behave as one service: every write kept once, same answers.

Both servers are real processes of the real CLI on loopback ports, sharing one keys file and one
database (one through ``--store``, the other through the ``MEMWISE_STORE`` setting); embeddings come
from the fake OpenAI-compatible server in a process of its own, so start-up loads no model.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import psycopg
import pytest

from memwise.exceptions import ConfigError
from memwise.server.auth import create_key
from memwise.server.config import ServerConfig
from memwise.server.tenants import tenant_schema
from memwise.testing import FakeOpenAIServer

CLIENTS = 8
ADDS_PER_CLIENT = 200


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _serve(args: list[str], env: dict[str, str], log: Path) -> Iterator[str]:
    """A `memwise serve` process; yields its base URL once /health answers, stops it afterwards."""
    exe = shutil.which("memwise", path=str(Path(sys.executable).parent))
    assert exe is not None
    port = _free_port()
    with log.open("w") as out:
        cmd = [exe, "serve", "--port", str(port), *args]
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


async def _client(i: int, urls: list[str], headers: dict[str, str]) -> list[str]:
    """One client's adds, alternating between the servers; returns the texts it sent."""
    sent = []
    async with httpx.AsyncClient(headers=headers, timeout=60) as http:
        for j in range(ADDS_PER_CLIENT):
            text = f"client {i} remembers fact number {j}: the {j}th marble is colour {i * 1000 + j}"
            r = await http.post(
                f"{urls[(i + j) % len(urls)]}/v1/memories",
                json={"messages": [{"role": "user", "content": text}], "user_id": f"user{i}"},
            )
            assert r.status_code == 200, r.text
            sent.append(text)
    return sent


def test_two_servers_on_one_postgres_are_one_service(tmp_path: Path, pg_server_db: str) -> None:
    keys = tmp_path / "keys.json"
    secret, _ = create_key(keys, "acme")
    headers = {"Authorization": f"Bearer {secret}"}
    with FakeOpenAIServer().in_process() as fake, ExitStack() as stack:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("MEMWISE_")},
            "MEMWISE_HOME": str(tmp_path / "home"),
            "MEMWISE_BACKEND": "openai",
            "MEMWISE_BASE_URL": fake.base_url,
            "MEMWISE_MODEL": "m",
            "MEMWISE_EMBED_BACKEND": "openai",
            "MEMWISE_EMBED_BASE_URL": fake.base_url,
        }
        common = ["--keys", str(keys)]
        urls = [
            stack.enter_context(
                _serve([*common, "--data-dir", str(tmp_path / "a"), "--store", pg_server_db], env, tmp_path / "a.log")
            ),
            stack.enter_context(
                _serve(
                    [*common, "--data-dir", str(tmp_path / "b")],
                    {**env, "MEMWISE_STORE": pg_server_db},
                    tmp_path / "b.log",
                )
            ),
        ]

        async def run_clients() -> list[list[str]]:
            return await asyncio.gather(*(_client(i, urls, headers) for i in range(CLIENTS)))

        sent = asyncio.run(run_clients())

        # Every add is kept exactly once, and both servers list the same memories with the same ids.
        listings = []
        for url in urls:
            per_user = {}
            for i in range(CLIENTS):
                r = httpx.get(f"{url}/v1/memories", params={"user_id": f"user{i}", "limit": 1000}, headers=headers)
                assert r.status_code == 200, r.text
                per_user[i] = sorted((m["id"], m["text"]) for m in r.json()["results"])
            listings.append(per_user)
        assert listings[0] == listings[1]
        for i, rows in listings[0].items():
            assert len(rows) == ADDS_PER_CLIENT
            assert sorted(text.split(": ", 1)[1] for _, text in rows) == sorted(sent[i])
        assert sum(len(rows) for rows in listings[0].values()) == CLIENTS * ADDS_PER_CLIENT == 1600
        with psycopg.connect(pg_server_db) as conn:
            row = conn.execute(
                "SELECT count(*), count(DISTINCT text) FROM memwise_t_acme.records WHERE kind = 'turn'"
            ).fetchone()
        assert row == (1600, 1600)

        # The same search on either server: the same ids in the same order (the index is in the database).
        for query, user in (("marble colour 3017", "user3"), ("fact number 150", "user6"), ("remembers", "user0")):
            body = {"query": query, "user_id": user, "top_k": 10}
            replies = [httpx.post(f"{url}/v1/memories/search", json=body, headers=headers) for url in urls]
            hits = [[h["memory"]["id"] for h in r.json()["results"]] for r in replies]
            assert len(hits[0]) == 10 and hits[0] == hits[1], (query, hits)


def test_long_tenant_names_get_distinct_schemas() -> None:
    # Postgres cuts names at 63 bytes: two long tenants sharing a prefix must still get two schemas.
    long_a, long_b = "a" * 60 + "-x", "a" * 60 + "-y"
    schemas = {tenant_schema(t) for t in (long_a, long_b, "a" * 53, "acme")}
    assert len(schemas) == 4
    assert all(len(s.encode()) <= 63 for s in schemas)
    assert tenant_schema("acme") == "memwise_t_acme"


def test_a_server_store_that_is_not_a_dsn_is_refused(tmp_path: Path) -> None:
    # One SQLite file cannot keep tenants apart; the server says so instead of sharing it.
    with pytest.raises(ConfigError, match="not a postgresql:// DSN"):
        ServerConfig(data_dir=tmp_path, store=str(tmp_path / "one.sqlite3"))

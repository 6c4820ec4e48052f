"""Two `memwise serve` processes on one Postgres behave as one service: writes, searches and jobs alike.

Every write is kept once, both answer a search the same, and a job started on one is reported by the
other, as failed once the server running it is killed.

Both servers are real processes of the real CLI on loopback ports, sharing one keys file and one
database (one through ``--store``, the other through the ``MEMWISE_STORE`` setting); embeddings come
from the fake OpenAI-compatible server in a process of its own, so start-up loads no model.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from memwise.exceptions import ConfigError
from memwise.server.auth import create_key
from memwise.server.config import ServerConfig
from memwise.server.jobs import STOPPED
from memwise.server.tenants import tenant_schema
from memwise.testing import FakeOpenAIServer
from memwise.testing.services import free_port, wait_for_health

CLIENTS = 8
ADDS_PER_CLIENT = 200


@contextmanager
def _serve(args: list[str], env: dict[str, str], log: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A `memwise serve` process; yields its base URL and process once /health answers, stops it afterwards."""
    exe = shutil.which("memwise", path=str(Path(sys.executable).parent))
    assert exe is not None
    port = free_port()
    with log.open("w") as out:
        cmd = [exe, "serve", "--port", str(port), *args]
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_for_health(url, proc), log.read_text()
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(timeout=20)


@contextmanager
def _two_servers(tmp_path: Path, dsn: str, keys: Path) -> Iterator[list[tuple[str, subprocess.Popen[bytes]]]]:
    """Two `memwise serve` processes on one database and keys file, embedding through a fake server."""
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
        common = ["--keys", str(keys), "--pg-pool-size", "4"]
        yield [
            stack.enter_context(
                _serve([*common, "--data-dir", str(tmp_path / "a"), "--store", dsn], env, tmp_path / "a.log")
            ),
            stack.enter_context(
                _serve([*common, "--data-dir", str(tmp_path / "b")], {**env, "MEMWISE_STORE": dsn}, tmp_path / "b.log")
            ),
        ]


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
    with _two_servers(tmp_path, pg_server_db, keys) as servers:
        urls = [url for url, _ in servers]

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


def _slow_ingest(conversations: int) -> str:
    """An uploaded JSONL of many one-turn conversations: an ingest long enough to kill its server mid-way."""
    lines = (
        {
            "conversation_id": f"c{i}",
            "session_id": f"c{i}-s0",
            "timestamp": "2023-05-01T13:56:00",
            "turns": [{"speaker": "Ann", "content": f"My locker number {i} holds a blue scarf."}],
        }
        for i in range(conversations)
    )
    return "\n".join(json.dumps(line) for line in lines) + "\n"


def _poll(url: str, job_id: str, headers: dict[str, str], until: Any, timeout_s: float = 60) -> dict[str, Any]:
    """GET the job from ``url`` until ``until(job)`` holds; returns that job."""
    deadline = time.monotonic() + timeout_s
    while True:
        job: dict[str, Any] = httpx.get(f"{url}/v1/jobs/{job_id}", headers=headers).json()
        if until(job):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.1)


def test_a_job_is_reported_by_the_other_server_and_fails_when_its_server_is_killed(
    tmp_path: Path, pg_server_db: str
) -> None:
    keys = tmp_path / "keys.json"
    acme, _ = create_key(keys, "acme")
    globex, _ = create_key(keys, "globex")
    a, g = {"Authorization": f"Bearer {acme}"}, {"Authorization": f"Bearer {globex}"}
    with _two_servers(tmp_path, pg_server_db, keys) as [(url_a, proc_a), (url_b, _)]:
        # A job started on one server is reported by the other, to its tenant only.
        started = httpx.post(f"{url_a}/v1/jobs/ingest", json={"content": _slow_ingest(3)}, headers=a)
        assert started.status_code == 202, started.text
        job_id = started.json()["id"]
        done = _poll(url_b, job_id, a, lambda job: job["status"] in ("done", "failed"))
        assert done["status"] == "done" and done["progress"] == {"done": 3, "total": 3}, done
        assert done == httpx.get(f"{url_a}/v1/jobs/{job_id}", headers=a).json()
        assert httpx.get(f"{url_b}/v1/jobs/{job_id}", headers=g).status_code == 404

        # A long job: its progress shows on the other server; kill its server and it reads failed there.
        long_job = httpx.post(f"{url_a}/v1/jobs/ingest", json={"content": _slow_ingest(4000)}, headers=a, timeout=60)
        assert long_job.status_code == 202, long_job.text
        long_id = long_job.json()["id"]
        running = _poll(url_b, long_id, a, lambda job: job["status"] == "running" and job["progress"]["done"] > 0)
        assert running["progress"]["total"] == 4000
        proc_a.kill()
        proc_a.wait(timeout=20)
        failed = _poll(url_b, long_id, a, lambda job: job["status"] != "running", timeout_s=10)
        assert failed["status"] == "failed" and failed["error"] == STOPPED, failed
        assert failed["progress"]["done"] < 4000
        # What it wrote before the kill stays.
        kept = httpx.get(f"{url_b}/v1/memories", params={"user_id": "c0"}, headers=a).json()["results"]
        assert len(kept) == 1

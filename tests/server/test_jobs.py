"""Ingest and consolidation jobs: progress, failure with the error, owned by the tenant that started them.

Jobs are kept in the tenant's store, so every server on it reports them, and one whose server is gone
is reported failed; those tests run on SQLite and on Postgres.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from memwise.server.jobs import STOPPED, Job, JobManager
from memwise.store.base import JobLog
from memwise.store.postgres import PostgresStore
from memwise.store.sqlite import SQLiteStore

from .conftest import Keys


def _locomo_like_jsonl(conversations: int) -> str:
    """A small LoCoMo-like log: per conversation two dated sessions of two speakers."""
    lines = []
    for c in range(conversations):
        for s in range(2):
            lines.append(
                {
                    "conversation_id": f"conv-{c}",
                    "session_id": f"conv-{c}-s{s}",
                    "timestamp": f"2023-05-0{s + 1}T13:56:00",
                    "turns": [
                        {"speaker": "Caroline", "content": f"I went to the support group (conv {c}, session {s})."},
                        {"speaker": "Melanie", "content": "That sounds powerful."},
                    ],
                }
            )
    return "\n".join(json.dumps(line) for line in lines) + "\n"


async def _wait(client: httpx.AsyncClient, job_id: str, headers: dict[str, str]) -> dict[str, Any]:
    for _ in range(500):
        job = (await client.get(f"/v1/jobs/{job_id}", headers=headers)).json()
        if job["status"] in ("done", "failed"):
            return job  # type: ignore[no-any-return]
        await asyncio.sleep(0.01)
    raise AssertionError("job did not finish")


async def test_ingest_job_reports_progress_and_ends_done(client: httpx.AsyncClient, keys: Keys) -> None:
    a = Keys.bearer(keys.acme)
    started = await client.post("/v1/jobs/ingest", json={"content": _locomo_like_jsonl(3)}, headers=a)
    assert started.status_code == 202
    assert started.json()["status"] in ("queued", "running")
    job = await _wait(client, started.json()["id"], a)
    assert job["status"] == "done", job
    assert job["progress"] == {"done": 3, "total": 3}
    assert job["result"]["conversations"] == 3 and job["result"]["units_written"] == 12
    # One user per conversation, as the CLI ingest does.
    mem = await client.get("/v1/memories", params={"user_id": "conv-1"}, headers=a)
    assert len(mem.json()["results"]) == 4


async def test_failing_job_ends_failed_with_its_error(client: httpx.AsyncClient, keys: Keys) -> None:
    a = Keys.bearer(keys.acme)
    bad = _locomo_like_jsonl(1) + '{"session_id": "s9", "turns": "not a list"}\n'
    job = await _wait(client, (await client.post("/v1/jobs/ingest", json={"content": bad}, headers=a)).json()["id"], a)
    assert job["status"] == "failed"
    assert job["error"]["code"] == "invalid_dataset" and "turns" in job["error"]["message"]


async def test_another_tenant_cannot_see_a_job(client: httpx.AsyncClient, keys: Keys) -> None:
    a, g = Keys.bearer(keys.acme), Keys.bearer(keys.globex)
    job_id = (await client.post("/v1/jobs/ingest", json={"content": _locomo_like_jsonl(1)}, headers=a)).json()["id"]
    await _wait(client, job_id, a)
    other = await client.get(f"/v1/jobs/{job_id}", headers=g)
    assert (other.status_code, other.json()["error"]["code"]) == (404, "not_found")
    # and the ingest wrote into acme's memory only
    assert (await client.get("/v1/memories", params={"user_id": "conv-0"}, headers=g)).json()["results"] == []


async def test_ingest_path_must_stay_inside_the_ingest_dir(
    make_app: Callable[..., Any], keys: Keys, tmp_path: Path
) -> None:
    inside = tmp_path / "datasets"
    inside.mkdir()
    (tmp_path / "private.jsonl").write_text(_locomo_like_jsonl(1))
    a = Keys.bearer(keys.acme)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=make_app(keys.path)), base_url="http://t") as c:
        off = await c.post("/v1/jobs/ingest", json={"path": "private.jsonl"}, headers=a)
        assert off.status_code == 400 and "--ingest-dir" in off.json()["error"]["message"]
    app = make_app(keys.path, ingest_dir=inside)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        escape = await c.post("/v1/jobs/ingest", json={"path": "../private.jsonl"}, headers=a)
        assert escape.status_code == 400 and "outside" in escape.json()["error"]["message"]


async def test_finished_jobs_are_forgotten_past_the_cap() -> None:
    jobs = JobManager(max_kept=2)

    async def work(job: Job) -> dict[str, Any]:
        return {}

    first = await jobs.start("acme", "x", work)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    second = await jobs.start("acme", "x", work)
    third = await jobs.start("acme", "x", work)
    await jobs.aclose()
    assert await jobs.get("acme", first.id) is None
    assert await jobs.get("acme", second.id) is not None and await jobs.get("acme", third.id) is not None


async def test_a_job_that_crashes_ends_failed_not_running(caplog: pytest.LogCaptureFixture) -> None:
    jobs = JobManager()

    async def work(job: Job) -> dict[str, Any]:
        job.progress(1, 3)
        raise RuntimeError("bug in the work function")

    job = await jobs.start("acme", "x", work)
    for _ in range(100):
        if job.status == "failed":
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0)
    assert job.status == "failed" and job.error == {
        "code": "internal_error",
        "message": "RuntimeError: bug in the work function",
    }
    assert job.done == 1 and job.total == 3 and job.finished_at is not None
    assert "crashed" in caplog.text


# -- jobs kept in the tenant's store ---------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str | None:
    """The servers' store: None (SQLite file per tenant) or a fresh Postgres database (schema per tenant)."""
    return None if request.param == "sqlite" else str(request.getfixturevalue("pg_server_db"))


@pytest.fixture
def job_log(backend: str | None, tmp_path: Path) -> Iterator[JobLog]:
    """One tenant's store, as the job log it also is."""
    store: SQLiteStore | PostgresStore = (
        SQLiteStore(tmp_path / "jobs.sqlite3") if backend is None else PostgresStore(backend, schema="memwise_t_acme")
    )
    yield store
    store.close()


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


async def test_a_job_is_reported_by_every_server_on_the_store(
    make_app: Callable[..., Any], keys: Keys, backend: str | None
) -> None:
    # Two apps on one data folder or database: two servers behind a load balancer, as far as jobs go.
    apps = [make_app(keys.path, store=backend) for _ in range(2)]
    a, g = Keys.bearer(keys.acme), Keys.bearer(keys.globex)
    try:
        clients = [httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") for app in apps]
        async with clients[0] as one, clients[1] as other:
            started = await one.post("/v1/jobs/ingest", json={"content": _locomo_like_jsonl(3)}, headers=a)
            job_id = started.json()["id"]
            seen = (await other.get(f"/v1/jobs/{job_id}", headers=a)).json()
            assert seen["id"] == job_id and seen["kind"] == "ingest" and seen["status"] in ("queued", "running", "done")
            here = await _wait(one, job_id, a)
            there = await _wait(other, job_id, a)
            assert there == here and there["status"] == "done" and there["progress"] == {"done": 3, "total": 3}
            # Another tenant still cannot see it, from either server.
            for client in (one, other):
                assert (await client.get(f"/v1/jobs/{job_id}", headers=g)).status_code == 404
    finally:
        for app in apps:
            await app.state.memwise.aclose()


async def test_a_job_whose_server_is_gone_is_failed_not_running(job_log: JobLog) -> None:
    jobs = JobManager(logs=lambda tenant: job_log, stale_after_s=60)
    now = time.time()
    cases = {
        "dead_pid": Job(id="job_dead", tenant="acme", kind="ingest", status="running", pid=_dead_pid()),
        "silent": Job(id="job_silent", tenant="acme", kind="ingest", status="running", host="elsewhere"),
        "alive": Job(id="job_alive", tenant="acme", kind="ingest", status="running", host="elsewhere"),
    }
    for name, job in cases.items():
        job.heartbeat_at = now - 600 if name == "silent" else now
        job_log.save_job(job.id, job.status, job.to_state())
    for name in ("dead_pid", "silent"):
        reported = await jobs.get("acme", cases[name].id)
        assert reported is not None and reported.status == "failed" and reported.error == STOPPED, name
        assert "the server running it stopped; re-run it" in STOPPED["message"]
    alive = await jobs.get("acme", "job_alive")
    assert alive is not None and alive.status == "running"
    # The log belongs to acme: asked as another tenant, the job does not exist.
    assert await jobs.get("globex", "job_alive") is None


async def test_a_job_cut_by_shutdown_is_saved_failed(job_log: JobLog) -> None:
    blocked = asyncio.Event()

    async def work(job: Job) -> dict[str, Any]:
        job.progress(1, 5)
        await blocked.wait()
        return {}

    first = JobManager(logs=lambda tenant: job_log, heartbeat_s=0.01)
    job = await first.start("acme", "ingest", work)
    for _ in range(200):
        state = job_log.load_job(job.id)
        if state is not None and state["done"] == 1:
            break
        await asyncio.sleep(0.01)
    assert state is not None and state["status"] == "running" and state["done"] == 1  # the heartbeat saved progress
    await first.aclose()
    restarted = await JobManager(logs=lambda tenant: job_log).get("acme", job.id)
    assert restarted is not None and restarted.status == "failed" and restarted.error == STOPPED


def test_the_job_log_keeps_running_jobs_and_the_newest_finished(job_log: JobLog) -> None:
    for i, status in enumerate(["done", "failed", "running", "done"]):
        job_log.save_job(f"job_{i}", status, {"id": f"job_{i}", "n": i})
        time.sleep(0.002)
    assert job_log.load_job("job_1") == {"id": "job_1", "n": 1}
    assert job_log.prune_jobs(keep=1) == 2
    assert [job_log.load_job(f"job_{i}") is not None for i in range(4)] == [False, False, True, True]
    assert job_log.load_job("job_nope") is None


async def test_how_long_a_silent_job_counts_as_running_is_a_server_setting(
    make_app: Callable[..., Any], keys: Keys
) -> None:
    from memwise.exceptions import ConfigError
    from memwise.server.config import ServerConfig

    patient, quick = make_app(keys.path), make_app(keys.path, job_stale_after_s=20)
    a = Keys.bearer(keys.acme)
    try:
        # A job of a server on another host that last saved 30 s ago (it saves every 2 s while alive).
        job = Job(id="job_quiet", tenant="acme", kind="ingest", status="running", host="elsewhere")
        job.heartbeat_at = time.time() - 30
        patient.state.memwise.tenants.job_log("acme").save_job(job.id, job.status, job.to_state())
        seen = {}
        for name, app in (("patient", patient), ("quick", quick)):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
                seen[name] = (await c.get("/v1/jobs/job_quiet", headers=a)).json()["status"]
        assert seen == {"patient": "running", "quick": "failed"}
    finally:
        for app in (patient, quick):
            await app.state.memwise.aclose()
    with pytest.raises(ConfigError, match="job_stale_after_s must be > 10"):
        ServerConfig(data_dir=Path("unused"), job_stale_after_s=4)

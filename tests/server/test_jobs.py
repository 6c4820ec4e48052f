"""Ingest and consolidation jobs: progress, failure with the error, owned by the tenant that started them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from memwise.server.jobs import Job, JobManager

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

    first = jobs.start("acme", "x", work)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    second = jobs.start("acme", "x", work)
    third = jobs.start("acme", "x", work)
    await jobs.aclose()
    assert jobs.get("acme", first.id) is None
    assert jobs.get("acme", second.id) is not None and jobs.get("acme", third.id) is not None


async def test_a_job_that_crashes_ends_failed_not_running(caplog: pytest.LogCaptureFixture) -> None:
    jobs = JobManager()

    async def work(job: Job) -> dict[str, Any]:
        job.progress(1, 3)
        raise RuntimeError("bug in the work function")

    job = jobs.start("acme", "x", work)
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

"""Long work as jobs: ingest of a dataset file and consolidation run beside the requests, not in one.

A job belongs to the tenant that created it: looking up another tenant's job id answers exactly like
an unknown id. A job runs in the server process that started it, and its state is kept in the tenant's
store (a ``jobs`` table beside the records, see :class:`~memwise.store.base.JobLog`), so every server
process on that store reports it, and a restarted one still knows it. The process running a job
saves it as its status changes and every :data:`HEARTBEAT_S` seconds (progress included). A job left
``queued`` or ``running`` by a process that is gone (same host and its pid dead, or no save for
:data:`STALE_AFTER_S` seconds) is reported ``failed`` with :data:`STOPPED` as its error: the memory it
wrote stays, and re-running an ingest is a no-op for what is in already. Finished jobs are kept up to
a cap per tenant, the oldest finished forgotten first.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from memwise.exceptions import MemwiseError
from memwise.server.errors import error_body
from memwise.store.base import FINISHED_JOB_STATUSES, JobLog, new_id

Status = Literal["queued", "running", "done", "failed"]
logger = logging.getLogger(__name__)

HEARTBEAT_S = 2.0
"""How often the process running a job saves it (progress and a fresh ``heartbeat_at``)."""
STALE_AFTER_S = 60.0
"""A queued or running job not saved for this long is reported failed: its server stopped or hangs."""
STOPPED = {
    "code": "server_stopped",
    "message": "the server running it stopped; re-run it: ingest is a no-op for what is in already",
}
"""The error of a job whose server went away before it finished."""


def _log_crash(task: asyncio.Task[None]) -> None:
    """Log a job that died of a bug (its state already says failed), so the traceback is not lost."""
    if not task.cancelled() and task.exception() is not None:
        logger.error("job task %s crashed", task.get_name(), exc_info=task.exception())


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine (signal 0 checks without sending anything)."""
    if os.name != "posix":
        return True  # no cheap check: the heartbeat decides
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it exists
    return True


@dataclass
class Job:
    """One job's state as ``GET /v1/jobs/{id}`` shows it, plus the process that runs it."""

    id: str
    tenant: str
    kind: str
    status: Status = "queued"
    done: int = 0
    total: int | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    created_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    heartbeat_at: float = field(default_factory=time.time)

    def progress(self, done: int, total: int | None = None) -> None:
        """Record progress; the work function calls it as it goes (saved with the next heartbeat)."""
        self.done = done
        if total is not None:
            self.total = total

    def to_state(self) -> dict[str, Any]:
        """The job as the JSON document its tenant's store keeps."""
        return asdict(self)

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Job:
        """A job read back from its tenant's store (unknown keys, from a newer memwise, ignored).

        A state without a heartbeat counts as long silent, never as alive now.
        """
        known = {name: state[name] for name in cls.__dataclass_fields__ if name in state}
        known.setdefault("heartbeat_at", 0.0)
        return cls(**known)

    def orphaned(self, now: float, *, stale_after_s: float = STALE_AFTER_S) -> bool:
        """Whether the job cannot finish any more: unfinished, and its process is gone or silent too long.

        A dead pid counts on this host only (another machine's pids mean nothing here); the same pid
        as ours may be another server in this process or a reused pid, so only the heartbeat decides it.
        """
        if self.status in FINISHED_JOB_STATUSES:
            return False
        if self.host == socket.gethostname() and self.pid != os.getpid() and not pid_alive(self.pid):
            return True
        return now - self.heartbeat_at > stale_after_s


Work = Callable[[Job], Awaitable[dict[str, Any]]]
LogFor = Callable[[str], JobLog]
"""The job log (store) of a tenant."""


class JobManager:
    """Starts jobs as asyncio tasks on the server's loop and keeps their state in each tenant's store.

    Args:
        max_kept: finished jobs remembered per tenant (and in this process).
        logs: the job log of a tenant; None keeps jobs in this process only (as a bare manager in tests).
        heartbeat_s: how often running jobs are saved.
        stale_after_s: how long an unsaved running job of another process counts as running.
    """

    def __init__(
        self,
        *,
        max_kept: int = 1000,
        logs: LogFor | None = None,
        heartbeat_s: float = HEARTBEAT_S,
        stale_after_s: float = STALE_AFTER_S,
    ) -> None:
        self.max_kept = max_kept
        self.heartbeat_s = heartbeat_s
        self.stale_after_s = stale_after_s
        self._logs = logs
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self._heartbeat: asyncio.Task[None] | None = None

    async def start(self, tenant: str, kind: str, work: Work) -> Job:
        """Queue ``work`` as a job of ``tenant``; returns once the job is saved, before it runs."""
        job = Job(id="job_" + new_id(), tenant=tenant, kind=kind)
        await self._save(job)
        self._jobs[job.id] = job
        self._forget_old()
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._run(job, work), name=f"memwise-{job.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_crash)
        if self._logs is not None and self._heartbeat is None:
            self._heartbeat = loop.create_task(self._beat(), name="memwise-job-heartbeat")
        return job

    async def _save(self, job: Job) -> None:
        """Write the job to its tenant's store (off the loop: a store call blocks)."""
        if self._logs is None:
            return
        logs = self._logs
        job.heartbeat_at = time.time()
        state = job.to_state()
        await asyncio.to_thread(lambda: logs(job.tenant).save_job(job.id, job.status, state))

    async def _run(self, job: Job, work: Work) -> None:
        job.status = "running"
        try:
            await self._save(job)
            job.result = await work(job)
        except MemwiseError as exc:
            # An expected failure (bad file, failing model): the job says so; the server goes on.
            job.status, job.error = "failed", error_body(exc)["error"]
        except OSError as exc:
            job.status, job.error = "failed", {"code": "io_error", "message": str(exc)}
        except asyncio.CancelledError:
            # Server shutdown: the job will not finish, and every server must say so.
            job.status, job.error = "failed", dict(STOPPED)
            raise
        except Exception as exc:
            # A bug: the job must not look "running" forever, and the traceback must reach the log.
            job.status, job.error = "failed", {"code": "internal_error", "message": f"{type(exc).__name__}: {exc}"}
            raise
        else:
            job.status = "done"
        finally:
            job.finished_at = time.time()
            await self._finish(job)

    async def _finish(self, job: Job) -> None:
        """Save the finished job and prune the tenant's old ones; a store failure is logged, not raised."""
        if self._logs is None:
            return
        logs = self._logs
        try:
            await self._save(job)
            await asyncio.to_thread(lambda: logs(job.tenant).prune_jobs(self.max_kept))
        except MemwiseError:
            logger.exception("could not save the end of job %s", job.id)

    async def _beat(self) -> None:
        """Save every unfinished job of this process every ``heartbeat_s``, so other servers see it alive."""
        while True:
            await asyncio.sleep(self.heartbeat_s)
            for job in [j for j in self._jobs.values() if j.status not in FINISHED_JOB_STATUSES]:
                try:
                    await self._save(job)
                except MemwiseError:
                    # A store hiccup: the next beat tries again; only a long silence marks the job failed.
                    logger.warning("could not save job %s's heartbeat", job.id, exc_info=True)

    async def get(self, tenant: str, job_id: str) -> Job | None:
        """The job, if it exists and belongs to ``tenant``; None otherwise (no existence leak).

        A job of this process is answered from memory; any other from the tenant's store, reported
        failed (:data:`STOPPED`) if the process running it is gone.
        """
        job = self._jobs.get(job_id)
        if job is not None:
            return job if job.tenant == tenant else None
        if self._logs is None:
            return None
        logs = self._logs
        state = await asyncio.to_thread(lambda: logs(tenant).load_job(job_id))
        if state is None or state.get("tenant") != tenant:
            return None
        stored = Job.from_state(state)
        if stored.orphaned(time.time(), stale_after_s=self.stale_after_s):
            stored.status, stored.error = "failed", dict(STOPPED)
        return stored

    def _forget_old(self) -> None:
        finished = [jid for jid, job in self._jobs.items() if job.status in FINISHED_JOB_STATUSES]
        excess = len(self._jobs) - self.max_kept
        for jid in finished[: max(excess, 0)]:
            del self._jobs[jid]

    async def aclose(self) -> None:
        """Cancel running jobs (server shutdown; they are saved as failed) and wait for them to unwind."""
        tasks = list(self._tasks)
        if self._heartbeat is not None:
            tasks.append(self._heartbeat)
            self._heartbeat = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

"""Long work as jobs: ingest of a dataset file and consolidation run beside the requests, not in one.

A job belongs to the tenant that created it: looking up another tenant's job id answers exactly like
an unknown id. Jobs live in the server process (a restart forgets them; the memory they wrote stays,
and re-running an ingest is a no-op for what is in already). Finished jobs are kept up to a cap, the
oldest finished forgotten first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from memwise.exceptions import MemwiseError
from memwise.server.errors import error_body
from memwise.store.base import new_id

Status = Literal["queued", "running", "done", "failed"]
logger = logging.getLogger(__name__)


def _log_crash(task: asyncio.Task[None]) -> None:
    """Log a job that died of a bug (its state already says failed), so the traceback is not lost."""
    if not task.cancelled() and task.exception() is not None:
        logger.error("job task %s crashed", task.get_name(), exc_info=task.exception())


@dataclass
class Job:
    """One job's state as ``GET /v1/jobs/{id}`` shows it."""

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

    def progress(self, done: int, total: int | None = None) -> None:
        """Record progress; the work function calls it as it goes."""
        self.done = done
        if total is not None:
            self.total = total


Work = Callable[[Job], Awaitable[dict[str, Any]]]


class JobManager:
    """Starts jobs as asyncio tasks on the server's loop and remembers them per tenant."""

    def __init__(self, *, max_kept: int = 1000) -> None:
        self.max_kept = max_kept
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, tenant: str, kind: str, work: Work) -> Job:
        """Queue ``work`` as a job of ``tenant``; returns at once."""
        job = Job(id="job_" + new_id(), tenant=tenant, kind=kind)
        self._jobs[job.id] = job
        self._forget_old()
        task = asyncio.get_running_loop().create_task(self._run(job, work), name=f"memwise-{job.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_crash)
        return job

    async def _run(self, job: Job, work: Work) -> None:
        job.status = "running"
        try:
            job.result = await work(job)
        except MemwiseError as exc:
            # An expected failure (bad file, failing model): the job says so; the server goes on.
            job.status, job.error = "failed", error_body(exc)["error"]
        except OSError as exc:
            job.status, job.error = "failed", {"code": "io_error", "message": str(exc)}
        except Exception as exc:
            # A bug: the job must not look "running" forever, and the traceback must reach the log.
            job.status, job.error = "failed", {"code": "internal_error", "message": f"{type(exc).__name__}: {exc}"}
            raise
        else:
            job.status = "done"
        finally:
            job.finished_at = time.time()

    def get(self, tenant: str, job_id: str) -> Job | None:
        """The job, if it exists and belongs to ``tenant``; None otherwise (no existence leak)."""
        job = self._jobs.get(job_id)
        return job if job is not None and job.tenant == tenant else None

    def _forget_old(self) -> None:
        finished = [jid for jid, job in self._jobs.items() if job.status in ("done", "failed")]
        excess = len(self._jobs) - self.max_kept
        for jid in finished[: max(excess, 0)]:
            del self._jobs[jid]

    async def aclose(self) -> None:
        """Cancel running jobs (server shutdown) and wait for them to unwind."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

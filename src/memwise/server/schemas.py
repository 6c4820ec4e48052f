"""Request and response bodies of the REST API (pydantic; they make the OpenAPI document at /docs).

Sizes that depend on the server's configuration (messages per add, top_k, limit) are checked in the
routes against :class:`~memwise.server.config.ServerConfig`; the bounds here are the fixed ones.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from memwise.facts.consolidate import ConsolidationReport
from memwise.facts.ingest import IngestReport
from memwise.server.jobs import Job
from memwise.store.base import Record, ScoredRecord

UserId = Field(min_length=1, max_length=256, description="whose memory, inside the caller's tenant")
MetadataValue = str | int | float | bool | None
FILTERS_HELP = (
    'metadata filter, mem0-style: {"topic": "pets"}, {"year": {"gte": 2020}}, {"tag": {"in": ["a", "b"]}}, '
    '{"AND": [...]}, {"OR": [...]}, {"NOT": {...}}'
)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Message(_Body):
    """One chat message to remember; ``role`` is also the speaker name stored with it."""

    role: str = Field(default="user", min_length=1, max_length=128, description="speaker or chat role")
    content: str = Field(min_length=1, max_length=100_000)


class AddRequest(_Body):
    """Body of ``POST /v1/memories``: messages of one session, stored for ``user_id``."""

    messages: list[Message] = Field(min_length=1)
    user_id: str = UserId
    agent_id: str | None = Field(default=None, min_length=1, max_length=256)
    run_id: str | None = Field(default=None, min_length=1, max_length=256)
    session_time: datetime | None = Field(default=None, description="when the conversation happened")
    metadata: dict[str, MetadataValue] = Field(default_factory=dict, description="flat tags, filterable")


class MemoryOut(BaseModel):
    """A stored memory as the API returns it: scope ids, caller metadata and validity times."""

    id: str
    kind: str
    text: str
    user_id: str | None
    agent_id: str | None
    run_id: str | None
    metadata: dict[str, Any]
    ts: float | None = Field(description="event time (epoch seconds), e.g. the session date")
    created_at: float
    valid_from: float | None
    valid_to: float | None = Field(description="set once the memory was updated or deleted")

    @classmethod
    def of(cls, record: Record) -> MemoryOut:
        """The API view of a stored record: its fields of the same names."""
        return cls.model_validate(record, from_attributes=True)


class AddResponse(BaseModel):
    """The memories an add wrote and the ingest report (what was new, what was already there)."""

    memories: list[MemoryOut]
    report: dict[str, Any]

    @classmethod
    def of(cls, report: IngestReport, records: list[Record]) -> AddResponse:
        """The response for an add that produced ``report`` and wrote ``records``."""
        return cls(memories=[MemoryOut.of(r) for r in records], report=report.to_dict())


class SearchRequest(_Body):
    """Body of ``POST /v1/memories/search``; ``since``/``until`` bound the event time."""

    query: str = Field(min_length=1, max_length=10_000)
    user_id: str = UserId
    agent_id: str | None = None
    run_id: str | None = None
    top_k: int = Field(default=10, ge=1)
    since: datetime | None = None
    until: datetime | None = None
    include_history: bool = False
    filters: dict[str, Any] = Field(default_factory=dict, description=FILTERS_HELP)


class Hit(BaseModel):
    """A memory and its retrieval score (higher is better; comparable within one search only)."""

    memory: MemoryOut
    score: float

    @classmethod
    def of(cls, hit: ScoredRecord) -> Hit:
        """The API view of a scored search result."""
        return cls(memory=MemoryOut.of(hit.record), score=hit.score)


class SearchResponse(BaseModel):
    """Search results, best first, under ``results`` as mem0 clients expect."""

    results: list[Hit]


class ListRequest(_Body):
    """Body of the list call: one user's memories, optionally with their superseded versions."""

    user_id: str = UserId
    agent_id: str | None = None
    run_id: str | None = None
    include_history: bool = False
    limit: int | None = Field(default=None, ge=1)
    offset: int = Field(default=0, ge=0, description="memories to skip: the next_offset of the previous page")
    filters: dict[str, Any] = Field(default_factory=dict, description=FILTERS_HELP)


class MemoriesResponse(BaseModel):
    """A page of memories under ``results``, oldest first, and where the next page starts."""

    results: list[MemoryOut]
    next_offset: int | None = Field(
        default=None, description="pass as offset for the next page; null when there are no more memories"
    )


class UpdateRequest(_Body):
    """New text for one memory; the old version stays in its history."""

    text: str = Field(min_length=1, max_length=100_000)
    user_id: str = UserId


class DeletedResponse(BaseModel):
    """How many memories a delete retired."""

    deleted: int


class AnswerRequest(_Body):
    """A question answered from ``user_id``'s memories; ``question_date`` anchors 'last week' and the like."""

    question: str = Field(min_length=1, max_length=10_000)
    user_id: str = UserId
    question_date: datetime | None = Field(default=None, description="'today' for the question")
    top_k: int = Field(default=20, ge=1)


class AnswerResponse(BaseModel):
    """The model's answer and the memories it was shown."""

    answer: str
    memories: list[Hit]
    question_date: str | None


class ImportResponse(BaseModel):
    """How many records an import wrote and how many it skipped as already present."""

    imported: int
    skipped: int


class IngestJobRequest(_Body):
    """A dataset to ingest in the background: a file under the server's ingest dir, or uploaded JSONL."""

    path: str | None = Field(default=None, description="a dataset file under the server's --ingest-dir")
    content: str | None = Field(default=None, description="an uploaded JSONL of sessions (memwise's format)")
    format: Literal["auto", "locomo", "longmemeval", "jsonl"] = "auto"
    user_id: str | None = Field(default=None, min_length=1, max_length=256, description="default: per conversation")


class ConsolidateJobRequest(_Body):
    """Background consolidation of one user's memory; ``threshold`` is the cosine a candidate needs."""

    user_id: str = UserId
    threshold: float = Field(default=0.7, gt=0.0, le=1.0)


class JobOut(BaseModel):
    """A background job's state; ``result`` or ``error`` is set once it has finished."""

    id: str
    kind: str
    status: Literal["queued", "running", "done", "failed"]
    progress: dict[str, int | None]
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    created_at: float
    finished_at: float | None

    @classmethod
    def of(cls, job: Job) -> JobOut:
        """The API view of a job, progress as ``{"done": ..., "total": ...}``."""
        return cls(
            id=job.id,
            kind=job.kind,
            status=job.status,
            progress={"done": job.done, "total": job.total},
            result=job.result,
            error=job.error,
            created_at=job.created_at,
            finished_at=job.finished_at,
        )


def consolidation_result(report: ConsolidationReport) -> dict[str, Any]:
    """A consolidation report as a job result."""
    return report.to_dict()

"""The REST API: a FastAPI app over the tenant memories, built by :func:`create_app`.

Every ``/v1`` route resolves the caller's tenant from its API key first and reaches that tenant's
memory only; ``user_id`` then selects a user inside the tenant. ``/health`` (the process answers) and
``/ready`` (store and embedder usable) need no key; neither shows any memory.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from memwise.embed.base import Embedder
from memwise.exceptions import ConfigError, DatasetError, MemwiseError
from memwise.facts.ingest import IngestSummary
from memwise.facts.ownership import owner_of
from memwise.facts.readers import iter_conversations
from memwise.llm.base import ChatModel
from memwise.server import schemas as s
from memwise.server.auth import KeyRing
from memwise.server.config import ServerConfig
from memwise.server.errors import ApiError, classify, error_body
from memwise.server.jobs import Job, JobManager
from memwise.server.limits import BodyLimit
from memwise.server.service import MemoryService
from memwise.server.tenants import TenantRegistry

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <key>")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="X-API-Key: <key>")
_HTTP_CODES = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}


@dataclass
class ServerState:
    """What every request needs, built once per app."""

    config: ServerConfig
    keys: KeyRing | None
    tenants: TenantRegistry
    jobs: JobManager
    embedder: Embedder
    llm: ChatModel | None
    owns_models: bool

    def tenant_of(self, key: str | None) -> str:
        """The caller's tenant; without a keys file every caller is the default tenant."""
        if self.keys is None:
            return self.config.default_tenant
        tenant = self.keys.tenant_for(key)
        if tenant is None:
            raise ApiError(
                401,
                "unauthorized",
                "missing or unknown API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
            )
        return tenant

    async def aclose(self) -> None:
        """Stop the jobs, then close every tenant's store, then the models if this state built them."""
        await self.jobs.aclose()
        self.tenants.close()
        if self.owns_models:
            await self.embedder.aclose()
            if self.llm is not None:
                await self.llm.aclose()


def _state(request: Request) -> ServerState:
    return request.app.state.memwise  # type: ignore[no-any-return]


async def _tenant(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key)],
) -> str:
    key = bearer.credentials if bearer is not None else api_key
    return _state(request).tenant_of(key)


Tenant = Annotated[str, Depends(_tenant)]
State = Annotated[ServerState, Depends(_state)]
UserId = Annotated[str, Query(min_length=1, max_length=256)]
"""Whose memory a query-string request reads or changes (JSON bodies carry their own ``user_id``)."""


def _memory(state: ServerState, tenant: str) -> MemoryService:
    return state.tenants.memory(tenant)


def _cap(value: int | None, limit: int, name: str) -> None:
    if value is not None and value > limit:
        raise ApiError(422, "invalid_request", f"{name} is {value}; this server allows at most {limit}")


def _build_models(config: ServerConfig) -> tuple[Embedder, ChatModel | None]:
    from memwise.embed.registry import build_embedder
    from memwise.llm.registry import build_llm

    config.data_dir.mkdir(parents=True, exist_ok=True)
    embedder = build_embedder(config.settings.embedding, cache_path=config.data_dir / "embeddings.sqlite3")
    return embedder, build_llm(config.settings.model("policy"))


def create_state(
    config: ServerConfig, *, embedder: Embedder | None = None, llm: ChatModel | None = None
) -> ServerState:
    """The shared parts of a server (REST or MCP): keys, tenant memories, jobs, models.

    Models given by the caller stay the caller's to close; models built here from the configuration
    (the embedder once per process, shared by all tenants) are closed with the state.
    """
    owns = embedder is None
    if embedder is None:
        embedder, built_llm = _build_models(config)
        llm = llm if llm is not None else built_llm
    keys = KeyRing(config.keys_file) if config.keys_file is not None else None
    tenants = TenantRegistry(config, embedder=embedder, llm=llm)
    return ServerState(
        config=config,
        keys=keys,
        tenants=tenants,
        jobs=JobManager(max_kept=config.max_jobs_kept, logs=tenants.job_log, stale_after_s=config.job_stale_after_s),
        embedder=embedder,
        llm=llm,
        owns_models=owns,
    )


def create_app(config: ServerConfig, *, embedder: Embedder | None = None, llm: ChatModel | None = None) -> FastAPI:
    """The REST app. Tests pass a FakeEmbedder and a ScriptedLLM; the CLI passes nothing.

    Example:
        >>> from memwise.testing import FakeEmbedder
        >>> import tempfile
        >>> app = create_app(ServerConfig(data_dir=Path(tempfile.mkdtemp())), embedder=FakeEmbedder())
        >>> "/v1/memories/search" in {r.path for r in app.routes}
        True
    """
    state = create_state(config, embedder=embedder, llm=llm)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await state.aclose()

    app = FastAPI(
        title="memwise",
        version="1",
        description='Long-term memory for LLM agents, per tenant and user. Errors: {"error": {"code", "message"}}.',
        lifespan=lifespan,
    )
    app.state.memwise = state
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)  # type: ignore[arg-type]
    _install_error_handlers(app)
    _install_routes(app, config)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(error_body(exc), status_code=exc.status, headers=headers)

    @app.exception_handler(MemwiseError)
    async def _memwise_error(_: Request, exc: MemwiseError) -> JSONResponse:
        status, _code = classify(exc)
        return JSONResponse(error_body(exc), status_code=status)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        # Field paths and messages only: echoing the rejected input could echo a secret back.
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg', 'invalid')}" for err in exc.errors()
        )
        return JSONResponse({"error": {"code": "invalid_request", "message": problems}}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return JSONResponse({"error": {"code": code, "message": str(exc.detail)}}, status_code=exc.status_code)


def _install_routes(app: FastAPI, config: ServerConfig) -> None:
    @app.get("/health", tags=["service"])
    async def health() -> dict[str, str]:
        """The process is up and answering."""
        return {"status": "ok"}

    @app.get("/ready", tags=["service"])
    async def ready(state: State) -> JSONResponse:
        """Store and embedder usable: the data folder is writable, open stores answer, the embedder embeds."""
        try:
            tenants_dir = state.config.data_dir / "tenants"
            tenants_dir.mkdir(parents=True, exist_ok=True)
            if not os.access(tenants_dir, os.W_OK):
                raise ConfigError(f"data folder {tenants_dir} is not writable")
            for service in state.tenants.opened():
                service.check()
            await state.embedder.embed(["readiness probe"])
        except (MemwiseError, OSError) as exc:
            message = str(exc)
            return JSONResponse({"error": {"code": "not_ready", "message": message}}, status_code=503)
        return JSONResponse({"status": "ready"})

    # -- memories -----------------------------------------------------------------------------

    @app.post("/v1/memories", response_model=s.AddResponse, tags=["memories"])
    async def add(body: s.AddRequest, tenant: Tenant, state: State) -> s.AddResponse:
        """Remember one session of messages for a user (all its units or none)."""
        _cap(len(body.messages), config.max_messages, "the number of messages")
        memory = _memory(state, tenant)
        report = await memory.add(
            [{"role": m.role, "content": m.content} for m in body.messages],
            user_id=body.user_id,
            agent_id=body.agent_id,
            run_id=body.run_id,
            session_time=body.session_time,
            metadata=body.metadata,
        )
        return s.AddResponse.of(report, memory.written(report))

    @app.post("/v1/memories/search", response_model=s.SearchResponse, tags=["memories"])
    async def search(body: s.SearchRequest, tenant: Tenant, state: State) -> s.SearchResponse:
        """The memories of a user most relevant to a query (dense + lexical, fused)."""
        _cap(body.top_k, config.max_top_k, "top_k")
        hits = await _memory(state, tenant).search(
            body.query,
            user_id=body.user_id,
            agent_id=body.agent_id,
            run_id=body.run_id,
            top_k=body.top_k,
            since=body.since,
            until=body.until,
            include_history=body.include_history,
            filters=body.filters or None,
        )
        return s.SearchResponse(results=[s.Hit.of(h) for h in hits])

    async def _list(body: s.ListRequest, tenant: str, state: ServerState) -> s.MemoriesResponse:
        _cap(body.limit, config.max_limit, "limit")
        records, next_offset = await _memory(state, tenant).page(
            user_id=body.user_id,
            agent_id=body.agent_id,
            run_id=body.run_id,
            include_history=body.include_history,
            limit=body.limit or config.max_limit,
            filters=body.filters or None,
            offset=body.offset,
        )
        return s.MemoriesResponse(results=[s.MemoryOut.of(r) for r in records], next_offset=next_offset)

    @app.get("/v1/memories", response_model=s.MemoriesResponse, tags=["memories"])
    async def get_all(
        tenant: Tenant,
        state: State,
        user_id: UserId,
        agent_id: str | None = None,
        run_id: str | None = None,
        include_history: bool = False,
        limit: Annotated[int | None, Query(ge=1)] = None,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> s.MemoriesResponse:
        """Every current memory of a user (every version with include_history), oldest first, a page at a time.

        A page holds ``limit`` memories (the server's largest by default); ``next_offset`` says where the
        next one starts, and is null on the last.
        """
        body = s.ListRequest(
            user_id=user_id,
            agent_id=agent_id,
            run_id=run_id,
            include_history=include_history,
            limit=limit,
            offset=offset,
        )
        return await _list(body, tenant, state)

    @app.post("/v1/memories/list", response_model=s.MemoriesResponse, tags=["memories"])
    async def get_all_filtered(body: s.ListRequest, tenant: Tenant, state: State) -> s.MemoriesResponse:
        """``get_all`` with metadata filters in the body."""
        return await _list(body, tenant, state)

    @app.delete("/v1/memories", response_model=s.DeletedResponse, tags=["memories"])
    async def delete_all(
        tenant: Tenant,
        state: State,
        user_id: UserId,
        agent_id: str | None = None,
        run_id: str | None = None,
    ) -> s.DeletedResponse:
        """Retire every current memory of a user (kept in history and in exports)."""
        n = await _memory(state, tenant).delete_all(user_id=user_id, agent_id=agent_id, run_id=run_id)
        return s.DeletedResponse(deleted=n)

    @app.get("/v1/memories/export", tags=["memories"], response_class=StreamingResponse)
    async def export(tenant: Tenant, state: State, user_id: UserId) -> StreamingResponse:
        """Every record of a user, history included, as JSONL (one record a line)."""
        lines = list(_memory(state, tenant).export(user_id=user_id))
        return StreamingResponse(iter(lines), media_type="application/x-ndjson")

    @app.post("/v1/memories/import", response_model=s.ImportResponse, tags=["memories"])
    async def import_(request: Request, tenant: Tenant, state: State, user_id: UserId) -> s.ImportResponse:
        """Import an export (JSONL body) as this user: all lines or none."""
        raw = await request.body()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DatasetError(f"body is not UTF-8 (byte {exc.start})", path="import") from exc
        imported, skipped = await _memory(state, tenant).import_jsonl(text.splitlines(), user_id=user_id)
        return s.ImportResponse(imported=imported, skipped=skipped)

    @app.post("/v1/memories/answer", response_model=s.AnswerResponse, tags=["memories"])
    async def answer(body: s.AnswerRequest, tenant: Tenant, state: State) -> s.AnswerResponse:
        """Answer a question from a user's memories with the configured chat model."""
        _cap(body.top_k, config.max_top_k, "top_k")
        result = await _memory(state, tenant).answer(
            body.question, user_id=body.user_id, question_date=body.question_date, top_k=body.top_k
        )
        return s.AnswerResponse(
            answer=result.text, memories=[s.Hit.of(h) for h in result.memories], question_date=result.question_date
        )

    @app.get("/v1/memories/{memory_id}", response_model=s.MemoryOut, tags=["memories"])
    async def get(memory_id: str, tenant: Tenant, state: State, user_id: UserId) -> s.MemoryOut:
        """One memory of a user (current or not)."""
        return s.MemoryOut.of(await _memory(state, tenant).get(memory_id, user_id=user_id))

    @app.put("/v1/memories/{memory_id}", response_model=s.MemoryOut, tags=["memories"])
    async def update(memory_id: str, body: s.UpdateRequest, tenant: Tenant, state: State) -> s.MemoryOut:
        """Replace a memory's text; returns the new version (the old one stays in history)."""
        return s.MemoryOut.of(await _memory(state, tenant).update(memory_id, body.text, user_id=body.user_id))

    @app.delete("/v1/memories/{memory_id}", response_model=s.DeletedResponse, tags=["memories"])
    async def delete(memory_id: str, tenant: Tenant, state: State, user_id: UserId) -> s.DeletedResponse:
        """Retire one memory (kept in history)."""
        await _memory(state, tenant).delete(memory_id, user_id=user_id)
        return s.DeletedResponse(deleted=1)

    @app.get("/v1/memories/{memory_id}/history", response_model=s.MemoriesResponse, tags=["memories"])
    async def history(memory_id: str, tenant: Tenant, state: State, user_id: UserId) -> s.MemoriesResponse:
        """Every version of a memory, oldest first."""
        records = await _memory(state, tenant).history(memory_id, user_id=user_id)
        return s.MemoriesResponse(results=[s.MemoryOut.of(r) for r in records])

    # -- jobs ---------------------------------------------------------------------------------

    @app.post("/v1/jobs/ingest", response_model=s.JobOut, status_code=202, tags=["jobs"])
    async def ingest_job(body: s.IngestJobRequest, tenant: Tenant, state: State) -> s.JobOut:
        """Ingest a dataset file (under --ingest-dir) or an uploaded JSONL of sessions, as a job."""
        path, fmt, upload = _ingest_source(body, state.config)
        memory = _memory(state, tenant)

        async def work(job: Job) -> dict[str, Any]:
            try:
                return await _run_ingest(job, memory, path, fmt, body.user_id)
            finally:
                if upload:
                    path.unlink(missing_ok=True)

        return s.JobOut.of(await state.jobs.start(tenant, "ingest", work))

    @app.post("/v1/jobs/consolidate", response_model=s.JobOut, status_code=202, tags=["jobs"])
    async def consolidate_job(body: s.ConsolidateJobRequest, tenant: Tenant, state: State) -> s.JobOut:
        """Consolidate a user's memory (the model decides updates and deletions), as a job."""
        memory = _memory(state, tenant)

        async def work(job: Job) -> dict[str, Any]:
            job.progress(0, 1)
            report = await memory.consolidate(user_id=body.user_id, threshold=body.threshold)
            job.progress(1)
            return s.consolidation_result(report)

        return s.JobOut.of(await state.jobs.start(tenant, "consolidate", work))

    @app.get("/v1/jobs/{job_id}", response_model=s.JobOut, tags=["jobs"])
    async def get_job(job_id: str, tenant: Tenant, state: State) -> s.JobOut:
        """A job's status, progress, and result or error, whichever server process runs it."""
        job = await state.jobs.get(tenant, job_id)
        if job is None:
            raise ApiError(404, "not_found", f"no job {job_id!r}")
        return s.JobOut.of(job)


def _ingest_source(body: s.IngestJobRequest, config: ServerConfig) -> tuple[Path, str, bool]:
    """Where an ingest job reads from: ``(path, format, is_upload)``; checked before the job starts."""
    if (body.path is None) == (body.content is None):
        raise ConfigError("give exactly one of 'path' (a file on the server) or 'content' (uploaded JSONL)")
    if body.content is not None:
        uploads = config.data_dir / "uploads"
        uploads.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=uploads, suffix=".jsonl")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(body.content)
        return Path(name), "jsonl", True
    if config.ingest_dir is None:
        raise ConfigError("this server reads no dataset files: upload 'content', or start it with --ingest-dir DIR")
    root = config.ingest_dir.resolve()
    path = (root / body.path).resolve() if body.path is not None else root
    if not path.is_relative_to(root):
        raise ConfigError(f"path {body.path!r} is outside the server's ingest folder; give a path inside it")
    if not path.is_file():
        raise ConfigError(f"no dataset file {body.path!r} in the server's ingest folder")
    return path, body.format, False


async def _run_ingest(job: Job, memory: MemoryService, path: Path, fmt: str, user_id: str | None) -> dict[str, Any]:
    with iter_conversations(path, fmt) as stream:  # type: ignore[arg-type]
        total = sum(1 for _ in stream)
    job.progress(0, total)
    reports = []
    with iter_conversations(path, fmt) as stream:  # type: ignore[arg-type]
        for conv in stream:
            owner = owner_of(conv, user_id)
            reports.append(await memory.add_conversation(conv, user_id=owner))
            job.progress(len(reports))
    return IngestSummary.of(reports).to_dict()

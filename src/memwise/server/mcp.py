"""The MCP server: memory tools for an agent, over stdio or streamable HTTP (the official ``mcp`` SDK).

The tools take no tenant and no user argument: a model could put anything there. The scope is the
server's: over stdio, the ``--tenant`` and ``--user-id`` it was started with; over HTTP, the tenant of
the API key on the request (checked on every request, before the MCP session sees it) and the
configured ``--user-id``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from memwise.exceptions import ConfigError, MemwiseError
from memwise.facts.readers import parse_datetime
from memwise.server.app import ServerState
from memwise.server.auth import key_from_headers
from memwise.server.errors import classify
from memwise.server.limits import ASGIApp, BodyLimit, Receive, Scope, Send, send_json
from memwise.server.service import MemoryService
from memwise.store.base import Record

MetadataValue = str | int | float | bool | None


def _brief(record: Record) -> dict[str, Any]:
    return {"id": record.id, "text": record.text, "ts": record.ts, "metadata": record.metadata}


class _Scope:
    """Resolves the tenant and user of a tool call; never from the tool's arguments."""

    def __init__(self, state: ServerState, *, tenant: str, user_id: str) -> None:
        self.state = state
        self.tenant = tenant
        self.user_id = user_id

    def memory(self, ctx: Context) -> MemoryService:
        headers: Mapping[str, str] | None = ctx.headers
        if headers is None or self.state.keys is None:
            tenant = self.tenant  # stdio, or a keyless loopback HTTP server
        else:
            key = key_from_headers(headers.get("authorization"), headers.get("x-api-key"))
            found = self.state.keys.tenant_for(key)
            if found is None:
                raise ToolError("unauthorized: missing or unknown API key")
            tenant = found
        return self.state.tenants.memory(tenant)


def _tool_error(exc: MemwiseError) -> ToolError:
    _, code = classify(exc)
    return ToolError(f"{code}: {exc}")


def build_mcp_server(state: ServerState, *, tenant: str, user_id: str) -> MCPServer:
    """An MCP server with the tools add, search, answer, get_all and delete over one user's memory."""
    if not user_id:
        raise ConfigError("the MCP server needs --user-id: whose memory its tools read and write")
    scope = _Scope(state, tenant=tenant, user_id=user_id)
    config = state.config
    server = MCPServer(
        "memwise",
        instructions="Long-term memory: add what is worth remembering, search or answer from it later.",
    )

    @server.tool()
    async def add(
        content: str, ctx: Context, role: str = "user", metadata: dict[str, MetadataValue] | None = None
    ) -> dict[str, Any]:
        """Remember a message (what the user said, or a fact to keep). Returns the stored memories."""
        try:
            memory = scope.memory(ctx)
            report = await memory.add([{"role": role, "content": content}], user_id=scope.user_id, metadata=metadata)
            written = memory.written(report)
        except MemwiseError as exc:
            raise _tool_error(exc) from exc
        return {"memories": [_brief(r) for r in written]}

    @server.tool()
    async def search(query: str, ctx: Context, top_k: int = 5) -> dict[str, Any]:
        """The memories most relevant to a query, best first, with their ids and scores."""
        if not 1 <= top_k <= config.max_top_k:
            raise ToolError(f"invalid_request: top_k must be between 1 and {config.max_top_k}")
        try:
            hits = await scope.memory(ctx).search(query, user_id=scope.user_id, top_k=top_k)
        except MemwiseError as exc:
            raise _tool_error(exc) from exc
        return {"results": [{**_brief(h.record), "score": h.score} for h in hits]}

    @server.tool()
    async def answer(question: str, ctx: Context, question_date: str | None = None) -> dict[str, Any]:
        """Answer a question from memory; question_date (e.g. 2023-07-01) is 'today' for the question."""
        try:
            when = parse_datetime(question_date) if question_date else None
        except ValueError as exc:
            raise ToolError(f"invalid_request: cannot read question_date {question_date!r} ({exc})") from exc
        try:
            result = await scope.memory(ctx).answer(question, user_id=scope.user_id, question_date=when)
        except MemwiseError as exc:
            raise _tool_error(exc) from exc
        return {"answer": result.text, "memory_ids": [h.record.id for h in result.memories]}

    @server.tool()
    async def get_all(ctx: Context, limit: int = 50, offset: int = 0) -> dict[str, Any]:
        """Every current memory, oldest first, a page of up to limit; next_offset starts the next page (null: none)."""
        if not 1 <= limit <= config.max_limit:
            raise ToolError(f"invalid_request: limit must be between 1 and {config.max_limit}")
        if offset < 0:
            raise ToolError("invalid_request: offset must be 0 or more")
        try:
            records, next_offset = await scope.memory(ctx).page(user_id=scope.user_id, limit=limit, offset=offset)
        except MemwiseError as exc:
            raise _tool_error(exc) from exc
        return {"memories": [_brief(r) for r in records], "next_offset": next_offset}

    @server.tool()
    async def delete(memory_id: str, ctx: Context) -> dict[str, Any]:
        """Forget one memory by id (it stays in its history)."""
        try:
            await scope.memory(ctx).delete(memory_id, user_id=scope.user_id)
        except MemwiseError as exc:
            raise _tool_error(exc) from exc
        return {"deleted": memory_id}

    return server


class KeyGate:
    """ASGI middleware: an HTTP request without a valid API key gets 401 before MCP sees it."""

    def __init__(self, app: ASGIApp, *, state: ServerState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the key on HTTP requests only; lifespan and other scopes pass through untouched."""
        if scope["type"] == "http" and self.state.keys is not None:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
            key = key_from_headers(headers.get("authorization"), headers.get("x-api-key"))
            if self.state.keys.tenant_for(key) is None:
                body = {"error": {"code": "unauthorized", "message": "missing or unknown API key"}}
                await send_json(send, 401, body, [(b"www-authenticate", b"Bearer")])
                return
        await self.app(scope, receive, send)


def mcp_http_app(state: ServerState, server: MCPServer, *, host: str) -> ASGIApp:
    """The streamable HTTP app at ``/mcp``, behind the key gate and the body size limit."""
    inner = server.streamable_http_app(host=host, max_request_body_size=state.config.max_body_bytes)
    return BodyLimit(KeyGate(inner, state=state), max_bytes=state.config.max_body_bytes)  # type: ignore[arg-type]

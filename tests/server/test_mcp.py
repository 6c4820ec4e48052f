"""The MCP server through the SDK's own client: stdio (the real CLI as a subprocess) and streamable HTTP."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from memwise.server.app import create_state
from memwise.server.config import ServerConfig
from memwise.server.mcp import build_mcp_server, mcp_http_app
from memwise.testing import FakeEmbedder, FakeOpenAIServer, ScriptedLLM

from .conftest import Keys, running, scripted_answer

TOOLS = {"add", "search", "answer", "get_all", "delete"}


def _payload(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content
    return json.loads(result.content[0].text)  # type: ignore[no-any-return]


async def _exercise(client: Client) -> None:
    """List the tools and call every one, checking what each returns."""
    tools = await client.list_tools()
    assert {t.name for t in tools.tools} == TOOLS
    for tool in tools.tools:  # the scope is the server's: no tool lets the model name a tenant or user
        assert not {"tenant", "user_id"} & set(tool.input_schema.get("properties", {}))
    added = _payload(
        await client.call_tool("add", {"content": "I adopted a beagle called Pepper.", "metadata": {"k": 1}})
    )
    memory_id = added["memories"][0]["id"]
    assert added["memories"][0]["metadata"]["k"] == 1
    hits = _payload(await client.call_tool("search", {"query": "beagle Pepper", "top_k": 3}))
    assert hits["results"][0]["id"] == memory_id
    answered = _payload(await client.call_tool("answer", {"question": "What is my dog called?"}))
    assert memory_id in answered["memory_ids"] and answered["answer"]
    assert [m["id"] for m in _payload(await client.call_tool("get_all", {}))["memories"]] == [memory_id]
    second = _payload(await client.call_tool("add", {"content": "I live in Porto."}))["memories"][0]["id"]
    first_page = _payload(await client.call_tool("get_all", {"limit": 1}))
    assert [m["id"] for m in first_page["memories"]] == [memory_id] and first_page["next_offset"] == 1
    last_page = _payload(await client.call_tool("get_all", {"limit": 1, "offset": 1}))
    assert [m["id"] for m in last_page["memories"]] == [second] and last_page["next_offset"] is None
    assert _payload(await client.call_tool("delete", {"memory_id": second})) == {"deleted": second}
    assert _payload(await client.call_tool("delete", {"memory_id": memory_id})) == {"deleted": memory_id}
    assert _payload(await client.call_tool("get_all", {}))["memories"] == []
    missing = await client.call_tool("delete", {"memory_id": memory_id + "x"})
    assert missing.is_error and "not_found" in missing.content[0].text


async def test_stdio_session_through_the_cli(tmp_path: Path) -> None:
    exe = shutil.which("memwise", path=str(Path(sys.executable).parent))
    assert exe is not None
    with FakeOpenAIServer(responder=lambda call: "Pepper").in_thread() as fake:
        params = StdioServerParameters(
            command=exe,
            args=[
                "--base-url", fake.base_url, "--model", "m",
                "--embed-backend", "openai", "--embed-base-url", fake.base_url,
                "mcp", "--transport", "stdio", "--tenant", "acme", "--user-id", "alice",
                "--data-dir", str(tmp_path / "data"),
            ],
            env={"HF_HUB_OFFLINE": "1"},
        )  # fmt: skip
        async with Client(params) as client:
            await _exercise(client)
    assert (tmp_path / "data" / "tenants" / "acme.sqlite3").is_file()


@asynccontextmanager
async def _session(url: str, headers: dict[str, str]) -> AsyncIterator[Client]:
    """An MCP client session over streamable HTTP with these headers (the HTTP client closed after)."""
    async with (
        create_mcp_http_client(headers=headers) as http,
        Client(streamable_http_client(f"{url}/mcp", http_client=http)) as client,
    ):
        yield client


async def test_http_session_scoped_by_the_key(tmp_path: Path, keys: Keys) -> None:
    config = ServerConfig(data_dir=tmp_path / "data", keys_file=keys.path)
    state = create_state(config, embedder=FakeEmbedder(), llm=ScriptedLLM(scripted_answer))
    server = build_mcp_server(state, tenant="default", user_id="alice")
    with running(mcp_http_app(state, server, host="127.0.0.1")) as url:
        async with _session(url, Keys.bearer(keys.acme)) as acme:
            await _exercise(acme)
            kept = _payload(await acme.call_tool("add", {"content": "Acme's vault code is 1234."}))["memories"][0]
        async with _session(url, {"X-API-Key": keys.globex}) as globex:
            # Same user id, other tenant: nothing of acme's is visible, and its ids cannot be deleted.
            assert _payload(await globex.call_tool("get_all", {}))["memories"] == []
            assert _payload(await globex.call_tool("search", {"query": "vault code 1234"}))["results"] == []
            refused = await globex.call_tool("delete", {"memory_id": kept["id"]})
            assert refused.is_error and "not_found" in refused.content[0].text
        async with _session(url, Keys.bearer(keys.acme)) as acme:
            assert [m["id"] for m in _payload(await acme.call_tool("get_all", {}))["memories"]] == [kept["id"]]
        for headers in ({}, {"Authorization": "Bearer mwk_wrong"}):
            r = httpx.post(f"{url}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, headers=headers)
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    await state.aclose()

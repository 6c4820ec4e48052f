"""The fake OpenAI-compatible server: endpoints, failure injection, counters, and its three run modes."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

from memwise._transport.retry import httpx
from memwise.testing.fake_openai import (
    FAILURE_KINDS,
    FailurePlan,
    FakeOpenAIServer,
    _parse_args,
    _server_from_args,
    hashed_unit_vector,
)


def _chat_body(prompt: str, **extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": prompt}], **extra}


def _post(url: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5.0) as http:
        yield http


async def test_chat_echo_n_choices_usage_and_length(client: httpx.AsyncClient) -> None:
    async with FakeOpenAIServer(model="served") as srv:
        reply = await client.post(f"{srv.base_url}/chat/completions", json=_chat_body("one two three", n=2))
        data = reply.json()
        assert reply.status_code == 200 and data["model"] == "m" and data["object"] == "chat.completion"
        assert [c["message"]["content"] for c in data["choices"]] == ["echo: one two three"] * 2
        assert [c["index"] for c in data["choices"]] == [0, 1]
        assert {c["finish_reason"] for c in data["choices"]} == {"stop"}
        assert data["usage"] == {"prompt_tokens": 3, "completion_tokens": 8, "total_tokens": 11}
        short = (await client.post(f"{srv.base_url}/chat/completions", json=_chat_body("a b c", max_tokens=2))).json()
        assert short["choices"][0] == {
            "index": 0,
            "message": {"role": "assistant", "content": "echo: a"},
            "logprobs": None,
            "finish_reason": "length",
        }
        models = (await client.get(f"{srv.base_url}/models")).json()
        assert models["data"][0]["id"] == "served"
        assert (await client.post(f"{srv.base_url}/nope", json={})).status_code == 404
        assert (await client.post(f"{srv.base_url}/chat/completions", content=b"{oops")).status_code == 400
        stats = srv.stats()
    assert stats.completions == 2 and stats.requests == 5
    assert stats.completed_by_key == {"one two three": 1, "a b c": 1}


async def test_json_schema_uses_the_json_responder(client: httpx.AsyncClient) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "o", "schema": {"type": "object"}, "strict": False}}
    async with FakeOpenAIServer(json_responder=lambda call, schema: json.dumps({"schema": schema})) as srv:
        reply = await client.post(f"{srv.base_url}/chat/completions", json=_chat_body("x", response_format=fmt))
        assert json.loads(reply.json()["choices"][0]["message"]["content"]) == {"schema": {"type": "object"}}
        plain = await client.post(f"{srv.base_url}/chat/completions", json=_chat_body("x"))
        assert plain.json()["choices"][0]["message"]["content"] == "echo: x"
        assert srv.stats().response_format_seen == 1


async def test_reject_response_format(client: httpx.AsyncClient) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "o", "schema": {}}}
    async with FakeOpenAIServer(reject_response_format=True) as srv:
        reply = await client.post(f"{srv.base_url}/chat/completions", json=_chat_body("x", response_format=fmt))
        assert reply.status_code == 400 and "response_format" in reply.text
        assert srv.stats().response_format_rejected == 1


async def test_embeddings_are_deterministic_unit_vectors(client: httpx.AsyncClient) -> None:
    async with FakeOpenAIServer(dim=32) as srv:
        reply = await client.post(f"{srv.base_url}/embeddings", json={"model": "e", "input": ["a", "b"]})
        single = await client.post(f"{srv.base_url}/embeddings", json={"model": "e", "input": "a"})
        wrong = await client.post(f"{srv.base_url}/embeddings", json={"model": "e", "input": [1, 2]})
    rows = [item["embedding"] for item in reply.json()["data"]]
    assert len(rows) == 2 and len(rows[0]) == 32
    assert np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-6)
    assert rows[0] == single.json()["data"][0]["embedding"] == hashed_unit_vector("a", 32)
    assert rows[0] != rows[1] and wrong.status_code == 400


async def test_chunked_request_bodies_are_read(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        body = json.dumps(_chat_body("chunky")).encode()
        yield body[:10]
        yield body[10:]

    async with FakeOpenAIServer() as srv:
        reply = await client.post(f"{srv.base_url}/chat/completions", content=chunks())
    assert reply.json()["choices"][0]["message"]["content"] == "echo: chunky"


async def test_injected_http_failures_look_like_the_real_thing(client: httpx.AsyncClient) -> None:
    kinds = ("rate_limit", "server_error", "unavailable", "malformed", "truncated")
    plan = FailurePlan(first_attempts=len(kinds), kinds=kinds, retry_after_s=2.0)
    async with FakeOpenAIServer(failures=plan) as srv:
        url = f"{srv.base_url}/chat/completions"
        replies = [await client.post(url, json=_chat_body("same")) for _ in range(len(kinds) + 1)]
        stats = srv.stats()
    assert [r.status_code for r in replies] == [429, 500, 503, 200, 200, 200]
    assert replies[0].headers["retry-after"] == "2"
    for broken in replies[3:5]:
        with pytest.raises(ValueError):
            json.loads(broken.content)
    assert replies[5].json()["choices"][0]["message"]["content"] == "echo: same"
    assert stats.failures == dict.fromkeys(kinds, 1)
    assert stats.attempts_by_key == {"same": 6} and stats.completed_by_key == {"same": 1}


@pytest.mark.parametrize("kind", ["no_reply", "drop", "timeout"])
async def test_injected_connection_failures(kind: str) -> None:
    plan = FailurePlan(first_attempts=1, kinds=(kind,), hold_s=1.0)  # type: ignore[arg-type]
    async with FakeOpenAIServer(failures=plan) as srv, httpx.AsyncClient(timeout=0.2) as http:
        with pytest.raises(httpx.TransportError):
            await http.post(f"{srv.base_url}/chat/completions", json=_chat_body("fragile"))
        ok = await http.post(f"{srv.base_url}/chat/completions", json=_chat_body("fragile"))
        assert ok.status_code == 200
        assert srv.stats().failures == {kind: 1}


def test_failure_plan_is_deterministic_and_capped() -> None:
    plan = FailurePlan(rate=0.5, seed=3, max_per_request=2)
    draws = [plan.choose(f"k{i}", attempt, 0) for i in range(50) for attempt in range(3)]
    assert draws == [plan.choose(f"k{i}", attempt, 0) for i in range(50) for attempt in range(3)]
    assert 40 <= sum(kind is not None for kind, _ in draws) <= 110
    assert all(drawn for kind, drawn in draws if kind is not None)
    assert plan.choose("k1", 0, 2) == (None, False)  # the cap stops further random failures
    cycling = FailurePlan(first_attempts=3, kinds=("timeout", "drop"))
    assert [cycling.choose("x", a, 0)[0] for a in range(4)] == ["timeout", "drop", "timeout", None]
    with pytest.raises(ValueError):
        FailurePlan(kinds=("explode",))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        FailurePlan(rate=1.5)


def test_in_thread_mode_and_stats() -> None:
    with FakeOpenAIServer().in_thread() as srv:
        status, body = _post(f"{srv.base_url}/chat/completions", _chat_body("threaded"))
        stats = srv.stats()
    assert status == 200 and body["choices"][0]["message"]["content"] == "echo: threaded"
    assert stats.completed_by_key == {"threaded": 1}
    with pytest.raises(RuntimeError):
        srv.stats()


def test_in_process_mode_counts_over_http() -> None:
    plan = FailurePlan(first_attempts=1, kinds=("server_error",))
    with FakeOpenAIServer(failures=plan, dim=4).in_process() as srv:
        first, _ = _post(f"{srv.base_url}/chat/completions", _chat_body("remote"))
        second, body = _post(f"{srv.base_url}/chat/completions", _chat_body("remote"))
        status, emb = _post(f"{srv.base_url}/embeddings", {"model": "e", "input": ["x"]})
        stats = srv.stats()
    assert (first, second, status) == (500, 200, 500)  # the embedding's first attempt fails too
    assert body["choices"][0]["message"]["content"] == "echo: remote"
    assert stats.failures == {"server_error": 2} and stats.completions == 1
    assert stats.in_flight == 0  # fetching the stats is not itself counted
    with pytest.raises(ValueError, match="custom responders"):
        FakeOpenAIServer(responder=lambda call: "x").in_process()


async def test_latency_overlaps_requests(client: httpx.AsyncClient) -> None:
    async with FakeOpenAIServer(latency_s=0.2) as srv:
        loop = asyncio.get_running_loop()
        start = loop.time()
        url = f"{srv.base_url}/chat/completions"
        await asyncio.gather(*(client.post(url, json=_chat_body(f"p{i}")) for i in range(10)))
        took = loop.time() - start
        assert srv.stats().max_in_flight == 10
    assert 0.2 <= took < 0.6


async def test_stop_ends_held_connections() -> None:
    plan = FailurePlan(first_attempts=1, kinds=("timeout",), hold_s=30.0)
    srv = FakeOpenAIServer(failures=plan)
    await srv.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    body = json.dumps(_chat_body("held")).encode()
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
    await asyncio.sleep(0.05)
    assert srv.stats().in_flight == 1
    await asyncio.wait_for(srv.stop(), 2.0)
    assert await asyncio.wait_for(reader.read(), 2.0) == b""
    writer.close()
    await writer.wait_closed()


def test_malformed_http_gets_a_400_and_a_close() -> None:
    with FakeOpenAIServer().in_thread() as srv:
        port = int(srv.base_url.rsplit(":", 1)[1].split("/")[0])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"NONSENSE\r\n\r\n")
            data = sock.recv(4096)
    assert data.startswith(b"HTTP/1.1 400")


def test_command_line_flags() -> None:
    args = _parse_args(
        ["--port", "0", "--latency", "0.01", "--fail-first", "2", "--fail-kinds", "timeout,drop", "--seed", "4"]
        + ["--fail-rate", "0.1", "--reject-response-format", "--dim", "8", "--ignore-n"]
    )
    server = _server_from_args(args)
    assert (server.latency_s, server.dim, server.reject_response_format, server.ignore_n) == (0.01, 8, True, True)
    assert server.failures == FailurePlan(first_attempts=2, rate=0.1, kinds=("timeout", "drop"), seed=4)
    from_config = _server_from_args(_parse_args(["--config", json.dumps(server.settings())]))
    assert from_config.settings() == server.settings()
    assert set(FAILURE_KINDS) >= set(server.failures.kinds)

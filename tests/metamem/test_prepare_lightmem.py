"""`metamem prepare --memory lightmem`: the paper's memory (model-extracted facts, plain cosine top-k).

On the fake server with a tiny LoCoMo-like conversation: the model is asked for facts, and each
question's fragments are the extracted facts ranked by cosine similarity alone, rendered
``<timestamp> <weekday> <fact>``; ``--memory memwise`` (the default) still shows the turns.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
from typer.testing import CliRunner

from memwise.cli import app
from memwise.config import load_settings
from memwise.embed.registry import build_embedder
from memwise.facts.units import FACT, render_for_prompt
from memwise.metamem.data import load_questions
from memwise.metamem.reproduce import MEMORY_KINDS as REPRODUCE_KINDS
from memwise.store.base import Filters
from memwise.store.sqlite import SQLiteStore
from memwise.testing import FakeOpenAIServer
from memwise.testing.fake_openai import ChatCall

TOP_K = 3
# What each turn says -> the fact the (fake) model extracts from it: never the turn's own words.
FACTS = {
    "I just moved to Oslo!": "Caroline moved to Oslo in May 2023.",
    "Nice, how is the weather there?": "Melanie asked about the weather in Oslo.",
    "My dog Pepper loves the snow.": "Caroline has a dog named Pepper.",
    "I started painting sunsets.": "Melanie paints sunsets.",
    "I adopted a cat called Luna.": "Melanie adopted a cat named Luna in June 2023.",
    "Pepper and Luna met yesterday.": "Pepper met Luna in June 2023.",
}
LOCOMO = [
    {
        "sample_id": "conv-1",
        "conversation": {
            "speaker_a": "Caroline",
            "speaker_b": "Melanie",
            "session_1_date_time": "1:56 pm on 8 May, 2023",
            "session_1": [
                {"speaker": "Caroline", "dia_id": "D1:1", "text": "I just moved to Oslo!"},
                {"speaker": "Melanie", "dia_id": "D1:2", "text": "Nice, how is the weather there?"},
                {"speaker": "Caroline", "dia_id": "D1:3", "text": "My dog Pepper loves the snow."},
            ],
            "session_2_date_time": "10:00 am on 20 June, 2023",
            "session_2": [
                {"speaker": "Melanie", "dia_id": "D2:1", "text": "I started painting sunsets."},
                {"speaker": "Melanie", "dia_id": "D2:2", "text": "I adopted a cat called Luna."},
                {"speaker": "Caroline", "dia_id": "D2:3", "text": "Pepper and Luna met yesterday."},
            ],
        },
        "qa": [
            {
                "question": "What pet did Melanie adopt?",
                "answer": "a cat named Luna",
                "evidence": ["D2:2"],
                "category": 1,
            },
            {"question": "Where did Caroline move?", "answer": "Oslo", "evidence": ["D1:1"], "category": 1},
        ],
    }
]


EXTRACTIONS: list[ChatCall] = []


def _extract(call: ChatCall, schema: dict[str, Any]) -> str:
    EXTRACTIONS.append(call)
    facts = []
    user = str(call.messages[-1]["content"])
    for label, speaker, text in re.findall(r'<turn id="(T\d+)">(\w+): ([^<]*)</turn>', user):
        facts.append({"text": FACTS[text], "speaker": speaker, "source_ids": [label]})
    return json.dumps({"facts": facts})


def _prepare(base: list[str], data: Path, out: Path, *extra: str) -> list[Any]:
    result = CliRunner().invoke(
        app, [*base, "metamem", "prepare", "--path", str(data), "--out", str(out), "--top-k", str(TOP_K), *extra]
    )
    assert result.exit_code == 0, result.output
    return load_questions(out)


def test_lightmem_prepare_extracts_facts_and_ranks_them_by_cosine_alone(tmp_path: Path) -> None:
    data = tmp_path / "locomo.json"
    data.write_text(json.dumps(LOCOMO))
    server = FakeOpenAIServer(responder=lambda call: "unused", json_responder=_extract)
    with server.in_thread() as srv:
        base = ["--base-url", srv.base_url, "--model", "m", "--embed-backend", "openai"]
        base += ["--embed-base-url", srv.base_url]
        light = _prepare(base, data, tmp_path / "light.jsonl", "--memory", "lightmem")
        extraction_calls = list(EXTRACTIONS)
        plain = _prepare(base, data, tmp_path / "plain.jsonl")

        # The ranking a reader would compute: embed the question and every stored fact, sort by cosine.
        embedder = build_embedder(
            load_settings(overrides={"embedding": {"backend": "openai", "base_url": srv.base_url}}).embedding
        )
        with SQLiteStore(tmp_path / "light.db") as store:
            facts = list(store.list_records(Filters(user_id="conv-1", kind=FACT)))

        async def expected(question: str) -> list[str]:
            vectors = await embedder.embed([question, *(f.index_text or f.text for f in facts)])
            unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
            cosine = unit[1:] @ unit[0]
            order = np.argsort(-cosine, kind="stable")[:TOP_K]
            return [render_for_prompt(facts[i]) for i in order]

        wanted = [asyncio.run(expected(q.question)) for q in light]
        asyncio.run(embedder.aclose())

    assert len(extraction_calls) >= 2  # one per session at least: the facts come from the model
    assert sorted(f.text for f in facts) == sorted(FACTS.values())
    for q, ranked in zip(light, wanted, strict=True):
        assert list(q.memories) == ranked and q.metadata["memory"] == "lightmem"
        assert all(re.match(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} \w+day ", m) for m in q.memories)
        assert all(m.split(" ", 3)[3] in FACTS.values() for m in q.memories)
    # memwise's own memory is unchanged: the turns themselves, hybrid retrieval, oldest first.
    assert all(q.metadata["memory"] == "memwise" for q in plain)
    assert all(any(turn in m for turn in FACTS) for q in plain for m in q.memories)
    assert REPRODUCE_KINDS == ("memwise", "lightmem")

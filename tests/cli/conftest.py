"""Fixtures the MetaMem and UMEM command tests share: tiny datasets, fake-server flags, the judge's replies.

Each is a factory (a fixture returning a function), because the tests call them with their own server
URL, size or policy.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from memwise.testing.fake_openai import ChatCall

MMLU_ROWS = [
    {"question": "Which gas do plants absorb for photosynthesis?", "type": "biology", "choices": ["O2", "CO2"]},
    {"question": "What is the derivative of x squared?", "type": "calculus", "choices": ["x", "2x", "x/2"]},
    {"question": "Which planet is known as the red planet?", "type": "astronomy", "choices": ["Venus", "Mars"]},
]
"""Three multiple-choice tasks whose gold answer is B (index 1); only the red planet names its topic twice."""


@pytest.fixture
def mmlu_file(tmp_path: Path) -> Callable[..., Path]:
    """Writes the first ``n`` MMLU rows as JSONL under ``tmp_path`` and returns the file."""

    def write(n: int = len(MMLU_ROWS)) -> Path:
        path = tmp_path / "mmlu.jsonl"
        path.write_text("".join(json.dumps({**row, "answer": 1}) + "\n" for row in MMLU_ROWS[:n]))
        return path

    return write


@pytest.fixture
def server_flags() -> Callable[[str], list[str]]:
    """The global flags that send the policy model and the embeddings to one fake server."""

    def flags(base_url: str) -> list[str]:
        return ["--base-url", base_url, "--model", "m", "--embed-backend", "openai", "--embed-base-url", base_url]

    return flags


MetaMemPolicy = Callable[[ChatCall, str], str]


@pytest.fixture
def metamem_responder() -> Callable[[MetaMemPolicy], Callable[[ChatCall], str]]:
    """A fake server's replies for MetaMem: fixed reflection and edits, a judge that checks the gold number.

    The policy's answers (everything else) come from the test's own function ``policy(call, user_text)``.
    """

    def responder(policy: MetaMemPolicy) -> Callable[[ChatCall], str]:
        def reply(call: ChatCall) -> str:
            user = call.messages[-1]["content"]
            name = ((call.body.get("response_format") or {}).get("json_schema") or {}).get("name")
            if name == "Reflection":
                return json.dumps({"used": [1], "lesson": "Quote the number from the fragment exactly."})
            if name in ("Proposal", "Consolidation"):
                return json.dumps({"operations": [{"op": "add", "text": "Quote numbers from fragments exactly."}]})
            if "Reply with one word: yes or no" in user:
                response = user.split("<response>")[-1].split("</response>")[0]
                gold = user.split("<reference>")[-1].split("</reference>")[0].strip()
                return "yes" if gold in response else "no"
            return policy(call, user)

        return reply

    return responder

"""Test helpers shipped with memwise, for its own tests and for users' tests.

- :class:`ScriptedLLM`: a chat model that replies from a script, for control-flow tests only.
- :class:`FakeEmbedder`: deterministic hashed n-gram vectors, no model needed.
- :class:`FakeOpenAIServer`: an OpenAI-compatible HTTP server on loopback with latency and injected
  failures (429, 500, timeouts, malformed or truncated JSON).
- :mod:`memwise.testing.services`: a free loopback port, waiting for a server's ``/health``, and a
  throwaway PostgreSQL with pgvector, as the tests and benches start them.
- :mod:`memwise.testing.resources`: the process's resident memory, for tests that a workload stays flat.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from memwise.testing.scripted import ScriptedLLM

if TYPE_CHECKING:
    from memwise.testing.fake_embedder import FakeEmbedder
    from memwise.testing.fake_openai import FakeOpenAIServer

__all__ = ["FakeEmbedder", "FakeOpenAIServer", "ScriptedLLM"]


def __getattr__(name: str) -> Any:
    # Imported lazily so that `import memwise.testing` stays light.
    if name == "FakeEmbedder":
        from memwise.testing.fake_embedder import FakeEmbedder

        return FakeEmbedder
    if name == "FakeOpenAIServer":
        from memwise.testing.fake_openai import FakeOpenAIServer

        return FakeOpenAIServer
    raise AttributeError(name)

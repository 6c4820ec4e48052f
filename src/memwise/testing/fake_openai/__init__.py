"""A fast, fault-injecting fake of an OpenAI-compatible server, for tests and benches.

It speaks just enough HTTP/1.1 (keep-alive, Content-Length or chunked request bodies) on a raw
``asyncio.Protocol``, answering each request from a timer rather than a task, to serve thousands of
requests a second next to the client on a small machine; a web framework would spend more CPU than the
client under test and distort benches.

Faults are chosen per *request content* and attempt number, never by arrival order, so a failure plan
gives the same outcome however concurrent calls interleave. Counters record every attempt and every
successful reply per distinct prompt, which is what lets a test prove that retries neither lost nor
duplicated a call.

Three ways to run it::

    async with FakeOpenAIServer(latency_s=0.01) as srv:          # in the running event loop
        ...srv.base_url...
    with FakeOpenAIServer().in_thread() as srv:                  # own loop in a background thread
        ...
    with FakeOpenAIServer(latency_s=0.05).in_process() as srv:   # own process (benches)
        srv.stats()                                              # fetched over GET /_stats

or from a shell: ``python -m memwise.testing.fake_openai --port 8000 --latency 0.05``.

The modules, one job each: ``_http`` (request parsing, reply writing), ``_connection`` (one client
connection, answered on timers), ``_server`` (lifecycle and endpoints), ``_failures`` (the failure
plan and what each failure looks like), ``_stats`` (counters), ``_runners`` (thread and process
modes), ``_cli`` (the command line).
"""

# The CLI's parsing helpers are not public, but stay importable from here as before the split.
from memwise.testing.fake_openai._cli import _parse_args as _parse_args
from memwise.testing.fake_openai._cli import _server_from_args as _server_from_args
from memwise.testing.fake_openai._cli import main
from memwise.testing.fake_openai._failures import FAILURE_KINDS, FailureKind, FailurePlan
from memwise.testing.fake_openai._runners import ProcessServer, ThreadedServer
from memwise.testing.fake_openai._server import (
    ChatCall,
    FakeOpenAIServer,
    JsonResponder,
    Responder,
    echo_responder,
    hashed_unit_vector,
)
from memwise.testing.fake_openai._stats import ServerStats

__all__ = [
    "FAILURE_KINDS",
    "ChatCall",
    "FailureKind",
    "FailurePlan",
    "FakeOpenAIServer",
    "JsonResponder",
    "ProcessServer",
    "Responder",
    "ServerStats",
    "ThreadedServer",
    "echo_responder",
    "hashed_unit_vector",
    "main",
]

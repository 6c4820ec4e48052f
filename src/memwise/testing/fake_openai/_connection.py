"""One client connection of the fake server, as a raw ``asyncio.Protocol``."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from memwise.testing.fake_openai._http import _Action, _Close, _encode, _error, _parse_request, _Reply

if TYPE_CHECKING:
    from memwise.testing.fake_openai._server import FakeOpenAIServer

log = logging.getLogger("memwise.testing.fake_openai")


class _HTTPConnection(asyncio.Protocol):
    """One client connection: parse requests from the byte stream, answer each on a timer.

    Requests on one connection are answered in order (HTTP/1.1 without pipelining surprises): the next
    is parsed only once the current one is answered. No task per request, just a timer handle, which is
    most of why this serves thousands of requests a second.
    """

    def __init__(self, server: FakeOpenAIServer) -> None:
        self.server = server
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.pending: asyncio.TimerHandle | None = None
        self.busy = False
        self.counted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server._connections.add(self)
        self.server._counters.connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._connections.discard(self)
        if self.pending is not None:
            self.pending.cancel()
            self.pending = None
        self._settle()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._next()

    def abort(self) -> None:
        if self.pending is not None:
            self.pending.cancel()
            self.pending = None
        if self.transport is not None:
            self.transport.abort()

    def _settle(self) -> None:
        if self.busy and self.counted:
            self.server._counters.in_flight -= 1
        self.busy = False

    def _next(self) -> None:
        if self.busy or self.transport is None or self.transport.is_closing():
            return
        try:
            request = _parse_request(self.buffer)
        except ValueError:
            self.transport.write(_encode(_error(400, "malformed HTTP request"), keep_alive=False))
            self.transport.close()
            return
        if request is None:
            return
        self.busy = True
        self.counted = not request.path.endswith("/_stats")  # looking at the counters must not move them
        if self.counted:
            counters = self.server._counters
            counters.in_flight += 1
            counters.max_in_flight = max(counters.max_in_flight, counters.in_flight)
        try:
            action = self.server._decide(request)
        except Exception as exc:  # a faulty responder: say so in a reply rather than drop the connection
            log.exception("fake server failed to answer %s %s", request.method, request.path)
            action = _Action(0.0, _error(500, f"fake server error: {type(exc).__name__}: {exc}"))
        if action.delay_s > 0:
            loop = asyncio.get_running_loop()
            self.pending = loop.call_later(action.delay_s, self._deliver, action.outcome, request.keep_alive)
        else:
            self._deliver(action.outcome, request.keep_alive)

    def _deliver(self, outcome: _Reply | _Close, keep_alive: bool) -> None:
        self.pending = None
        transport = self.transport
        self._settle()
        if transport is None or transport.is_closing():
            return
        if isinstance(outcome, _Close):
            if outcome.partial:
                transport.write(outcome.partial)
            transport.close()
            return
        transport.write(_encode(outcome, keep_alive))
        self.server._count_success(outcome)
        if keep_alive:
            self._next()
        else:
            transport.close()

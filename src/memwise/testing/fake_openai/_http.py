"""The fake server's side of the wire: just enough HTTP/1.1 to read requests and write replies.

Requests arrive as bytes in a connection's buffer; :func:`_parse_request` takes one complete request
(Content-Length or chunked body) off its front, or says it has not all arrived. Replies are always
buffered JSON with a Content-Length. What the server decides to do with a request (:class:`_Action`:
reply, or close the connection after writing part of one, after a delay) is spelt here too, so the
connection, the endpoints and the failure injection share one vocabulary.

This is deliberately separate from the client's parser (:mod:`memwise._transport.http`): the fake is the
independent other end that the client is tested against, and it also serves httpx and urllib.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error"}
_REASONS |= {503: "Service Unavailable", 405: "Method Not Allowed", 411: "Length Required"}
_MAX_HEADER_BYTES = 64 * 1024


@dataclass(slots=True)
class _Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def keep_alive(self) -> bool:
        return self.headers.get("connection", "").lower() != "close"


@dataclass(slots=True)
class _Reply:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    key: str | None = None
    kind: Literal["chat", "embeddings", "other"] = "other"


@dataclass(frozen=True, slots=True)
class _Close:
    """Write ``partial`` (possibly nothing) and close the connection instead of replying."""

    partial: bytes = b""


@dataclass(frozen=True, slots=True)
class _Action:
    """What to do with one request, and after how many seconds."""

    delay_s: float
    outcome: _Reply | _Close


def _json_bytes(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _error(status: int, message: str, *, param: str | None = None, kind: str = "server_error") -> _Reply:
    body = {"error": {"message": message, "type": kind, "param": param, "code": None}}
    return _Reply(status, _json_bytes(body))


def _parse_request(buffer: bytearray) -> _Request | None:
    """Take one complete request off the front of ``buffer``, or None if it has not all arrived."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > _MAX_HEADER_BYTES:
            raise ValueError("request head too large")
        return None
    lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    start = end + 4
    if "chunked" in headers.get("transfer-encoding", "").lower():
        parsed = _parse_chunked(buffer, start)
        if parsed is None:
            return None
        body, stop = parsed
    else:
        stop = start + int(headers.get("content-length", "0"))
        if len(buffer) < stop:
            return None
        body = bytes(buffer[start:stop])
    del buffer[:stop]
    return _Request(method.upper(), target.split("?", 1)[0], headers, body)


def _parse_chunked(buffer: bytearray, pos: int) -> tuple[bytes, int] | None:
    parts: list[bytes] = []
    while True:
        line_end = buffer.find(b"\r\n", pos)
        if line_end < 0:
            return None
        size = int(bytes(buffer[pos:line_end]).split(b";", 1)[0].strip(), 16)
        pos = line_end + 2
        if size == 0:
            trailer_end = buffer.find(b"\r\n\r\n", pos - 2)
            return (b"".join(parts), trailer_end + 4) if trailer_end >= 0 else None
        if len(buffer) < pos + size + 2:
            return None
        parts.append(bytes(buffer[pos : pos + size]))
        pos += size + 2


def _encode(reply: _Reply, keep_alive: bool) -> bytes:
    head = [f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Unknown')}"]
    head.append("Content-Type: application/json")
    head.append(f"Content-Length: {len(reply.body)}")
    if not keep_alive:
        head.append("Connection: close")
    head.extend(f"{k}: {v}" for k, v in reply.headers)
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + reply.body

"""A small keep-alive HTTP/1.1 connection pool for OpenAI-compatible servers on plain ``http://``.

Why the backends do not simply call the openai SDK: with dozens of calls in flight against a local
server, per-call client CPU decides throughput. Measured with ``bench/llm_client.py`` (2,000 calls, 64 in
flight, 50 ms server latency, a 2-core machine, openai 3.54), ``chat.completions.create`` on the SDK's
own httpx client costs ~2.5 ms of CPU per call (~1.45 ms on this pool: httpx's pool rescans and probes
every pooled socket on each request), and even ``client.post`` of pre-encoded JSON on this pool ~0.8 ms,
against ~0.15 ms for the lean path here: a pre-built request head (:class:`Endpoint`) written straight
onto a pooled connection by :meth:`KeepAliveTransport.send_raw`. Through the SDK the bench runs at 2.5x
to 7x its ideal wall time; the lean path stays within its 1.25x target.

:func:`build_http_client` installs the pool only for plain-HTTP endpoints that no proxy setting covers
(local servers, where client CPU dominates); https and proxied URLs get the SDK's own HTTP client, as
remote APIs' network latency dwarfs client CPU. The SDK client of the chat backend runs on the same pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import openai

from memwise._transport.retry import httpx


class _Connection:
    __slots__ = ("reader", "writer", "loop", "idle_since")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.loop = asyncio.get_running_loop()
        self.idle_since = 0.0

    def reusable(self, now: float, expiry: float) -> bool:
        """Idle and still open: a server that closed it meanwhile has left EOF in the reader."""
        return (
            self.loop is asyncio.get_running_loop()
            and not self.reader.at_eof()
            and not self.writer.is_closing()
            and now - self.idle_since < expiry
        )

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):  # its loop may already be closed
            self.writer.close()


@dataclass(frozen=True, slots=True)
class RawReply:
    """One HTTP reply as bytes: what the lean path needs and nothing more."""

    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header_map(self) -> dict[str, str]:
        """Lower-cased header names, for the rare reply (an error) whose headers matter."""
        return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in self.headers}


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds allowed to get a pooled connection, to open one, and to write the request and read the reply."""

    pool: float | None = None
    connect: float | None = None
    read: float | None = None


class KeepAliveTransport(httpx.AsyncBaseTransport):
    """A lean HTTP/1.1 client for plain ``http://`` endpoints, with an O(1) keep-alive pool.

    It sends one buffered request per connection at a time and buffers the whole reply (Content-Length,
    chunked, or until close), which is all JSON APIs need; it does no TLS, proxies or HTTP/2 (the client
    builder only installs it where none are needed). :meth:`send_raw` is the lean path the backends
    use; :meth:`handle_async_request` adapts it to httpx, so the OpenAI SDK runs on the same pool.
    Failures raise httpx's own exception types either way, so every layer above classifies them as usual.

    Args:
        max_connections: connections open at once; further requests wait (up to the pool timeout).
        keepalive_expiry: idle seconds after which a pooled connection is not reused; the default stays
            under uvicorn's (vLLM's) 5 s keep-alive, so the server never closes one as it is reused.
    """

    def __init__(self, *, max_connections: int, keepalive_expiry: float = 4.0) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        self._slots = asyncio.Semaphore(max_connections)
        self._expiry = keepalive_expiry
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._busy: set[_Connection] = set()
        self._closed = False

    async def send_raw(
        self, host: str, port: int, payload: bytes, *, timeouts: Timeouts, head_only: bool = False
    ) -> RawReply:
        """Send ``payload`` (a complete HTTP/1.1 request) to host:port and read the whole reply."""
        if self._closed:
            raise httpx.ConnectError("transport is closed")
        try:
            async with asyncio.timeout(timeouts.pool):
                await self._slots.acquire()
        except TimeoutError as exc:
            raise httpx.PoolTimeout("no free connection in time") from exc
        try:
            key = (host, port)
            conn = self._checkout(key) or await self._connect(key, timeouts.connect)
            self._busy.add(conn)
            try:
                reply, keep = await _exchange(conn, payload, timeouts.read, head_only)
            except BaseException:
                self._busy.discard(conn)
                conn.close()
                raise
            self._busy.discard(conn)
            if keep and not self._closed:
                conn.idle_since = time.monotonic()
                self._idle.setdefault(key, []).append(conn)
            else:
                conn.close()
        finally:
            self._slots.release()
        return reply

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != "http":
            raise httpx.UnsupportedProtocol(f"KeepAliveTransport speaks plain http only, not {url.scheme!r}")
        raw: Mapping[str, float | None] = request.extensions.get("timeout") or {}
        timeouts = Timeouts(raw.get("pool"), raw.get("connect"), raw.get("read"))
        payload = _encode_request(request, await request.aread())
        try:
            reply = await self.send_raw(
                url.host, url.port or 80, payload, timeouts=timeouts, head_only=request.method == "HEAD"
            )
        except httpx.RequestError as exc:
            exc.request = request
            raise
        return httpx.Response(
            reply.status,
            headers=reply.headers,
            stream=httpx.ByteStream(reply.body),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": reply.reason},
        )

    def _checkout(self, key: tuple[str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()  # most recently used first: the likeliest to be alive
            if conn.reusable(now, self._expiry):
                return conn
            conn.close()
        return None

    @staticmethod
    async def _connect(key: tuple[str, int], timeout: float | None) -> _Connection:
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(key[0], key[1], limit=1 << 20)
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"connecting to {key[0]}:{key[1]} timed out") from exc
        except OSError as exc:
            raise httpx.ConnectError(f"cannot connect to {key[0]}:{key[1]}: {exc}") from exc
        return _Connection(reader, writer)

    def close_idle(self) -> None:
        """Close pooled idle connections, for owners that may never be closed themselves."""
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()

    async def aclose(self) -> None:
        self._closed = True
        conns = [c for idle in self._idle.values() for c in idle] + list(self._busy)
        self._idle.clear()
        for conn in conns:
            conn.close()
        for conn in conns:
            if conn.loop is asyncio.get_running_loop():
                with contextlib.suppress(Exception):
                    await conn.writer.wait_closed()


def _encode_request(request: httpx.Request, body: bytes) -> bytes:
    lines = [b"%s %s HTTP/1.1" % (request.method.encode("ascii"), request.url.raw_path)]
    has_length = False
    for name, value in request.headers.raw:
        lowered = name.lower()
        if lowered == b"transfer-encoding":  # the body is buffered: send it with a length instead
            continue
        has_length = has_length or lowered == b"content-length"
        lines.append(name + b": " + value)
    if not has_length and (body or request.method not in ("GET", "HEAD")):
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def _exchange(conn: _Connection, payload: bytes, timeout: float | None, head_only: bool) -> tuple[RawReply, bool]:
    """Write one request and read one reply; also say whether the connection may be reused."""
    reader = conn.reader
    got_any = False
    try:
        async with asyncio.timeout(timeout):
            conn.writer.write(payload)
            await conn.writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            got_any = True
            status, reason, headers, length, chunked, keep = _parse_head(head)
            if head_only or status in (204, 304) or 100 <= status < 200:
                body = b""
            elif chunked:
                body = await _read_chunked(reader)
            elif length is not None:
                body = await reader.readexactly(length)
            else:
                body, keep = await reader.read(), False
    except TimeoutError as exc:
        raise httpx.ReadTimeout("timed out waiting for the reply") from exc
    except asyncio.IncompleteReadError as exc:
        what = "closed the connection mid-reply" if got_any else "closed the connection without replying"
        raise httpx.RemoteProtocolError(f"server {what}") from exc
    except asyncio.LimitOverrunError as exc:
        raise httpx.RemoteProtocolError("reply head too large") from exc
    except OSError as exc:
        kind = httpx.ReadError if got_any else httpx.WriteError
        raise kind(f"connection failed: {exc}") from exc
    except ValueError as exc:
        raise httpx.RemoteProtocolError(f"unreadable reply: {exc}") from exc
    return RawReply(status, reason, headers, body), keep


def _parse_head(head: bytes) -> tuple[int, bytes, list[tuple[bytes, bytes]], int | None, bool, bool]:
    lines = head[:-4].split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    code, _, reason = rest.partition(b" ")
    status = int(code)
    headers: list[tuple[bytes, bytes]] = []
    length: int | None = None
    chunked = False
    keep = version == b"HTTP/1.1"
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        value = value.strip()
        headers.append((name, value))
        lowered = name.lower()
        if lowered == b"content-length":
            length = int(value)
        elif lowered == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif lowered == b"connection":
            token = value.lower()
            keep = b"keep-alive" in token if version != b"HTTP/1.1" else b"close" not in token
    return status, reason, headers, length, chunked, keep


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip(), 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                pass
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


def _proxied(base_url: str) -> bool:
    parts = urlsplit(base_url)
    proxies = urllib.request.getproxies_environment()
    if parts.scheme not in proxies and "all" not in proxies:
        return False
    # proxy_bypass_environment is in urllib.request on every platform but missing from typeshed's stubs;
    # proxy_bypass (which the stubs have) would read the macOS/Windows system settings instead of no_proxy.
    bypass = urllib.request.proxy_bypass_environment  # pyright: ignore[reportAttributeAccessIssue]
    return not bypass(parts.hostname or "", proxies)


def build_http_client(
    base_url: str, *, max_connections: int, timeout_s: float
) -> tuple[httpx.AsyncClient, KeepAliveTransport | None]:
    """The HTTP client for one backend instance, able to hold ``max_connections`` keep-alive connections.

    Plain-HTTP endpoints that no proxy setting covers get :class:`KeepAliveTransport` (returned too, for
    the lean path); everything else the SDK's default client, with its pool limits raised to match.
    """
    timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0))
    if urlsplit(base_url).scheme == "http" and not _proxied(base_url):
        transport = KeepAliveTransport(max_connections=max_connections)
        return httpx.AsyncClient(transport=transport, timeout=timeout, follow_redirects=True), transport
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    return openai.DefaultAsyncHttpxClient(limits=limits, timeout=timeout), None


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A POST endpoint prepared once: where to connect and the request head up to the body length.

    Building the head once is what keeps the lean path's per-call work to a few byte joins.
    """

    url: str
    host: str
    port: int
    head: bytes

    @classmethod
    def of(cls, base_url: str, path: str, headers: Mapping[str, str]) -> Endpoint:
        parts = urlsplit(base_url)
        target = parts.path.rstrip("/") + path + (f"?{parts.query}" if parts.query else "")
        lines = [f"POST {target} HTTP/1.1", f"Host: {parts.netloc.rpartition('@')[2]}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")
        return cls(base_url.rstrip("/") + path, parts.hostname or "", parts.port or 80, head)

    def payload(self, body: bytes) -> bytes:
        return b"%b%d\r\n\r\n%b" % (self.head, len(body), body)


def json_headers(api_key: str, user_agent: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {api_key}",
        "Content-Type": "application/json",
        "Accept": "application/json",
        "User-Agent": user_agent,
    }


@dataclass(frozen=True, slots=True)
class HttpReply:
    """One HTTP reply, however it was fetched (keep-alive transport, httpx, or the SDK)."""

    status: int
    headers: Mapping[str, str]
    body: bytes


async def post_body(
    http: httpx.AsyncClient,
    direct: KeepAliveTransport | None,
    endpoint: Endpoint,
    body: bytes,
    *,
    headers: Mapping[str, str],
    timeouts: Timeouts,
) -> HttpReply:
    """POST ``body`` to ``endpoint``: straight onto the keep-alive pool when there is one, else via httpx.

    Headers of a successful direct reply are not parsed: only error replies (Retry-After) need them.
    """
    if direct is not None:
        raw = await direct.send_raw(endpoint.host, endpoint.port, endpoint.payload(body), timeouts=timeouts)
        return HttpReply(raw.status, raw.header_map() if raw.status >= 400 else {}, raw.body)
    response = await http.post(endpoint.url, content=body, headers=dict(headers))
    return HttpReply(response.status_code, response.headers, response.content)

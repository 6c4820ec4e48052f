"""`memwise serve` as users start it: a real process, configured models, keys, one call through it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import httpx

from memwise.server.auth import create_key
from memwise.testing import FakeOpenAIServer
from memwise.testing.services import free_port, wait_for_health


def test_serve_process_answers_with_a_key(tmp_path: Path) -> None:
    exe = shutil.which("memwise", path=str(Path(sys.executable).parent))
    assert exe is not None
    keys = tmp_path / "keys.json"
    secret, _ = create_key(keys, "acme")
    port = free_port()
    with FakeOpenAIServer(responder=lambda call: "Pepper").in_thread() as fake:
        base = [
            "--base-url",
            fake.base_url,
            "--model",
            "m",
            "--embed-backend",
            "openai",
            "--embed-base-url",
            fake.base_url,
        ]
        cmd = [exe, *base, "serve", "--port", str(port), "--keys", str(keys), "--data-dir", str(tmp_path / "data")]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            url = f"http://127.0.0.1:{port}"
            if not wait_for_health(url, proc, timeout_s=30):
                proc.terminate()
                raise AssertionError(proc.stdout.read() if proc.stdout else "memwise serve did not start")
            h = {"Authorization": f"Bearer {secret}"}
            added = httpx.post(
                f"{url}/v1/memories", json={"messages": [{"content": "I adopted Pepper."}], "user_id": "u"}, headers=h
            )
            assert added.status_code == 200, added.text
            assert httpx.get(f"{url}/ready").json() == {"status": "ready"}
            answer = httpx.post(f"{url}/v1/memories/answer", json={"question": "dog?", "user_id": "u"}, headers=h)
            assert answer.json()["answer"] == "Pepper"
            assert httpx.get(f"{url}/v1/memories", params={"user_id": "u"}).status_code == 401
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            if proc.stdout:
                proc.stdout.close()
    assert (tmp_path / "data" / "tenants" / "acme.sqlite3").is_file()

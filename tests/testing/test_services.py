"""The helpers that start real services for tests and benches."""

from __future__ import annotations

import subprocess
import sys

from memwise.testing.services import free_port, wait_for_health


def test_wait_for_health_gives_up_when_the_server_process_exits() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=30)
    assert wait_for_health(f"http://127.0.0.1:{free_port()}", proc, timeout_s=30) is False

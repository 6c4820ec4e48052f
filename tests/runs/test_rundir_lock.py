"""One writer per run directory: a second process is refused with the holder named; dead holders don't block."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from memwise.cli import app
from memwise.exceptions import RunDirBusyError
from memwise.runs.lock import LOCK_NAME, LockHolder
from memwise.runs.rundir import RunDir

WORKER = Path(__file__).with_name("_lock_worker.py")
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
MMLU = {"question": "Which planet is known as the red planet?", "type": "astronomy", "choices": ["Venus", "Mars"]}


@contextmanager
def holder(run_dir: Path, records: int) -> Iterator[subprocess.Popen[str]]:
    """A worker process that has opened (and so locked) ``run_dir`` and is writing ``records`` lines."""
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), str(run_dir), str(records)], env=ENV, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        proc.stdout.close()  # type: ignore[union-attr]


def record_pids(run_dir: Path) -> set[int]:
    return {json.loads(line)["pid"] for line in (run_dir / "records.jsonl").read_text().splitlines()}


def test_a_second_umem_evolve_on_a_busy_run_dir_fails_naming_the_holder(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    data = tmp_path / "mmlu.jsonl"
    data.write_text(json.dumps({**MMLU, "answer": 1}) + "\n")
    with holder(run_dir, records=40) as first:
        second = subprocess.run(
            [sys.executable, "-c", "from memwise.cli import main; main()",
             "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--embed-backend", "openai",
             "--embed-base-url", "http://127.0.0.1:9/v1",
             "umem", "evolve", "--suite", "mmlu", "--path", str(data), "--run-dir", str(run_dir)],
            env=ENV, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert second.returncode == 1, second.stderr
        assert f"in use by pid {first.pid}" in second.stderr and "'lock-worker'" in second.stderr
        assert "another --run-dir" in second.stderr and "Traceback" not in second.stderr
        # A plain library writer is refused the same way while the first still writes.
        other = subprocess.run(
            [sys.executable, str(WORKER), str(run_dir), "5"], env=ENV, capture_output=True, text=True, timeout=60
        )
        assert other.returncode != 0 and "RunDirBusyError" in other.stderr
        assert first.wait(timeout=60) == 0
    # Nothing of the refused runs reached the folder: no manifest, no records of theirs.
    assert not (run_dir / "manifest.json").exists()
    assert record_pids(run_dir) == {first.pid}
    assert len((run_dir / "records.jsonl").read_text().splitlines()) == 40
    # Released on close: the next writer gets in.
    done = subprocess.run([sys.executable, str(WORKER), str(run_dir), "2"], env=ENV, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with holder(run_dir, records=10_000) as first:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    stale = LockHolder.parse((run_dir / LOCK_NAME).read_text())
    assert stale is not None and stale.pid == first.pid and not stale.alive()
    with RunDir(run_dir) as run:
        now = LockHolder.parse((run_dir / LOCK_NAME).read_text())
        assert now is not None and now.pid == os.getpid()
        assert run.ledger.count_calls() == 0


def test_without_flock_a_dead_pid_is_stale_and_a_live_one_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unsupported(fd: int, op: int) -> None:
        raise OSError(errno.ENOLCK, "no locks available")

    monkeypatch.setattr(fcntl, "flock", unsupported)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = tmp_path / LOCK_NAME
    lock.write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename, "command": "x", "started_at": "t"}))
    with RunDir(tmp_path):
        pass
    lock.write_text(json.dumps({"pid": os.getppid(), "host": os.uname().nodename, "command": "y", "started_at": "t"}))
    with pytest.raises(RunDirBusyError, match=f"in use by pid {os.getppid()}") as info:
        RunDir(tmp_path)
    assert info.value.pid == os.getppid() and info.value.command == "y"


def test_in_one_process_a_second_writer_is_refused_and_readers_need_no_lock(tmp_path: Path) -> None:
    with RunDir(tmp_path) as run:
        with pytest.raises(RunDirBusyError, match="this process"):
            RunDir(tmp_path)
        with RunDir(tmp_path, lock=False) as reader:
            assert reader.ledger.count_calls() == run.ledger.count_calls() == 0
    with RunDir(tmp_path):
        pass  # closing gave the lock back


def test_metamem_report_reads_a_run_that_another_process_holds(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "metamem").mkdir(parents=True)
    (run_dir / "metamem" / "result.json").write_text(json.dumps({"best_step": 0, "rules": {"rules": []}}))
    with holder(run_dir, records=40):
        result = CliRunner().invoke(app, ["metamem", "report", "--run-dir", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert (run_dir / "metamem" / "report.md").exists()

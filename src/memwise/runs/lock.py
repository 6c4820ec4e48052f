"""One writer per run directory: an exclusive lock file, so two processes never interleave one run.

Two ``memwise umem evolve`` (or ``metamem train``) started on the same folder would otherwise both
append to the same records and ledger and both exit 0. The lock is an ``fcntl.flock`` on
``<run>/run.lock``: the kernel drops it when its process dies, however it dies (``kill -9``
included), so a crashed run never blocks the next one. The file also holds the holder's pid, host,
command and start time, which is what the error names when a second process is refused.

A lock file naming a dead pid is stale and is taken over. With ``flock`` this needs no special case
(a dead process holds no lock); the pid is also the whole test on filesystems where ``flock`` is not
supported (some network mounts), where a live holder on this host is honoured and a dead one is not.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from memwise.exceptions import RunDirBusyError, StoreError

LOCK_NAME = "run.lock"

log = logging.getLogger(__name__)

# flock unsupported on this file's filesystem: fall back on the recorded pid.
_NO_FLOCK = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL})


@dataclass(frozen=True, slots=True)
class LockHolder:
    """Who holds (or last held) a run directory's lock."""

    pid: int
    host: str
    command: str
    started_at: str

    @classmethod
    def me(cls, command: str | None = None) -> LockHolder:
        """This process, described by its command line unless ``command`` names it."""
        if command is None:
            command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else "python"
        return cls(os.getpid(), socket.gethostname(), command, time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    @classmethod
    def parse(cls, text: str) -> LockHolder | None:
        """The holder written in a lock file, or None when it is empty or unreadable (a torn write)."""
        try:
            data = json.loads(text)
            return cls(int(data["pid"]), str(data["host"]), str(data["command"]), str(data["started_at"]))
        except (ValueError, KeyError, TypeError):
            return None

    def alive(self) -> bool:
        """Whether this holder's process still runs; a pid on another host is assumed alive."""
        if self.host != socket.gethostname():
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # it exists, under another user
        return True


class RunLock:
    """The exclusive lock of one run directory; ``acquire`` raises :class:`RunDirBusyError` if taken.

    Example:
        >>> import tempfile, pathlib
        >>> lock = RunLock(pathlib.Path(tempfile.mkdtemp()))
        >>> lock.acquire()
        >>> lock.held
        True
        >>> lock.release()
    """

    def __init__(self, directory: Path, *, command: str | None = None) -> None:
        self.path = Path(directory) / LOCK_NAME
        self.command = command
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this instance holds the lock now."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock and write who holds it; a no-op if already held, RunDirBusyError if another process does."""
        if self._fd is not None:
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot create the run lock {self.path}: {exc}; check the folder's permissions") from exc
        try:
            self._lock(fd)
            previous = LockHolder.parse(_read(fd))
            if previous is not None and previous.pid != os.getpid():
                log.info("taking over the stale lock of %s (pid %d, no longer running)", self.path.parent, previous.pid)
            me = LockHolder.me(self.command)
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(asdict(me)).encode("utf-8"), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        """Give the lock up; the file stays (removing it would let two later openers lock different files)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing the last descriptor drops the flock

    def _lock(self, fd: int) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            holder = LockHolder.parse(_read(fd))
        except OSError as exc:
            if exc.errno not in _NO_FLOCK:
                raise StoreError(f"cannot lock the run directory {self.path.parent}: {exc}") from exc
            holder = LockHolder.parse(_read(fd))
            if holder is None or not holder.alive() or holder.pid == os.getpid():
                return  # no working flock here: a dead (or no) recorded holder is stale
        raise busy_error(self.path, holder)


def busy_error(lock_path: Path, holder: LockHolder | None) -> RunDirBusyError:
    """The error for a refused lock: who holds it and what to do."""
    directory = lock_path.parent
    if holder is None:
        who = f"another process ({lock_path} does not say which; `fuser {lock_path}` does)"
    elif holder.pid == os.getpid() and holder.host == socket.gethostname():
        who = f"this process (pid {holder.pid}): another RunDir on it is still open; close that one first"
    else:
        state = "" if holder.alive() else ", which has exited; a child process it started still holds the lock"
        who = f"pid {holder.pid} on {holder.host} ({holder.command!r}, started {holder.started_at}{state})"
    return RunDirBusyError(
        f"run directory {directory} is in use by {who}. Two runs writing one folder would interleave their "
        "records; wait for that run to finish (or stop it), or pass another --run-dir. The lock is released "
        "as soon as its holder exits, even after kill -9.",
        directory=str(directory),
        pid=None if holder is None else holder.pid,
        command=None if holder is None else holder.command,
    )


def _read(fd: int) -> str:
    return os.pread(fd, 4096, 0).decode("utf-8", "replace")

"""Atomic file writes: a reader or a crash sees the old file or the new one, never half of one."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from memwise.exceptions import StoreError


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` through a uniquely named temporary file in the same folder.

    The temporary file is flushed to disk before it is renamed over the target, and removed if
    anything fails, so a killed process leaves either the previous file or the complete new one.

    Example:
        >>> import tempfile, pathlib
        >>> p = write_text_atomic(pathlib.Path(tempfile.mkdtemp()) / "a" / "x.json", "{}")
        >>> p.read_text()
        '{}'
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Not tempfile.NamedTemporaryFile: it creates the file 0600, and the rename kept that, so reports and
    # manifests were unreadable by anyone but their writer. O_EXCL on a unique name is as safe, and mode
    # 0o666 lets the umask decide, like any file the user writes.
    tmp = target.parent / f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def remove_sqlite(path: str | os.PathLike[str]) -> None:
    """Delete a SQLite database file with its WAL, shared-memory and journal side files."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(str(path) + suffix).unlink(missing_ok=True)


def snapshot_sqlite(src: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """Copy a live (WAL) SQLite database's committed state to ``dest`` atomically, via SQLite's backup API.

    A plain file copy of a WAL database can miss the pages still in the ``-wal`` file, or catch a
    checkpoint half done; the backup API reads a consistent snapshot while writers carry on.
    """
    import sqlite3
    from contextlib import closing

    target = Path(dest)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    remove_sqlite(tmp)
    with closing(sqlite3.connect(src)) as source, closing(sqlite3.connect(tmp)) as copy:
        source.backup(copy)
    os.replace(tmp, target)
    return target


def restore_sqlite(snapshot: str | os.PathLike[str], dest: str | os.PathLike[str]) -> None:
    """Replace the database at ``dest`` (closed by every user) with a snapshot, side files included."""
    target = Path(dest)
    remove_sqlite(target)
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.copyfile(snapshot, tmp)
    os.replace(tmp, target)


def append_jsonl(path: str | os.PathLike[str], row: Mapping[str, Any]) -> None:
    """Append one JSON line, flushed to disk before returning: for logs whose lines are commits."""
    line = json.dumps(dict(row), ensure_ascii=False, sort_keys=True) + "\n"
    with Path(path).open("a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: str | os.PathLike[str]) -> list[Any]:
    """The complete lines of an append-only JSONL log; a torn last line (a write cut short) is removed.

    Only the last line can be torn, since lines are appended one at a time; a bad line anywhere
    else means the file was edited, which is refused (:class:`StoreError` naming the line) rather
    than guessed around.
    """
    target = Path(path)
    if not target.exists():
        return []
    raw = target.read_bytes()
    lines = raw.split(b"\n")
    complete, tail = lines[:-1], lines[-1]  # text after the last newline was never committed
    rows: list[Any] = []
    for number, line in enumerate(complete, start=1):
        try:
            rows.append(json.loads(line))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise StoreError(f"{target}: line {number} is not JSON ({exc}); the log was edited or damaged") from exc
    if tail:
        with target.open("r+b") as fh:
            fh.truncate(len(raw) - len(tail))
    return rows

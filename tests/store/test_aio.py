"""AsyncStore: a task cancelled mid-transaction (a server's request dropped by its client) leaves no lock behind."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from memwise.store.aio import AsyncStore
from memwise.store.base import Record
from memwise.store.sqlite import SQLiteStore


async def test_a_task_cancelled_while_waiting_for_the_write_lock_leaves_no_transaction_open(tmp_path: Path) -> None:
    # Another process holds the write lock; a server task opening a transaction waits for it in a worker
    # thread, and is cancelled meanwhile. The worker gets the lock once it is free: it must give it back
    # (rolled back) rather than hold it for good, blocking every writer of the file.
    path = tmp_path / "mem.db"
    holder = SQLiteStore(path)
    astore = AsyncStore(SQLiteStore(path, busy_timeout_s=0.05))
    held = threading.Event()

    def hold() -> None:
        with holder.transaction():
            holder.add([Record(text="held", id="held")])
            held.set()
            time.sleep(1.0)

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(10)

    async def write() -> None:
        async with astore.transaction():
            await astore.add([Record(text="never", id="never")])

    task = asyncio.create_task(write())
    await asyncio.sleep(0.3)  # the task is waiting for the lock now
    task.cancel()
    with pytest.raises(asyncio.CancelledError) as cancelled:
        await task
    await asyncio.to_thread(thread.join)
    await asyncio.sleep(1.5)  # past the worker's longest back-off: it has taken the lock by now
    later = SQLiteStore(path, busy_timeout_s=0.2, retry_budget_s=5.0)
    try:
        later.add([Record(text="later", id="later")])  # StoreError (still locked) if the lock was kept
        assert later.get("never") is None and later.get("held") is not None
        await astore.add([Record(text="again", id="again")])  # the async store is usable too
        assert later.get("again") is not None
    finally:
        del cancelled  # its traceback holds the task's frames, as a server's error log or a cycle might
        later.close()
        holder.close()
        await astore.close()

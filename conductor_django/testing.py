"""Helpers for tests of projects that use conductor_django."""

from __future__ import annotations

import time
from collections.abc import Sequence

from .runtime.worker import Worker


def drain(queues: Sequence[str] | None = None, timeout: float = 60) -> int:
    """Run every execution that is runnable now, in this thread; return how many ran.

    Handlers run on the calling thread and its database connection, so they see data
    of the surrounding test transaction. Raises ``TimeoutError`` after ``timeout`` s.
    """
    deadline = time.monotonic() + timeout
    total = 0
    while True:
        worker = Worker(queues=queues, concurrency=0, drain=True, handle_signals=False)
        ran = worker.run()
        total += ran
        if ran == 0:
            return total
        if time.monotonic() >= deadline:
            raise TimeoutError(f"drain did not finish within {timeout} s ({total} ran)")

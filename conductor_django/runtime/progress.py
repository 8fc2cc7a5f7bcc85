"""``ctx.progress(done, total=None, message="")``: throttled writes of ``Execution.progress``.

The first report is written at once, later ones at most every ``INTERVAL`` seconds: a
report arriving sooner is kept and written by the next report after the interval, at
the next step, or when the attempt ends (``flush``, called by the runner before the
outcome is written), so the last value is always stored. Every write is fenced by the
lease, like a step.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from ..definitions.values import storable_text

logger = logging.getLogger("conductor_django.worker")

#: Seconds between two writes of one execution's progress.
INTERVAL = 0.25
#: Characters kept of a progress message.
MESSAGE_LENGTH = 500


def progress_value(done: Any, total: Any = None, message: Any = "") -> dict[str, Any]:
    """``{"done", "total", "message"}`` after checking each (``TypeError``/``ValueError``).

    The message is made storable as a log line is (a NUL becomes ``\\x00``, a lone
    surrogate ``\\udXXX``): a file name read from elsewhere must not fail the attempt.
    """
    for what, value in (("done", done), ("total", total)):
        if value is None and what == "total":
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"progress {what} must be a number, got {value!r}")
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"progress {what} must be a finite number >= 0, got {value!r}")
    if not isinstance(message, str):
        raise TypeError(f"progress message must be a str, got {message!r}")
    return {"done": done, "total": total,
            "message": storable_text(message[:MESSAGE_LENGTH])[:MESSAGE_LENGTH]}


class Progress:
    """The progress reports of one attempt; ``write`` stores one (fenced by the lease)."""

    def __init__(self, write: Callable[[dict[str, Any]], None]) -> None:
        self._write = write
        self._lock = threading.Lock()
        self._pending: dict[str, Any] | None = None
        self._last = -math.inf

    def report(self, done: Any, total: Any = None, message: Any = "") -> None:
        value = progress_value(done, total, message)
        with self._lock:
            self._pending = value
        self.flush(due_only=True)

    def idle(self) -> bool:
        """Whether no report waits to be written."""
        return self._pending is None

    def flush(self, *, due_only: bool = False) -> None:
        """Write the pending report (``due_only``: only if the interval has passed)."""
        with self._lock:
            value = self._pending
            if value is None or (due_only and time.monotonic() - self._last < INTERVAL):
                return
            self._pending = None
            self._last = time.monotonic()
            self._write(value)

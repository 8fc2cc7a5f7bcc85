"""SIGTERM and SIGINT as a graceful stop, for the worker and for the ``--processes``
parent alike."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("conductor_django.worker")


def on_stop_signals(stop: Callable[[], None],
                    announce: Callable[[], bool] = lambda: True) -> Callable[[], None]:
    """Make SIGTERM and SIGINT call ``stop`` (logged when ``announce()`` says so); returns
    what puts the previous handlers back. Signals are the main thread's: elsewhere (a
    worker run from a thread) this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

    def handler(signum: int, frame: Any) -> None:
        if announce():
            logger.info("received %s: stopping", signal.Signals(signum).name)
        stop()

    for s in previous:
        signal.signal(s, handler)

    def restore() -> None:
        for s, h in previous.items():
            signal.signal(s, h)

    return restore

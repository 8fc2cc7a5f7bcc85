"""``conductor_worker --reload``: restart the worker when the code changes (development).

Django's autoreloader (the one ``runserver`` uses) runs the worker in a child process,
in a thread of it, and watches the modules it imported. When a file changes, the
worker is first stopped as on SIGTERM (running handlers get ``shutdown_timeout`` to
finish, the rest are released and run again), then the reloader starts a new child,
which imports the changed code. Ctrl-C and SIGTERM stop the worker the same way.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Protocol

from django.utils import autoreload

logger = logging.getLogger("conductor_django.worker")


class Stoppable(Protocol):
    def run(self) -> int: ...

    def stop(self) -> None: ...


def run_with_reloader(worker: Stoppable, shutdown_timeout: float) -> None:
    """Run ``worker`` under Django's autoreloader; returns when it was stopped."""
    started, finished = threading.Event(), threading.Event()

    def main() -> None:
        started.set()
        try:
            worker.run()
        finally:
            finished.set()

    def stop_first(sender: Any, file_path: Any, **kwargs: Any) -> None:
        logger.warning("%s changed: stopping the worker, then restarting it", file_path)
        drain(worker, finished, shutdown_timeout)

    autoreload.file_changed.connect(stop_first, weak=False)
    try:
        autoreload.run_with_reloader(main)
    finally:  # Ctrl-C or SIGTERM ended the reloader's loop (in the child: stop the worker)
        autoreload.file_changed.disconnect(stop_first)
        if started.is_set():
            drain(worker, finished, shutdown_timeout)


def drain(worker: Stoppable, finished: threading.Event, shutdown_timeout: float) -> None:
    """Stop ``worker`` gracefully and wait for its ``run`` to return."""
    if finished.is_set():
        return
    worker.stop()
    # the worker waits up to shutdown_timeout for its handlers, then releases the rest
    finished.wait(shutdown_timeout + 30)

"""``conductor_worker --processes N``: one parent process supervising N worker processes.

Each child is a fresh interpreter (``multiprocessing``'s "spawn" start method: nothing
is forked, so no connection, lock or thread of the parent is shared) that runs
``manage.py conductor_worker`` with the parent's options and ``--supervised``: it sets
Django up, opens its own connections and registers its own ``Worker`` row, with its
own claims, handler threads and event loop, exactly like a worker started by hand.
The parent touches no database while it supervises; it only:

* restarts a child that dies (a crash, ``kill -9``, the OOM killer) after a pause
  that doubles while restarts follow each other (``RESTART_FIRST`` up to
  ``RESTART_CAP`` seconds; a child that ran ``RESTART_RESET`` seconds starts the
  count over), so that a crash loop does not spin. What the dead child ran is
  recovered like any dead worker's, by the live ones, after ``WORKER_DEAD_AFTER``;
* passes SIGTERM/SIGINT on to every child (each drains within ``--shutdown-timeout``),
  waits for them and exits 0; a child still running ``STOP_GRACE`` seconds after that
  timeout is killed (its executions are then recovered as a dead worker's);
* with ``--drain``, exits when every child has drained (non-zero if one failed);
* with ``--metrics-port``, serves the counters of all children summed
  (``metrics.SharedCounters``: a temporary directory the children count into, removed
  on exit).

A child whose parent disappears (``kill -9`` of the parent) must not run on forever:
``watch_parent`` (called by the supervised command) waits on the pipe that
``multiprocessing`` keeps open between parent and child, and stops the worker the way
SIGTERM does when the pipe closes.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing import connection as mp_connection
from typing import Any, TextIO

from django.core.management import execute_from_command_line
from django.db import connections

from .. import metrics
from .stopping import on_stop_signals

logger = logging.getLogger("conductor_django.worker")

#: First pause before restarting a child that died, in seconds; it doubles up to the cap.
RESTART_FIRST = 1.0
RESTART_CAP = 60.0
#: A child that ran this long before dying is restarted after ``RESTART_FIRST`` again.
RESTART_RESET = 60.0
#: Seconds a stopping child gets beyond ``--shutdown-timeout`` (releasing what it ran,
#: removing its row) before the parent kills it.
STOP_GRACE = 10.0


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity), which ``--processes auto`` uses."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - no affinity on this platform (macOS)
        return max(1, os.cpu_count() or 1)


def setup_logging(stream: TextIO, verbosity: int, *, pid: bool = False) -> None:
    """Log ``conductor_django`` to ``stream`` unless the project configured logging;
    ``pid``: name the process on each line (the children of one supervisor share it)."""
    log = logging.getLogger("conductor_django")
    if log.handlers or logging.getLogger().handlers:
        return  # the project configured logging itself
    handler = logging.StreamHandler(stream)
    where = "%(name)s[%(process)d]" if pid else "%(name)s"
    handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {where}: %(message)s"))
    log.addHandler(handler)
    log.setLevel({0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG))


def watch_parent() -> None:
    """In a supervised child: stop this worker (as SIGTERM does) when its parent is gone,
    however it ended. A no-op in a process that ``multiprocessing`` did not start."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()  # returns when the parent's end of the pipe closes: it exited
        logger.warning("the supervising process %s is gone: stopping", parent.pid)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="conductor-parent-watch", daemon=True).start()


@dataclass
class _Child:
    """One of the N places: the process running there now, and when to restart it."""

    number: int
    pause: float  # the next restart's pause
    process: Any = None  # multiprocessing.Process while one runs
    started: float = 0.0
    restart_at: float | None = None
    done: bool = False  # drain: this child drained (or failed) and is not restarted
    failed: int = 0  # drain: the exit code of a child that failed


class Supervisor:
    """Runs ``processes`` children of ``conductor_worker <child_args>`` until stopped.

    ``child_args`` are the command-line options of each child (the supervisor adds
    ``--supervised``); ``drain`` and ``shutdown_timeout`` must match them.
    """

    def __init__(
        self,
        *,
        processes: int,
        child_args: Sequence[str],
        drain: bool = False,
        shutdown_timeout: float = 30.0,
        metrics_port: int | None = None,
        metrics_host: str = "127.0.0.1",
        handle_signals: bool = True,
        restart_backoff: tuple[float, float] = (RESTART_FIRST, RESTART_CAP),
    ) -> None:
        if processes < 1:
            raise ValueError("processes must be >= 1")
        if not 0 < restart_backoff[0] <= restart_backoff[1]:
            raise ValueError("restart_backoff must be (first, cap) with 0 < first <= cap")
        self.processes = processes
        self.child_args = [*child_args, "--supervised"]
        self.drain = drain
        self.shutdown_timeout = float(shutdown_timeout)
        self.metrics_port = metrics_port
        self.metrics_host = metrics_host
        self.handle_signals = handle_signals
        self._context = multiprocessing.get_context("spawn")
        self.restart_first, self.restart_cap = map(float, restart_backoff)
        self._children = [_Child(n, self.restart_first) for n in range(1, processes + 1)]
        self._stop_requested = False
        self._stop_deadline: float | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._restarts = 0
        self._shared: metrics.SharedCounters | None = None
        self._server: Any = None

    # --- public ------------------------------------------------------------------------

    def serve_metrics(self) -> None:
        """Bind ``--metrics-port`` (before ``run``, so that a port in use is an error at
        start); raises ``OSError`` when the address cannot be bound."""
        if self.metrics_port is None or self._server is not None:
            return
        self._shared = metrics.SharedCounters()
        try:
            self._server = metrics.serve(self.metrics_port, self.metrics_host,
                                         directory=self._shared.directory,
                                         processes=self.counts)
        except BaseException:
            self._shared.close()
            self._shared = None
            raise

    def counts(self) -> tuple[int, int]:
        """How many children run now, and how many were restarted (read by the
        metrics server's thread)."""
        return sum(c.process is not None for c in self._children), self._restarts

    def stop(self) -> None:
        """Ask every child to drain and the supervisor to exit (what SIGTERM does)."""
        self._stop_requested = True
        try:
            os.write(self._wake_w, b"s")
        except OSError:
            pass  # the pipe is full of wake-ups already, or ``run`` has ended

    def run(self) -> int:
        """Supervise until stopped (or, with ``drain``, until every child drained);
        returns the exit status: 0, or with ``drain`` the code of a child that failed."""
        connections.close_all()  # the parent needs no database while it supervises
        self.serve_metrics()
        restore = self._install_signals()
        previous_env = os.environ.get(metrics.SHARED_ENV)
        if self._shared is not None:  # read by the children's prometheus_client
            os.environ[metrics.SHARED_ENV] = self._shared.directory
        try:
            logger.info("starting %d worker processes (parent pid %d)", self.processes,
                        os.getpid())
            for child in self._children:
                self._start(child)
            while not self._finished():
                self._wait()
                if self._stop_requested and self._stop_deadline is None:
                    self._stop_all()
                self._reap()
                self._restart_due()
                self._kill_late()
        finally:
            self._kill_all()
            restore()
            if previous_env is None:
                os.environ.pop(metrics.SHARED_ENV, None)
            else:
                os.environ[metrics.SHARED_ENV] = previous_env
            self._close_metrics()
            os.close(self._wake_r)
            os.close(self._wake_w)
        failed = [c.failed for c in self._children if c.failed]
        logger.info("all worker processes stopped")
        return failed[0] if failed and self._stop_deadline is None else 0

    # --- the children ------------------------------------------------------------------

    def _start(self, child: _Child) -> None:
        argv = ["manage.py", "conductor_worker", *self.child_args]
        process = self._context.Process(target=execute_from_command_line, args=(argv,),
                                        name=f"conductor-worker-{child.number}", daemon=False)
        process.start()
        child.process, child.started, child.restart_at = process, time.monotonic(), None
        logger.info("worker process %d started: pid %s", child.number, process.pid)

    def _reap(self) -> None:
        """Notice the children that exited; schedule a restart of those that died."""
        now = time.monotonic()
        for child in self._children:
            process = child.process
            if process is None or process.exitcode is None:
                continue
            code, pid = process.exitcode, process.pid
            process.join()
            process.close()  # its end of the pipe: no descriptor leaks across restarts
            child.process = None
            if self._stop_deadline is not None:
                logger.info("worker process %d (pid %s) stopped: %s", child.number, pid,
                            _exit_text(code))
            elif self.drain and code == 0:
                child.done = True
                logger.info("worker process %d (pid %s) drained", child.number, pid)
            elif self.drain and code > 0:  # an error, not a kill: running it again won't help
                child.done, child.failed = True, code
                logger.error("worker process %d (pid %s) %s", child.number, pid,
                             _exit_text(code))
            else:
                if now - child.started >= RESTART_RESET:
                    child.pause = self.restart_first
                child.restart_at = now + child.pause
                logger.warning("worker process %d (pid %s) %s; restarting it in %g s",
                               child.number, pid, _exit_text(code), child.pause)
                child.pause = min(child.pause * 2, self.restart_cap)

    def _restart_due(self) -> None:
        if self._stop_deadline is not None:
            return
        now = time.monotonic()
        for child in self._children:
            if child.process is None and child.restart_at is not None and child.restart_at <= now:
                self._start(child)
                self._restarts += 1

    def _finished(self) -> bool:
        if any(child.process is not None for child in self._children):
            return False
        return self._stop_deadline is not None or all(c.done for c in self._children)

    def _wait(self) -> None:
        """Until a child exits, a signal arrives or the next restart or deadline is due."""
        due = [c.restart_at for c in self._children if c.restart_at is not None]
        if self._stop_deadline is not None:
            due = [self._stop_deadline]
        timeout = max(0.0, min(due) - time.monotonic()) if due else None
        sentinels: list[Any] = [c.process.sentinel for c in self._children if c.process]
        if self._wake_r in mp_connection.wait([*sentinels, self._wake_r], timeout):
            os.read(self._wake_r, 512)

    def _stop_all(self) -> None:
        self._stop_deadline = time.monotonic() + self.shutdown_timeout + STOP_GRACE
        alive = [c.process for c in self._children if c.process is not None]
        logger.info("stopping: %d worker processes drain (up to %g s)", len(alive),
                    self.shutdown_timeout)
        for child in self._children:
            child.restart_at = None
        for process in alive:
            _signal(process, signal.SIGTERM)

    def _kill_late(self) -> None:
        if self._stop_deadline is None or time.monotonic() < self._stop_deadline:
            return
        for child in self._children:
            if child.process is not None and child.process.exitcode is None:
                logger.warning("worker process %d (pid %s) did not stop in time: killed",
                               child.number, child.process.pid)
                _signal(child.process, signal.SIGKILL)
        self._stop_deadline = time.monotonic() + STOP_GRACE  # the next look, not a spin

    def _kill_all(self) -> None:
        """Leaving with children still running (an error in the supervisor): kill them,
        rather than leave workers that nobody supervises."""
        for child in self._children:
            if child.process is not None and child.process.exitcode is None:
                _signal(child.process, signal.SIGKILL)
                child.process.join(5)

    def _close_metrics(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._shared is not None:
            self._shared.close()
            self._shared = None

    def _install_signals(self) -> Callable[[], None]:
        if not self.handle_signals:
            return lambda: None
        return on_stop_signals(self.stop, announce=lambda: not self._stop_requested)


def _signal(process: Any, signum: int) -> None:
    try:
        os.kill(process.pid, signum)
    except ProcessLookupError:
        pass  # exited meanwhile; reaped at the next turn


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


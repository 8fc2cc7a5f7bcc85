"""The ``django_q`` engine: executions run in django-q2 ``qcluster`` processes.

```
CONDUCTOR = {"ENGINE": "django_q"}
INSTALLED_APPS = [..., "django_q", "conductor_django"]
Q_CLUSTER = {"name": "conductor", "orm": "default", "timeout": 600, "retry": 660}
```

Two sides:

* **Dispatcher** (``conductor_worker`` with this engine): claims runnable executions
  exactly as the database engine does (``Execution.objects.claim``: priorities, queues, delays,
  retries and resumed sleeps are all decided there), holds them as ``running`` under
  its own worker id, and sends each execution id, and nothing else, through
  django-q2's broker (``async_task(run, execution_id)``). It keeps at most ``window``
  executions in the broker, so the broker stays short and priorities hold. Every
  other duty of the worker (heartbeat, recovery of dead workers) is unchanged.
  Held executions whose cancellation is requested end ``cancelled`` without running;
  held executions not taken over within ``resend_after`` seconds (a message lost with a
  qcluster that died) are sent again; on shutdown the dispatcher releases what it holds
  (``pending``, not a new attempt) and a stale message then changes nothing.
* **Runner** (``run``, the django-q2 task function, in a qcluster worker process):
  takes the execution over from its dispatcher with one fenced update
  (``Execution.objects.handover``: only a row held by a dispatcher moves, so duplicated or stale
  messages are harmless), then runs it with the same ``runner.run`` as the database
  engine. Each qcluster worker process registers itself as a ``Worker`` row (role
  ``qcluster``) and starts a watcher thread that heartbeats, delivers cancellations
  (LISTEN/NOTIFY on PostgreSQL, a poll every ``CANCEL_POLL_INTERVAL`` everywhere) and
  aborts timed-out attempts; so steps, cancellation, sleeps and child executions behave
  as with the database engine, and a killed qcluster process is recovered like a killed
  worker.

Hard time limit: django-q2 raises ``TimeoutException`` in the task function after
``Q_CLUSTER["timeout"]`` seconds; the attempt then fails (and is retried like any
failure) with ``last_error`` "Hard time limit exceeded: ...", and django-q2 replaces
the worker process.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from datetime import timedelta

from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, InterfaceError, connections, router
from django.utils import timezone

from .. import conf
from ..definitions.registry import get_task
from ..models import Execution
from ..models import Worker as WorkerRow
from ..runtime import Runtime, aio_runner, listener, runner, unit
from ..runtime.cancellation import deliver
from ..runtime.housekeeper import Housekeeper
from ..runtime.sessions import enroll
from ..state import Claimed

logger = logging.getLogger("conductor_django.worker")

DB_ERRORS = (DatabaseError, InterfaceError)
RUN = "conductor_django.engines.django_q.run"


def _require_django_q() -> None:
    if not apps.is_installed("django_q"):
        raise ImproperlyConfigured(
            'CONDUCTOR["ENGINE"] = "django_q" needs "django_q" in INSTALLED_APPS'
        )


# --- dispatcher (conductor_worker) -------------------------------------------------------


class Dispatcher:
    """Claims executions and sends their ids to django-q2, at most ``window`` at a time."""

    role = WorkerRow.Role.DISPATCHER

    def __init__(self, *, worker_id: uuid.UUID, using: str, window: int,
                 batch_size: int) -> None:
        _require_django_q()
        from django_q.brokers import get_broker
        from django_q.conf import Conf

        self.worker_id = worker_id
        self.using = using
        self.window = max(1, window)
        self.batch_size = max(1, batch_size)
        self.broker = get_broker()
        # A message not taken over by then was lost (e.g. with a qcluster killed after
        # it had fetched it); django-q2's own redelivery (``retry``) comes first.
        self.resend_after = max(float(conf.get("WORKER_DEAD_AFTER")), float(Conf.RETRY or 0))

    def dispatch(self, queues: list[str]) -> list[Claimed]:
        """Claim up to the free part of the window and send the ids; returns what was sent."""
        free = self.window - Execution.objects.held_count(self.worker_id, self.using)
        if free <= 0:
            return []
        claimed = Execution.objects.claim(self.worker_id, queues,
                                          min(free, self.batch_size), self.using)
        for n, item in enumerate(claimed):
            try:
                self._send(item.id)
            except Exception:
                logger.exception("could not send %s to the django-q2 broker; released", item.id)
                now = timezone.now()
                for rest in claimed[n:]:
                    Execution.objects.release(rest.id, self.worker_id, rest.lease, now, self.using)
                return []
            logger.info(
                "dispatch %s %s attempt %d/%d", item.task_name, item.id, item.attempts,
                item.max_attempts, extra={"execution_id": item.id, "task_name": item.task_name},
            )
        return claimed

    def periodic(self) -> None:
        """End cancelled held executions; send again those not taken over in time."""
        done = Execution.objects.finish_cancelled_held(self.worker_id, self.using)
        if done:
            logger.info("%d dispatched executions were cancelled before they started", done)
        older_than = timezone.now() - timedelta(seconds=self.resend_after)
        stale = Execution.objects.stale_held(self.worker_id, older_than, self.window,
                                             self.using)
        for eid in stale:
            logger.warning("%s was not taken over in %g s: sending it again", eid,
                           self.resend_after)
            self._send(eid)

    def held(self) -> int:
        return Execution.objects.held_count(self.worker_id, self.using)

    def _send(self, execution_id: str) -> None:
        from django_q.tasks import async_task

        async_task(RUN, execution_id, q_options={
            "broker": self.broker,
            "task_name": execution_id,
            "save": False,  # conductor keeps the result; django-q2 saves failures only
            "ack_failure": True,
        })


# --- runner (qcluster worker process) ----------------------------------------------------


def run(execution_id: str) -> str:
    """django-q2 task function: run execution ``execution_id`` in this process."""
    from django_q.exceptions import TimeoutException

    process = _process()
    runtime = process.runtime
    enroll(runtime.using, runtime.dead_after)  # a frozen process holds no lock for long
    taken = Execution.objects.handover(execution_id, runtime.worker_id, runtime.using)
    if taken is None:
        logger.info("%s is not held by a dispatcher (stale or duplicate message)", execution_id)
        return "skipped"
    claimed, cancel_reason = taken
    if cancel_reason is not None:
        Execution.objects.finish_cancelled(claimed.id, runtime.worker_id, claimed.lease,
                                           cancel_reason, runtime.using)
        return "cancelled"
    runtime.passthrough = (TimeoutException,)  # recorded below, then django-q2's own
    try:
        if aio_runner.is_async(claimed.task_name):
            return aio_runner.run_here(claimed, runtime)  # its own event loop, this thread
        return runner.run(claimed, runtime)
    except TimeoutException as exc:
        _fail_hard(claimed, runtime, f"Hard time limit exceeded: django-q2 stopped the "
                                     f"attempt ({exc})")
        raise  # django-q2 records the timeout and replaces this worker process


def _fail_hard(claimed: Claimed, runtime: Runtime, error: str) -> None:
    try:
        task = get_task(claimed.task_name, resolve=True)
    except LookupError:
        task = None
    for _ in range(2):  # the alarm may have broken the connection mid-query
        try:
            unit.fail(claimed, runtime, task, error)
            break
        except DB_ERRORS:
            connections[runtime.using].close()
    logger.error("%s %s: %s", claimed.task_name, claimed.id, error,
                 extra={"execution_id": claimed.id, "task_name": claimed.task_name})


class _Process:
    """This qcluster worker process as conductor sees it: a Worker row and a watcher."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        using = router.db_for_write(Execution)
        self.runtime = Runtime(worker_id=uuid.uuid4(), using=using,
                               dead_after=float(conf.get("WORKER_DEAD_AFTER")))
        self.row = WorkerRow(id=self.runtime.worker_id, hostname=socket.gethostname(),
                             pid=self.pid, queues=[], concurrency=1,
                             role=WorkerRow.Role.QCLUSTER)
        WorkerRow.objects.register(self.row, using)
        self.cancel_poll_interval = float(conf.get("CANCEL_POLL_INTERVAL"))
        self.heartbeat_interval = float(conf.get("HEARTBEAT_INTERVAL"))
        threading.Thread(target=self._watch, name="conductor-watcher", daemon=True).start()
        listen_on = listener.listen_database(using)
        if listen_on is not None:
            listener.Listener(listen_on, lambda queue: None, self._on_cancel).start()

    def _on_cancel(self, execution_id: str, reason: str) -> None:
        deliver(self.runtime.inflight, execution_id, reason)

    def _watch(self) -> None:
        """Heartbeat, deliver cancellations and abort timed-out attempts, forever."""
        house = Housekeeper(self.runtime, self.row, heartbeat_interval=self.heartbeat_interval,
                            cancel_poll_interval=self.cancel_poll_interval)
        while True:
            try:
                house.run_due()
            except DB_ERRORS:
                logger.warning("database error in the qcluster watcher", exc_info=True)
                connections[self.runtime.using].close()
            house.check_timeouts()
            time.sleep(house.sleep_time(self.cancel_poll_interval, shortest=0.01))


_current: _Process | None = None
_lock = threading.Lock()


def _process() -> _Process:
    """The ``_Process`` of this OS process (made on first use, again after a fork)."""
    global _current
    with _lock:
        if _current is None or _current.pid != os.getpid():
            _current = _Process()
        return _current

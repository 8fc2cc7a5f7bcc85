"""Prometheus metrics (extra ``[metrics]``): the only module that imports ``prometheus_client``.

Two sources (docs/observability.md lists every metric):

* **What the database knows**, read at scrape time by ``DatabaseCollector`` (served by
  ``conductor_django.urls``): unfinished executions by task, queue and status, runnable,
  running and suspended executions and the queue lag per queue, the executions finished
  in the last ``RECENT_SECONDS``, live workers. Each query reads the unfinished rows or
  the recently finished ones through a partial index, never the whole history, so a
  scrape costs the same with 1,000,000 finished rows as with none.
* **What a worker process did**, counted in that process (``started``/``finished``):
  runs started and finished by task, queue and outcome, cancels, retries and a
  duration histogram per task, in ``prometheus_client``'s default registry, served by
  ``conductor_worker --metrics-port N`` (and by the endpoint, for the process serving it);
  with ``--processes N`` the children count into a shared directory (``SharedCounters``)
  and the parent serves their sum.

The ``queue`` label is bounded (``CONDUCTOR["METRICS_MAX_QUEUES"]``, default 50): any
string is a queue, and each one adds series to every scrape. A scrape names the queues
with the most unfinished executions (then the most recently finished ones, ties by name)
up to the bound and counts the others under ``queue="other"``; a worker process names
the first queues it runs, up to the bound, and counts the later ones under ``other``.

Without ``prometheus_client`` installed, the counting functions return at once and
``INSTALLED`` is false (the endpoint then answers 501).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from typing import Any

from django.db import router
from django.db.models import Count, Min, Q
from django.utils import timezone

from . import conf
from .models import Execution, Worker

try:
    import prometheus_client
    from prometheus_client import multiprocess
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.registry import Collector, CollectorRegistry
except ImportError:  # pragma: no cover - the [metrics] extra is not installed
    prometheus_client = None  # type: ignore[assignment]
    Collector = object  # type: ignore[assignment,misc]

INSTALLED = prometheus_client is not None
S = Execution.Status
#: ``conductor_executions_recently_finished`` counts executions finished this recently.
RECENT_SECONDS = 300
#: The status label of failed executions that an operator cancelled while they waited.
CANCELLED_WAITING = "cancelled_before_finishing"
#: Buckets of ``conductor_execution_duration_seconds`` (seconds).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300,
                    900, 3600)

#: The ``queue`` label of the queues beyond ``METRICS_MAX_QUEUES``.
OTHER_QUEUE = "other"


def max_queues() -> int:
    """``CONDUCTOR["METRICS_MAX_QUEUES"]`` (a bad value, reported by the checks: 50)."""
    value = conf.get("METRICS_MAX_QUEUES")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return int(conf.DEFAULTS["METRICS_MAX_QUEUES"])
    return value


def named_queues(*counts: Iterable[tuple[str, int]], limit: int | None = None) -> set[str]:
    """The queues that keep their label: by ``counts`` (most first, ties by name), each
    source filling what room the previous ones left, ``limit`` in all."""
    room = max_queues() if limit is None else limit
    named: set[str] = set()
    for source in counts:
        totals: Counter[str] = Counter()
        for queue, n in source:
            totals[queue] += n
        for queue, _n in sorted(totals.items(), key=lambda item: (-item[1], item[0])):
            if len(named) >= room:
                return named
            named.add(queue)
    return named


#: The queues this process's counters name (``queue_label``); the others are ``other``.
_labelled: set[str] = set()
_labelled_lock = threading.Lock()


def queue_label(queue: str) -> str:
    """The ``queue`` label of this process's counters for ``queue``."""
    if queue in _labelled:
        return queue
    with _labelled_lock:
        if queue in _labelled or len(_labelled) < max_queues():
            _labelled.add(queue)
            return queue
    return OTHER_QUEUE


# --- the worker's own counters ---------------------------------------------------------

if INSTALLED:
    STARTED = prometheus_client.Counter(
        "conductor_executions_started", "Runs of executions started by this worker process "
        "(a new attempt, or the resumption of one after a sleep, a child or a release).",
        ["task", "queue"])
    FINISHED = prometheus_client.Counter(
        "conductor_executions_finished", "Runs of executions ended by this worker process, by "
        "outcome: completed, failed, retrying, cancelled, released, suspended, lost.",
        ["task", "queue", "outcome"])
    CANCELS = prometheus_client.Counter(
        "conductor_cancels", "Executions this worker process stopped for a cancel request.",
        ["task", "queue"])
    RETRIES = prometheus_client.Counter(
        "conductor_retries", "Failed attempts this worker process scheduled for a retry.",
        ["task", "queue"])
    DURATION = prometheus_client.Histogram(
        "conductor_execution_duration_seconds", "Seconds of one run of an execution, from the "
        "handler's start to its outcome, in this worker process.", ["task"],
        buckets=DURATION_BUCKETS)


def started(task: str, queue: str) -> None:
    if INSTALLED:
        STARTED.labels(task, queue_label(queue)).inc()


def finished(task: str, queue: str, outcome: str, seconds: float) -> None:
    if not INSTALLED:
        return
    queue = queue_label(queue)
    FINISHED.labels(task, queue, outcome).inc()
    DURATION.labels(task).observe(seconds)
    if outcome == "cancelled":
        CANCELS.labels(task, queue).inc()
    elif outcome == "retrying":
        RETRIES.labels(task, queue).inc()


def serve(port: int, host: str = "127.0.0.1", directory: str | None = None,
          processes: Callable[[], tuple[int, int]] | None = None) -> Any:
    """Serve metrics on ``host:port`` (prometheus_client's own HTTP server, on a daemon
    thread); returns the server. Without ``directory``: this process's default registry.
    With it: the counters that the processes started with ``SHARED_ENV`` set to it keep
    there, summed over the processes (prometheus_client's multiprocess mode), and, from
    ``processes()`` (how many run, how many were restarted), the supervisor's gauge and
    counter: what ``conductor_worker --processes N`` serves."""
    if not INSTALLED:
        raise RuntimeError("--metrics-port needs prometheus_client: "
                           "pip install 'conductor-django[metrics]'")
    registry = prometheus_client.REGISTRY
    if directory is not None:
        registry = CollectorRegistry(auto_describe=False)
        multiprocess.MultiProcessCollector(registry, path=directory)
        if processes is not None:
            registry.register(_ProcessesCollector(processes))
    server, _thread = prometheus_client.start_http_server(port, host, registry=registry)
    return server


class _ProcessesCollector(Collector):
    """The worker processes of one ``--processes`` command: running now, and restarted."""

    def __init__(self, processes: Callable[[], tuple[int, int]]) -> None:
        self.processes = processes

    def collect(self) -> Iterator[Any]:
        running, restarts = self.processes()
        yield GaugeMetricFamily("conductor_worker_processes", "Worker processes running under "
                                "this conductor_worker --processes command.", value=running)
        yield CounterMetricFamily("conductor_worker_restarts", "Worker processes this command "
                                  "started again after they died.", value=restarts)


#: What tells prometheus_client, when a process imports it, to keep its counters in
#: files of a directory shared with other processes instead of in its memory.
SHARED_ENV = "PROMETHEUS_MULTIPROC_DIR"


class SharedCounters:
    """A temporary directory for the counters of the worker processes of one parent:
    set ``SHARED_ENV`` to ``directory`` in a process's environment before it imports
    prometheus_client, and its counters go there; ``serve(..., directory=...)`` sums
    them. The counts of a child that died stay in the sum (counters never go down);
    ``close`` removes the directory."""

    def __init__(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="conductor-metrics-")

    def close(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


# --- what the database knows -------------------------------------------------------------


class DatabaseCollector(Collector):
    """Gauges read from the executions and workers tables at each scrape."""

    def __init__(self, using: str | None = None) -> None:
        self.using = using

    def collect(self) -> Iterator[Any]:
        db = self.using or router.db_for_read(Execution)
        now = timezone.now()
        unfinished = self._unfinished_rows(db, now)
        recent = self._recent_rows(db, now)
        named = named_queues(((row[0], row[3]) for row in unfinished),
                             ((row[1], row[3]) for row in recent))
        yield from self._unfinished(unfinished, named, now)
        yield self._recent(recent, named)
        yield self._workers(db, now)

    def _unfinished_rows(self, db: str, now: Any) -> list[tuple[Any, ...]]:
        """(queue, task, status, count, due count, oldest due run_at) of the unfinished."""
        # Every column read is in cdj_exec_open_idx: an index-only scan of the unfinished
        # rows (migration 0013), however many finished rows the table holds.
        due = Q(status__in=Execution.RUNNABLE, run_at__lte=now)
        return list(
            Execution.objects.using(db).order_by()
            .filter(status__in=Execution.UNFINISHED)
            .values_list("queue", "task_name", "status")
            .annotate(n=Count("*"), due=Count("run_at", filter=due),
                      oldest=Min("run_at", filter=due))
        )

    def _unfinished(self, rows: list[tuple[Any, ...]], named: set[str],
                    now: Any) -> Iterator[Any]:
        executions = GaugeMetricFamily(
            "conductor_executions", "Unfinished executions by task, queue and status.",
            labels=["task", "queue", "status"])
        runnable = GaugeMetricFamily(
            "conductor_queue_runnable", "Executions runnable now (pending or suspended, due), "
            "per queue.", labels=["queue"])
        running = GaugeMetricFamily("conductor_queue_running",
                                    "Running executions per queue.", labels=["queue"])
        waiting = GaugeMetricFamily(
            "conductor_queue_suspended", "Suspended executions not due yet (sleeping, or "
            "waiting for a child or a signal), per queue.", labels=["queue"])
        lag = GaugeMetricFamily(
            "conductor_queue_lag_seconds", "Age of the oldest runnable execution (now minus "
            "its run_at), per queue; 0 when none is runnable.", labels=["queue"])
        counts: Counter[tuple[str, str, str]] = Counter()
        queues: dict[str, list[Any]] = {}
        for queue, task, status, n, n_due, oldest in rows:
            queue = queue if queue in named else OTHER_QUEUE
            counts[(task, queue, status)] += n
            q = queues.setdefault(queue, [0, 0, 0, None])
            q[0] += n_due
            if status == S.RUNNING:
                q[1] += n
            elif status == S.SUSPENDED:
                q[2] += n - n_due
            if oldest is not None and (q[3] is None or oldest < q[3]):
                q[3] = oldest
        for labels, n in counts.items():
            executions.add_metric(list(labels), n)
        for queue, (n_due, n_running, n_waiting, oldest) in sorted(queues.items()):
            runnable.add_metric([queue], n_due)
            running.add_metric([queue], n_running)
            waiting.add_metric([queue], n_waiting)
            lag.add_metric([queue], max(0.0, (now - oldest).total_seconds()) if oldest else 0.0)
        yield from (executions, runnable, running, waiting, lag)

    def _recent_rows(self, db: str, now: Any) -> list[tuple[Any, ...]]:
        """(task, queue, status, count) of the executions finished recently."""
        since = now - timedelta(seconds=RECENT_SECONDS)
        # One range of the (status, finished_at) index per status: with status IN (...),
        # PostgreSQL drops the status condition (the partial index implies it) and reads
        # the whole index for the finished_at range.
        # (One query per status, not a UNION of them: MySQL refuses a UNION of grouped
        # queries as Django writes it.)
        # A failed execution an operator cancelled while it waited is reported as
        # ``cancelled_before_finishing``, so that an alert on ``failed`` ignores cancels.
        found = []
        for status in Execution.FINAL:
            rows = (Execution.objects.using(db).order_by()
                    .filter(status=status, finished_at__gte=since)
                    .values_list("task_name", "queue", "cancel_requested")
                    .annotate(n=Count("*")))
            found += [(task, queue,
                       CANCELLED_WAITING if status == S.FAILED and by_cancel else status, n)
                      for task, queue, by_cancel, n in rows]
        return found

    def _recent(self, rows: list[tuple[Any, ...]], named: set[str]) -> Any:
        family = GaugeMetricFamily(
            "conductor_executions_recently_finished",
            f"Executions finished in the last {RECENT_SECONDS} s by task, queue and status.",
            labels=["task", "queue", "status"])
        counts: Counter[tuple[str, str, str]] = Counter()
        for task, queue, status, n in rows:
            counts[(task, queue if queue in named else OTHER_QUEUE, status)] += n
        for labels, n in counts.items():
            family.add_metric(list(labels), n)
        return family

    def _workers(self, db: str, now: Any) -> Any:
        family = GaugeMetricFamily(
            "conductor_workers", "Live workers (heartbeat within WORKER_DEAD_AFTER) by role.",
            labels=["role"])
        alive = now - timedelta(seconds=float(conf.get("WORKER_DEAD_AFTER")))
        counts = dict(Worker.objects.using(db).order_by().filter(last_heartbeat__gte=alive)
                      .values_list("role").annotate(n=Count("*")))
        for role in Worker.Role.values:
            family.add_metric([role], counts.get(role, 0))
        return family


def exposition(accept: str | None = None, using: str | None = None) -> tuple[bytes, str]:
    """The endpoint's body and content type: the database's gauges, then this process's
    default registry (its own counters, if it runs executions, and the process metrics)."""
    if not INSTALLED:
        raise RuntimeError("prometheus_client is not installed")
    database = CollectorRegistry(auto_describe=False)
    database.register(DatabaseCollector(using))
    body = (prometheus_client.generate_latest(database)
            + prometheus_client.generate_latest(prometheus_client.REGISTRY))
    return body, prometheus_client.CONTENT_TYPE_LATEST

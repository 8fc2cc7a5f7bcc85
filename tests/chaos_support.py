"""Helpers of the chaos tests: scale, the side-effect record, the checks, the summary.

Scale: ``CONDUCTOR_CHAOS_SCALE=small`` (default, what ``make test`` runs) or ``full``
(``make chaos``); any single number can be overridden with ``CONDUCTOR_CHAOS_<KEY>``
(e.g. ``CONDUCTOR_CHAOS_KILLS=10``). Each scenario adds one summary line, printed at
the end of the pytest run and appended to ``CONDUCTOR_CHAOS_SUMMARY`` when that names
a file.
"""

from __future__ import annotations

import json
import os
import signal
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCALE = os.environ.get("CONDUCTOR_CHAOS_SCALE", "small")

SCALES: dict[str, dict[str, float]] = {
    "small": {
        "KILLS": 3, "KILL_EXECUTIONS": 30, "KILL_WORKERS": 2,
        "FREEZES": 2, "FREEZE_EXECUTIONS": 6,
        "STORM": 20, "STORM_WORKERS": 1, "STORM_CONCURRENCY": 10,
        "SHARED_EXECUTIONS": 60, "SHARED_WORKERS": 3,
        "TERMINATES": 3, "TERMINATE_EXECUTIONS": 20,
        "ATOMIC_ROUNDS": 1, "ATOMIC_EXECUTIONS": 2,
        "LOCK_CALLS": 60,
        "RESTART_EXECUTIONS": 24, "RESTART_WORKERS": 2, "OUTAGE_SECONDS": 5,
    },
    # Full: 2 storm workers of 40 threads hold about 90 PostgreSQL sessions (a worker
    # opens one per handler thread, plus its loop, heartbeat, completer and listener):
    # under the server's default max_connections of 100.
    "full": {
        "KILLS": 100, "KILL_EXECUTIONS": 1500, "KILL_WORKERS": 3,
        "FREEZES": 20, "FREEZE_EXECUTIONS": 20,
        "STORM": 2000, "STORM_WORKERS": 2, "STORM_CONCURRENCY": 40,
        "SHARED_EXECUTIONS": 10000, "SHARED_WORKERS": 4,
        "TERMINATES": 30, "TERMINATE_EXECUTIONS": 400,
        "ATOMIC_ROUNDS": 5, "ATOMIC_EXECUTIONS": 4,
        "LOCK_CALLS": 1000,
        "RESTART_EXECUTIONS": 400, "RESTART_WORKERS": 3, "OUTAGE_SECONDS": 60,
    },
}


def scale(key: str) -> int:
    """The number ``key`` at the current scale (or its ``CONDUCTOR_CHAOS_<KEY>`` override)."""
    override = os.environ.get(f"CONDUCTOR_CHAOS_{key}")
    if override:
        return int(override)
    if SCALE not in SCALES:
        raise RuntimeError(f"CONDUCTOR_CHAOS_SCALE must be one of {sorted(SCALES)}, not {SCALE!r}")
    return int(SCALES[SCALE][key])


# --- the side-effect record (written by tests/testapp/chaos_tasks.py) -------------------


class Record:
    """Reads the append-only event file incrementally (only complete lines)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.events: list[dict[str, Any]] = []
        self._offset = 0
        self._open: dict[tuple[str, str, int, int], int] = {}  # run key -> open count

    def refresh(self) -> list[dict[str, Any]]:
        """Read what was appended since the last call; returns the new events."""
        if not self.path.exists():
            return []
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self._offset += end
        new = [json.loads(line) for line in data[:end].splitlines() if line.strip()]
        self.events.extend(new)
        for e in new:
            if e["ev"] in ("start", "end"):
                key = (e["eid"], e["step"], e["attempt"], e["pid"])
                self._open[key] = self._open.get(key, 0) + (1 if e["ev"] == "start" else -1)
        return new

    def of(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["ev"] == event]

    def open_runs(self, pid: int | None = None) -> list[tuple[str, str, int, int]]:
        """Step functions started and not ended (of ``pid`` when given)."""
        return [k for k, n in self._open.items() if n > 0 and (pid is None or k[3] == pid)]

    def count(self, event: str) -> int:
        return sum(1 for e in self.events if e["ev"] == event)


@dataclass
class Run:
    """One run of a step function, from its ``start`` event to its ``end`` (if any)."""

    eid: str
    step: str
    attempt: int
    pid: int
    start: float
    end: float | None

    def __str__(self) -> str:
        end = "never ended" if self.end is None else f"ended {self.end:.3f}"
        return (f"{self.eid} step {self.step} attempt {self.attempt} pid {self.pid}: "
                f"started {self.start:.3f}, {end}")


def runs_of(events: Iterable[dict[str, Any]]) -> list[Run]:
    """Pair the ``start`` and ``end`` events into runs (in start order)."""
    started: dict[tuple[str, str, int, int], list[Run]] = defaultdict(list)
    runs: list[Run] = []
    for e in events:
        key = (e["eid"], e["step"], e["attempt"], e["pid"])
        if e["ev"] == "start":
            run = Run(e["eid"], e["step"], e["attempt"], e["pid"], e["t"], None)
            started[key].append(run)
            runs.append(run)
        elif e["ev"] == "end":
            pending = [r for r in started[key] if r.end is None]
            if pending:
                pending[0].end = e["t"]
    return sorted(runs, key=lambda r: r.start)


# --- the checks ---------------------------------------------------------------------------


def committed_reruns(runs: Sequence[Run], committed: dict[tuple[str, str], float]) -> list[Run]:
    """Runs that STARTED after the step record of their (execution, step) was written.

    ``committed`` maps (execution id, step name) to the step row's ``created_at`` (epoch
    seconds, written by the worker just before its commit, on the same clock as the
    record). Only a step that was running when its worker died may run again, and only
    before its record exists.
    """
    return [r for r in runs
            if (r.eid, r.step) in committed and r.start > committed[(r.eid, r.step)]]


def stale_runs(runs: Sequence[Run]) -> list[Run]:
    """Runs of attempt k that started after a later attempt of the same execution had
    started a step: the worker of attempt k no longer held the execution."""
    first_start: dict[tuple[str, int], float] = {}
    for r in runs:
        key = (r.eid, r.attempt)
        first_start[key] = min(first_start.get(key, r.start), r.start)
    later: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for (eid, attempt), t in first_start.items():
        later[eid].append((attempt, t))
    return [r for r in runs
            if any(attempt > r.attempt and t < r.start for attempt, t in later[r.eid])]


def listed(runs: Sequence[Run], committed: dict[tuple[str, str], float] | None = None
           ) -> list[str]:
    """Runs as lines for ``show``, with the time of their step row when given."""
    return [f"{r} -- step row written at {committed[(r.eid, r.step)]:.3f}"
            if committed and (r.eid, r.step) in committed else str(r) for r in runs]


def overlapping(runs: Sequence[Run], same_pid_only: bool = False) -> list[str]:
    """Two runs of one execution's step functions at the same time (different attempts
    of one worker process with ``same_pid_only``; any two runs otherwise)."""
    by_eid: dict[str, list[Run]] = defaultdict(list)
    for r in runs:
        by_eid[r.eid].append(r)
    out = []
    for eid_runs in by_eid.values():
        eid_runs.sort(key=lambda r: r.start)
        for i, a in enumerate(eid_runs):
            for b in eid_runs[i + 1:]:
                if a.end is not None and b.start >= a.end:
                    break
                if same_pid_only and (a.pid != b.pid or a.attempt == b.attempt):
                    continue
                if a.end is None and a.pid != b.pid:
                    continue  # a never ended: its worker died (killed), not a concurrent run
                out.append(f"{a}\n    overlaps {b}")
    return out


def reruns_per_step(runs: Sequence[Run]) -> dict[tuple[str, str], int]:
    """(execution, step) -> number of runs, for those that ran more than once."""
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for r in runs:
        counts[(r.eid, r.step)] += 1
    return {k: n for k, n in counts.items() if n > 1}


def show(title: str, items: Sequence[str], limit: int = 15) -> str:
    if not items:
        return ""
    more = f"\n  ... and {len(items) - limit} more" if len(items) > limit else ""
    return f"{title} ({len(items)}):\n  " + "\n  ".join(items[:limit]) + more + "\n"


def tails(workers: Sequence[Any], lines: int = 25) -> str:
    """The last lines of each worker's log, for failure messages."""
    out = []
    for w in workers:
        text = w.log_path.read_text(errors="replace").splitlines()[-lines:]
        out.append(f"--- worker pid {w.pid} (exit {w.proc.poll()}), last {len(text)} lines:\n"
                   + "\n".join(text))
    return "\n".join(out)


# --- worker processes ----------------------------------------------------------------------


def worker_ids(workers: Sequence[Any]) -> dict[int, str]:
    """pid -> worker id, once every worker has registered."""
    from conductor_django.models import Worker as WorkerRow
    from tests.conftest import poll

    pids = [w.pid for w in workers]
    poll(lambda: WorkerRow.objects.filter(pid__in=pids).count() == len(pids), timeout=60,
         message="the workers to register")
    return {pid: str(wid) for pid, wid in WorkerRow.objects.filter(pid__in=pids)
            .values_list("pid", "id")}


def stop_all(workers: Sequence[Any], timeout: float = 30) -> None:
    """SIGCONT (a stopped process ignores SIGTERM until continued), then SIGTERM and wait."""
    for w in workers:
        if w.proc.poll() is None:
            os.kill(w.pid, signal.SIGCONT)
            w.signal(signal.SIGTERM)
    for w in workers:
        try:
            w.wait(timeout=timeout)
        except Exception:  # noqa: BLE001 - the fixture kills what is left
            pass


def terminate_other_sessions() -> int:
    """End every other session on the test database (its workers'); how many.

    PostgreSQL: ``pg_terminate_backend``; MySQL/MariaDB: ``KILL CONNECTION``. Either way
    the server rolls back what the session had not committed."""
    from django.db import OperationalError, connection

    with connection.cursor() as cursor:
        if connection.vendor == "mysql":
            cursor.execute("SELECT id FROM information_schema.processlist"
                           " WHERE db = DATABASE() AND id <> CONNECTION_ID()")
            ids = [row[0] for row in cursor.fetchall()]
            ended = 0
            for session in ids:
                try:
                    cursor.execute(f"KILL CONNECTION {int(session)}")
                    ended += 1
                except OperationalError as exc:
                    if exc.args[0] != 1094:  # not "Unknown thread id": it ended meanwhile
                        raise
            return ended
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        ended = cursor.fetchone()[0]
    # Behind PgBouncer the terminated sessions were also its idle server connections,
    # which it would hand to this test's next query: it drops them now (its workers'
    # clients meet them as they would after a restart, and retry).
    from tests.conftest import pgbouncer_console

    pgbouncer_console("RECONNECT {db}")
    return ended


def other_sessions_idle() -> bool:
    """No other session on the test database is in the middle of a statement.

    A client frozen with SIGSTOP cannot send anything new, but a statement it sent just
    before is still run by the server (PostgreSQL, MariaDB): a claim that reaches the
    server after a row was inserted may lock or take that row. Poll this after freezing a
    worker to know that it will touch nothing more until it is woken. SQLite runs in the
    frozen process itself: nothing is in flight there."""
    from django.db import connection

    if connection.vendor == "sqlite":
        return True
    with connection.cursor() as cursor:
        if connection.vendor == "mysql":
            cursor.execute("SELECT count(*) FROM information_schema.processlist"
                           " WHERE db = DATABASE() AND id <> CONNECTION_ID()"
                           " AND command <> 'Sleep'")
        else:
            cursor.execute("SELECT count(*) FROM pg_stat_activity"
                           " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                           " AND state = 'active'")
        return cursor.fetchone()[0] == 0


def db_activity() -> str:
    """On PostgreSQL, what every session of the test database is doing (who waits on whom)."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return ""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, state, wait_event_type, wait_event, pg_blocking_pids(pid),"
            " now() - xact_start, left(query, 150) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid() ORDER BY pid")
        rows = cursor.fetchall()
    return "--- pg_stat_activity (pid, state, wait, blocked by, in transaction for, query):\n" + (
        "\n".join(" | ".join(str(v) for v in row) for row in rows))


def poll(predicate: Callable[[], object], timeout: float = 20.0, interval: float = 0.02,
         message: str = "condition", workers: Sequence[Any] = ()) -> object:
    """``tests.conftest.poll`` that, on timeout, adds the workers' log tails and (on
    PostgreSQL) the sessions' activity as they are at that moment."""
    from tests.conftest import poll as base

    try:
        return base(predicate, timeout=timeout, interval=interval, message=message)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{tails(workers)}\n{db_activity()}") from None


# --- the summary -----------------------------------------------------------------------------

SUMMARY: list[str] = []

#: test function -> the scenario name of its summary line
SCENARIOS = {
    "test_kill_9_mid_step": "kill-9",
    "test_sigstop_past_dead_after": "sigstop",
    "test_cancel_storm_with_distinct_reasons": "cancel-storm",
    "test_several_workers_share_one_queue": "shared-queue",
    "test_sessions_terminated_during_a_drain": "terminate",
    "test_atomic_step_killed_mid_step_leaves_no_row": "atomic-step",
    "test_default_sqlite_settings_never_lock": "sqlite-default-settings",
    "test_server_restarted_mid_drain": "restart",
    "test_server_down_for_long": "long-outage",
    "test_connection_limit_reached": "connection-limit",
}


def summarize(scenario: str, vendor: str, text: str) -> None:
    """One line per scenario: printed at the end of the run, appended to the summary file."""
    line = f"chaos {scenario}[{vendor}]: {text}"
    SUMMARY.append(line)
    path = os.environ.get("CONDUCTOR_CHAOS_SUMMARY")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


# --- database side ----------------------------------------------------------------------------


def vendor() -> str:
    from django.db import connection

    return "postgres" if connection.vendor == "postgresql" else connection.vendor


def step_records() -> dict[tuple[str, str], float]:
    """(execution id, step name) -> the step row's ``created_at`` as epoch seconds."""
    from conductor_django.models import Step

    rows = Step.objects.values_list("execution_id", "name", "created_at")
    return {(str(eid), name): created.timestamp() for eid, name, created in rows}


def executions(task_name: str) -> dict[str, dict[str, Any]]:
    """Execution id -> its row (status, attempts, result, last_error, ...) for a task."""
    from conductor_django.models import Execution

    rows = Execution.objects.filter(task_name=task_name).values(
        "id", "status", "attempts", "result", "last_error", "finished_at", "cancelled")
    return {str(r["id"]): r for r in rows}


def unfinished(task_name: str) -> int:
    from conductor_django.models import Execution

    return Execution.objects.filter(task_name=task_name,
                                    status__in=Execution.UNFINISHED).count()


def not_completed(rows: dict[str, dict[str, Any]]) -> list[str]:
    return [f"{eid}: {r['status']} after {r['attempts']} attempts {r['last_error']!r}"
            for eid, r in rows.items() if r["status"] != "completed"]


def double_completions(rows: dict[str, dict[str, Any]]) -> list[str]:
    """Completed executions whose stored result was not written by their last attempt
    (a worker that had lost the execution wrote it, or wrote it again)."""
    return [f"{eid}: result {r['result']} but {r['attempts']} attempts"
            for eid, r in rows.items()
            if r["status"] == "completed" and (r["result"] or {}).get("attempt") != r["attempts"]]


def invoke_payloads(task_name: str, payloads: Sequence[dict[str, Any]],
                    chunk: int = 500) -> list[str]:
    import conductor_django as conductor

    eids: list[str] = []
    for i in range(0, len(payloads), chunk):
        eids += conductor.invoke_many(task_name,
                                      [{"payload": p} for p in payloads[i:i + chunk]])
    return eids

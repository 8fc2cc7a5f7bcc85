"""Chaos: the PostgreSQL server restarted (``pg_ctl stop -m fast|immediate``, then
started again) in the middle of a drain with steps running, durable sleeps, signal waits,
signals and cancel requests in flight; a server that stays down for a long while (60 s
at full scale); and a server whose connection limit other clients have reached. The
server is a private one of this module (tests/private_postgres.py), never the shared
one.

Workers must keep running, reconnect on their own, lose nothing, run no committed step
again and complete nothing twice; the API must fail with a clear error while the server
is down, not hang. Each scenario's summary line gives the time from the server being
back to the first completion. Same recording and checks as tests/test_chaos*.py.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.db import OperationalError, close_old_connections

import conductor_django as conductor
from conductor_django.models import Execution
from tests.chaos_support import (
    Record,
    committed_reruns,
    double_completions,
    executions,
    invoke_payloads,
    listed,
    not_completed,
    overlapping,
    poll,
    runs_of,
    scale,
    show,
    step_records,
    stop_all,
    summarize,
    tails,
    unfinished,
)
from tests.private_postgres import PrivatePostgres, bindir

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        os.environ.get("CONDUCTOR_TEST_DB") != "postgres" or bindir() is None,
        reason="restarts a private PostgreSQL server of its own: run in the PostgreSQL "
        "cell (CONDUCTOR_TEST_DB=postgres) with the server binaries installed"),
]

TEMPLATE = "conductor_template"


@pytest.fixture(scope="module")
def server(django_db_blocker):
    """A private server with a migrated template database."""
    pg = PrivatePostgres(max_connections=60)
    try:
        pg.start()
        pg.migrate(TEMPLATE)
        yield pg
    finally:
        pg.destroy()


_names = iter(range(1_000_000))


@pytest.fixture
def database(server, transactional_db):
    """A fresh database on the private server, the test process's default meanwhile."""
    name = f"chaos_{os.getpid()}_{next(_names)}"
    server.copy(TEMPLATE, name)
    with server.use(name):
        yield name


def api_error_while_down() -> tuple[str, float]:
    """Call the API with the server down, as two web requests would (Django closes a
    broken connection between requests): the error the second raises, on a new
    connection, and how long the two took."""
    began = time.monotonic()
    errors = []
    for _ in range(2):
        close_old_connections()  # what Django does at the start and end of a request
        with pytest.raises(OperationalError) as caught:
            conductor.invoke("echo", 1)
        errors.append(str(caught.value).strip().splitlines()[0])
    return errors[-1], time.monotonic() - began


def first_completion_after(back_wall: datetime, back: float, workers) -> float:
    """Seconds from ``back`` (monotonic) to the first execution finished after the
    server came back (``back_wall``), polled from the database."""
    poll(lambda: Execution.objects.filter(finished_at__gte=back_wall).exists(), timeout=60,
         interval=0.01, message="a completion after the restart", workers=workers)
    return time.monotonic() - back


def run_scenario(server: PrivatePostgres, database: str, start_worker, tmp_path: Path, *,
                 mode: str, down: float, scenario: str) -> None:
    log = tmp_path / "runs.jsonl"
    n = scale("RESTART_EXECUTIONS")
    waiting = max(2, n // 6)
    plain = invoke_payloads("chaos-restart", [
        {"log": str(log), "pause": 0.2, "nap": 0.5}] * n)
    signalled = invoke_payloads("chaos-restart", [
        {"log": str(log), "pause": 0.1, "nap": 0.1, "signal": True}] * waiting)
    cancellable = invoke_payloads("chaos-cancellable", [{"log": str(log), "tick": 0.05}] * 4)
    env = {**server.worker_env(database), "CONDUCTOR_LOG_LEVEL": "WARNING"}
    workers = [start_worker("--concurrency", "4", env=env)
               for _ in range(scale("RESTART_WORKERS"))]
    record = Record(log)
    poll(lambda: record.refresh() is not None and record.count("end") >= 2, timeout=60,
         message="steps to run", workers=workers)
    poll(lambda: Execution.objects.filter(pk__in=cancellable, status="running").count() == 4,
         timeout=60, message="the cancellable executions to run", workers=workers)
    # in flight when the server goes: signals and cancel requests just sent, steps running
    for eid in signalled[: waiting // 2]:
        conductor.send_signal(eid, "go", "before")
    for eid in cancellable[:2]:
        conductor.cancel(eid, "cancelled before the restart")
    server.stop(mode)
    stopped = time.monotonic()
    error, took = api_error_while_down()
    time.sleep(max(0.0, down - (time.monotonic() - stopped)))
    server.start()
    back, back_wall = time.monotonic(), datetime.now(UTC)
    close_old_connections()
    to_first = first_completion_after(back_wall, back, workers)
    alive = [w.proc.poll() is None for w in workers]
    for eid in signalled[waiting // 2:]:
        conductor.send_signal(eid, "go", "after")
    for eid in cancellable[2:]:
        conductor.cancel(eid, "cancelled after the restart")
    try:
        poll(lambda: not unfinished("chaos-restart") and not unfinished("chaos-cancellable"),
             timeout=120 + n * 0.2, interval=0.1, message="every execution to finish",
             workers=workers)
    except AssertionError as exc:
        left = Execution.objects.filter(status__in=Execution.UNFINISHED).values_list(
            "id", "task_name", "status", "attempts", "run_at", "locked_by", "last_error")
        raise AssertionError(f"{exc}\nunfinished:\n" + "\n".join(map(str, left))) from None
    to_all = time.monotonic() - back
    stop_all(workers)
    record.refresh()

    rows = executions("chaos-restart")
    runs = [r for r in runs_of(e for e in record.events if e["ev"] in ("start", "end"))
            if r.eid in rows]
    committed = step_records()
    after_commit = listed(committed_reruns(runs, committed), committed)
    concurrent = overlapping(runs)
    lost = not_completed(rows)
    doubles = double_completions(rows)
    # a cancel ends a running execution "cancelled", and one that waits to run again (a
    # long outage: recovered from a worker presumed dead) "failed" with cancel_requested
    not_cancelled = [
        f"{r['id']}: {r['status']} after {r['attempts']} attempts {r['last_error']!r}"
        for r in Execution.objects.filter(task_name="chaos-cancellable").exclude(
            status="cancelled").exclude(status="failed", cancel_requested=True).values(
            "id", "status", "attempts", "last_error")]
    assert len(rows) == len(plain) + len(signalled)
    summarize(scenario, "postgres", (
        f"down {down:.0f} s ({mode}), {len(rows)} executions, API while down: "
        f"{error!r} after {took:.2f} s; first completion {to_first:.2f} s after the server "
        f"was back, all done {to_all:.1f} s after; {len(after_commit)} committed-step "
        f"re-runs, {len(concurrent)} concurrent runs, {len(lost)} lost, {len(doubles)} "
        f"double completions, {len(not_cancelled)} cancels lost, workers alive {alive}"))
    problems = (show("re-run after commit", after_commit) + show("concurrent runs", concurrent)
                + show("lost", lost) + show("double completions", doubles)
                + show("not cancelled", not_cancelled))
    assert not problems, problems + tails(workers)
    assert all(alive), "a worker exited during the outage\n" + tails(workers)


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_server_restarted_mid_drain(server, database, start_worker, tmp_path, mode):
    run_scenario(server, database, start_worker, tmp_path, mode=mode, down=1.0,
                 scenario=f"restart-{mode}")


def test_server_down_for_long(server, database, start_worker, tmp_path):
    """Down for longer than WORKER_DEAD_AFTER at full scale (60 s against 30 s): the
    workers come back with stale heartbeats and recover each other's executions, which
    must still run no committed step twice and complete nothing twice."""
    run_scenario(server, database, start_worker, tmp_path, mode="fast",
                 down=float(scale("OUTAGE_SECONDS")), scenario="long-outage")


def test_connection_limit_reached(server, database, start_worker, tmp_path):
    """Other clients take every connection the server allows while workers drain and
    the workers' sessions end (terminated): the API fails with PostgreSQL's own "too many
    clients" error, the workers keep retrying, and once connections free up everything
    finishes: nothing lost, no committed step again, nothing completed twice."""
    log = tmp_path / "runs.jsonl"
    n = scale("RESTART_EXECUTIONS")
    invoke_payloads("chaos-restart", [{"log": str(log), "pause": 0.2, "nap": 0.3}] * n)
    env = {**server.worker_env(database), "CONDUCTOR_LOG_LEVEL": "WARNING"}
    workers = [start_worker("--concurrency", "4", env=env) for _ in range(2)]
    record = Record(log)
    poll(lambda: record.refresh() is not None and record.count("end") >= 2, timeout=60,
         message="steps to run", workers=workers)
    with server.connection_limit_reached() as held:
        held[0].execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = %s", [database])
        server.take_free_slots(held, seconds=1.0)  # before the workers get them back
        full = len(held)
        close_old_connections()
        with pytest.raises(OperationalError) as caught:
            conductor.invoke("echo", 1)
        error = str(caught.value).strip().splitlines()[-1]
        poll(lambda: all("too many clients" in w.output() for w in workers), timeout=30,
             message="each worker to meet the limit", workers=workers)
    released = time.monotonic()
    close_old_connections()
    poll(lambda: not unfinished("chaos-restart"), timeout=120 + n * 0.2, interval=0.1,
         message="every execution to finish", workers=workers)
    to_all = time.monotonic() - released
    alive = [w.proc.poll() is None for w in workers]
    stop_all(workers)
    record.refresh()

    rows = executions("chaos-restart")
    runs = runs_of(e for e in record.events if e["ev"] in ("start", "end"))
    committed = step_records()
    after_commit = listed(committed_reruns(runs, committed), committed)
    lost = not_completed(rows)
    doubles = double_completions(rows)
    summarize("connection-limit", "postgres", (
        f"{full} connections held by others, API: {error!r}; all {len(rows)} executions "
        f"done {to_all:.1f} s after they were released; {len(after_commit)} committed-step "
        f"re-runs, {len(lost)} lost, {len(doubles)} double completions, workers alive "
        f"{alive}"))
    assert "too many clients" in error
    problems = (show("re-run after commit", after_commit) + show("lost", lost)
                + show("double completions", doubles))
    assert not problems, problems + tails(workers)
    assert all(alive), "a worker exited while the limit was reached\n" + tails(workers)

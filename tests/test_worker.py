"""The worker command with real subprocesses: sharing a queue, drain, queues, signals."""

import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

import conductor_django as conductor
from conductor_django.models import Execution, Worker
from tests.conftest import ROOT, poll
from tests.testapp.models import Mark


@pytest.mark.django_db(transaction=True)
def test_two_workers_over_500_executions_never_run_one_twice(start_worker):
    n = 500
    a = start_worker("--concurrency", "4", "--batch-size", "7")
    b = start_worker("--concurrency", "4", "--batch-size", "5")
    poll(lambda: Worker.objects.count() == 2, message="both workers up")
    # 10 ms each: long enough that neither worker finishes all before the other claims.
    conductor.invoke_many("record-run", [{"payload": {"n": i, "sleep": 0.01}} for i in range(n)])
    poll(lambda: not Execution.objects.unfinished().exists(), timeout=120,
         message="all executions finished")
    assert Execution.objects.filter(status="completed").count() == n
    runs = Counter(Mark.objects.filter(key__startswith="run:").values_list("key", flat=True))
    assert len(runs) == n
    assert max(runs.values()) == 1, [k for k, v in runs.items() if v > 1][:5]
    pids = set(Mark.objects.values_list("value", flat=True))
    assert pids == {str(a.pid), str(b.pid)}  # both took part
    assert set(Execution.objects.values_list("attempts", flat=True)) == {1}


@pytest.mark.django_db(transaction=True)
def test_drain_runs_what_is_runnable_now_and_exits_zero(tmp_path):
    from django.db import connection

    ids = conductor.invoke_many("echo", [{"payload": i} for i in range(5)])
    later = conductor.invoke("echo", "later", delay=3600)
    env = {"DJANGO_SETTINGS_MODULE": "tests.settings",
           "CONDUCTOR_TEST_DB_NAME": connection.settings_dict["NAME"],
           "PYTHONPATH": str(ROOT), "CONDUCTOR_LOG_LEVEL": "INFO"}
    import os

    proc = subprocess.run(
        [sys.executable, "-m", "django", "conductor_worker", "--drain", "-v", "2"],
        cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert all(conductor.get(i).status == "completed" for i in ids)
    assert conductor.get(later).status == "pending"
    assert proc.stderr.count("finish echo") == 5  # one log line per start and finish
    assert proc.stderr.count("start echo") == 5
    assert not Worker.objects.exists()  # the worker removed its row


@pytest.mark.django_db(transaction=True)
def test_drain_does_not_stop_while_runnable_work_is_left():
    """Handlers that finish while the claim waits for a free slot: drain claims again
    rather than exiting with executions still queued in the table."""
    from django.db import connection

    ids = conductor.invoke_many("echo", [{"payload": i} for i in range(600)])
    env = {"DJANGO_SETTINGS_MODULE": "tests.settings",
           "CONDUCTOR_TEST_DB_NAME": connection.settings_dict["NAME"],
           "PYTHONPATH": str(ROOT)}
    import os

    for _ in range(3):  # the handlers are quick: slots fill and empty many times a run
        proc = subprocess.run(
            [sys.executable, "-m", "django", "conductor_worker", "--drain",
             "--concurrency", "2", "--batch-size", "2"],
            cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True,
            timeout=120)
        assert proc.returncode == 0, proc.stderr
        left = Execution.objects.filter(pk__in=ids).exclude(status="completed").count()
        assert left == 0, f"drain exited with {left} executions not run"
        Execution.objects.all().delete()
        ids = conductor.invoke_many("echo", [{"payload": i} for i in range(600)])


@pytest.mark.django_db(transaction=True)
def test_worker_serves_only_its_queues_and_registers_itself(start_worker):
    other = conductor.invoke("on-other-queue", "x")
    default = conductor.invoke("echo", "y")
    worker = start_worker("--queue", "default", "--queue", "extra")
    conductor.wait(default, timeout=20)
    row = poll(lambda: Worker.objects.first(), message="worker row")
    assert row.pid == worker.pid and row.queues == ["default", "extra"]
    assert conductor.get(other).status == "pending"
    start_worker("--queue", "other")
    poll(lambda: conductor.get(other).status == "completed")
    assert Mark.objects.get(key="other").value == "x"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.django_db(transaction=True)
def test_signal_stops_an_idle_worker_with_exit_code_zero(start_worker, sig):
    worker = start_worker()
    poll(lambda: Worker.objects.exists(), message="worker registered")
    worker.signal(sig)
    assert worker.wait(timeout=20) == 0
    assert not Worker.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_heartbeat_in_progress_at_shutdown_does_not_register_the_worker_again(monkeypatch):
    """A stopping worker waits for its heartbeat thread before it removes its row: a beat
    that ran after the removal would find the row gone and register the worker again."""
    from conductor_django.runtime.worker import Worker as WorkerLoop

    beat = Worker.objects.heartbeat

    def slow_beat(row, using):  # a slow database: the thread is almost always mid-beat
        time.sleep(0.3)
        return beat(row, using)

    monkeypatch.setattr(Worker.objects, "heartbeat", slow_beat)
    loop = WorkerLoop(concurrency=1, poll_interval=0.05, handle_signals=False)
    loop.heartbeat_interval = 0.01
    thread = threading.Thread(target=loop.run, name="heartbeat-race", daemon=True)
    thread.start()
    try:
        poll(lambda: Worker.objects.exists(), message="worker registered")
        time.sleep(0.5)  # a few beats
    finally:
        loop.stop()
        thread.join(30)
    assert not thread.is_alive()
    time.sleep(0.5)  # what a stray beat would do, it has done by now
    assert not Worker.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_cancel_reaches_a_running_handler_on_postgres_without_polling(start_worker,
                                                                      is_postgres):
    if not is_postgres:
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    eid = conductor.invoke("wait-for-signal", {"key": "n"})
    # A cancel poll every 10 minutes: only the NOTIFY can deliver the cancel in time.
    start_worker(env={"CONDUCTOR_TEST_CANCEL_POLL": "600"})
    poll(lambda: Mark.count("n:started"))
    conductor.cancel(eid)
    poll(lambda: Mark.count("n:aborted"), timeout=10, message="cancel delivered by NOTIFY")
    poll(lambda: conductor.get(eid).status == "cancelled")


@pytest.mark.django_db
@pytest.mark.parametrize(("args", "message"), [
    (["--concurrency", "0"], "--concurrency must be at least 1"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--poll-interval", "0"], "--poll-interval must be positive"),
    (["--shutdown-timeout", "-1"], "--shutdown-timeout must not be negative"),
])
def test_bad_worker_arguments_are_command_errors(args, message):
    with pytest.raises(CommandError, match=message):
        call_command("conductor_worker", *args)
    assert not Worker.objects.exists()


def test_worker_before_migrate_says_run_migrate_first(tmp_path):
    """A brand-new database: one clear line and a non-zero exit, not a traceback."""
    import os

    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(ROOT),
           "CONDUCTOR_TEST_DB": "sqlite",
           "CONDUCTOR_TEST_DB_NAME": str(tmp_path / "never-migrated.sqlite3")}
    proc = subprocess.run(
        [sys.executable, "-m", "django", "conductor_worker", "--drain"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 1, proc.stderr
    assert "run migrate first" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_batch_size_help_states_the_real_default():
    from conductor_django.management.commands.conductor_worker import Command
    from conductor_django.runtime.worker import PREFETCH_BATCH

    parser = Command().create_parser("manage.py", "conductor_worker")
    [action] = [a for a in parser._actions if "--batch-size" in a.option_strings]
    assert f"larger of --concurrency and {PREFETCH_BATCH}" in action.help

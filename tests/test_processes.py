"""``conductor_worker --processes N`` with real processes (docs/worker.md): the children
share a backlog without running an execution twice, SIGTERM drains them all, a killed
child is recovered from and restarted, a killed parent leaves no child behind, and
``--metrics-port`` serves the children's counters summed on ``--metrics-host``.

Runs are recorded by the chaos tasks in an append-only file, outside every transaction,
so that a second run of an execution is visible whatever the database says.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import Client
from django.urls import reverse

import conductor_django as conductor
from conductor_django.management.commands.conductor_worker import _processes
from conductor_django.models import Execution, Worker
from conductor_django.runtime.supervisor import Supervisor, available_cpus
from tests.conftest import ROOT, poll
from tests.testapp.models import Mark

DEAD_AFTER = {"CONDUCTOR_TEST_DEAD_AFTER": "2", "CONDUCTOR_LOG_LEVEL": "INFO"}
LINUX = sys.platform.startswith("linux")


def starts(log: Path) -> Counter:
    """How many times each execution's step function started, by (execution, step)."""
    if not log.exists():
        return Counter()
    events = [json.loads(line) for line in log.read_text().splitlines()]
    return Counter((e["eid"], e["step"]) for e in events if e["ev"] == "start")


def pids(log: Path) -> set[int]:
    return {json.loads(line)["pid"] for line in log.read_text().splitlines()}


def child_pids(n: int) -> list[int]:
    """The pids of the ``n`` worker rows, once there are ``n``."""
    poll(lambda: Worker.objects.count() == n, timeout=60, message=f"{n} worker rows")
    return sorted(Worker.objects.values_list("pid", flat=True))


def gone(pid: int) -> bool:
    """The process ended (a zombie nobody reaped yet counts as ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def fetch(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return None


def refused(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(5)
        return s.connect_ex((host, port)) != 0


# --- bad values -------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(("args", "message"), [
    (["--processes", "0"], "--processes must be a whole number from 1 to 256 or auto, not '0'"),
    (["--processes", "-1"], "--processes must be a whole number from 1 to 256 or auto, not '-1'"),
    (["--processes", "abc"], "not 'abc'"),
    (["--processes", "257"], "not '257'"),
    (["--processes", "²"], "not '²'"),
    (["--processes", "1.5"], "not '1.5'"),
    (["--processes", ""], "not ''"),
    (["--metrics-port", "0"], "--metrics-port must be between 1 and 65535"),
    (["--metrics-port", "70000"], "--metrics-port must be between 1 and 65535"),
    (["--metrics-host", "127.0.0.1"], "--metrics-host needs --metrics-port"),
    (["--metrics-port", "9108", "--metrics-host", " "], "--metrics-host must not be empty"),
])
def test_bad_values_are_command_errors(args, message):
    with pytest.raises(CommandError, match=re.escape(message)):
        call_command("conductor_worker", *args)
    assert not Worker.objects.exists()


@pytest.mark.django_db
def test_a_metrics_address_that_cannot_be_bound_is_a_command_error():
    pytest.importorskip("prometheus_client")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for processes in ("1", "2"):
            with pytest.raises(CommandError, match=f"cannot listen on 127.0.0.1:{port}"):
                call_command("conductor_worker", "--processes", processes,
                             "--metrics-port", str(port))
    with pytest.raises(CommandError, match="cannot listen on no-such-host.invalid"):
        call_command("conductor_worker", "--metrics-port", str(free_port()),
                     "--metrics-host", "no-such-host.invalid")
    assert not Worker.objects.exists()


def test_processes_need_a_settings_module_the_children_can_load(monkeypatch):
    """Settings made with settings.configure() exist in this process only."""
    monkeypatch.setattr(settings, "SETTINGS_MODULE", None)
    with pytest.raises(CommandError, match=r"--processes needs a settings module"):
        call_command("conductor_worker", "--processes", "2")


def test_a_negative_count_on_the_command_line_is_one_clear_line(tmp_path):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(ROOT),
           "CONDUCTOR_TEST_DB": "sqlite", "CONDUCTOR_TEST_DB_NAME": str(tmp_path / "x.sqlite3")}
    proc = subprocess.run([sys.executable, "-m", "django", "conductor_worker",
                           "--processes", "-1"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip() == ("CommandError: --processes must be a whole number from 1 "
                                   "to 256 or auto, not '-1'")


def test_auto_is_the_cpus_this_process_may_run_on():
    expected = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert available_cpus() == expected
    assert _processes("auto") == expected
    assert _processes(" 3 ") == 3


# --- sharing a backlog ------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_two_processes_share_a_backlog_without_running_one_twice(start_worker, tmp_path):
    log = tmp_path / "runs.jsonl"
    parent = start_worker("--processes", "2", "--concurrency", "3", "--batch-size", "5")
    children = child_pids(2)
    assert parent.pid not in children  # the parent runs nothing itself
    # the admin's worker list: one line per child
    admin = Client()
    admin.force_login(User.objects.create_superuser("ops", "ops@example.com", "pw"))
    html = admin.get(reverse("admin:conductor_django_worker_changelist")).content.decode()
    assert sorted(int(p) for p in re.findall(r'<td class="field-pid">(\d+)</td>', html)) == children
    n = 300
    ids = conductor.invoke_many("chaos-steps", [
        {"payload": {"log": str(log), "steps": 1, "pause": 0.01}} for _ in range(n)])
    poll(lambda: not Execution.objects.unfinished().exists(), timeout=180,
         message="the backlog to be run")
    assert Execution.objects.filter(pk__in=ids, status="completed", attempts=1).count() == n
    ran = starts(log)
    assert len(ran) == n and max(ran.values()) == 1, [k for k, v in ran.items() if v > 1][:5]
    assert pids(log) == set(children)  # both children took part, nobody else
    parent.signal(signal.SIGTERM)
    assert parent.wait(timeout=60) == 0
    assert not Worker.objects.exists()  # each child removed its own row
    assert all(gone(pid) for pid in children)


@pytest.mark.django_db(transaction=True)
def test_drain_with_processes_exits_when_every_child_drained(tmp_path):
    log = tmp_path / "runs.jsonl"
    n = 200
    ids = conductor.invoke_many("chaos-steps", [
        {"payload": {"log": str(log), "steps": 1, "pause": 0.005}} for _ in range(n)])
    later = conductor.invoke("echo", "later", delay=3600)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(ROOT),
           "CONDUCTOR_TEST_DB_NAME": connection.settings_dict["NAME"],
           "CONDUCTOR_LOG_LEVEL": "INFO"}
    proc = subprocess.run(
        [sys.executable, "-m", "django", "conductor_worker", "--drain", "--processes", "2",
         "--concurrency", "2", "-v", "2"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-4000:]
    done = Execution.objects.filter(pk__in=ids, status="completed").count()
    assert done == n, (done, proc.stderr[-6000:])
    assert conductor.get(later).status == "pending"
    ran = starts(log)
    assert len(ran) == n and max(ran.values()) == 1
    assert len(re.findall(r"worker process \d \(pid \d+\) drained", proc.stderr)) == 2
    assert not Worker.objects.exists()


# --- stopping -----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_sigterm_drains_every_child_within_the_shutdown_timeout(start_worker, tmp_path):
    log = tmp_path / "runs.jsonl"
    timeout = 3
    parent = start_worker("--processes", "2", "--concurrency", "2",
                          "--shutdown-timeout", str(timeout), env={"CONDUCTOR_LOG_LEVEL": "INFO"})
    children = child_pids(2)
    # three that reach a step boundary every 0.1 s, one stuck in a ten-minute step
    short = conductor.invoke_many("chaos-steps", [
        {"payload": {"log": str(log), "steps": 500, "pause": 0.1}} for _ in range(3)])
    stuck = conductor.invoke("chaos-steps", {"log": str(log), "steps": 1, "pause": 600})
    ids = [*short, stuck]
    poll(lambda: Execution.objects.filter(pk__in=ids, status="running").count() == 4,
         timeout=60, message="all four running")
    holders = set(Execution.objects.filter(pk__in=ids).values_list("locked_by", flat=True))
    assert len(holders) == 2  # two threads each: both children hold some
    parent.signal(signal.SIGTERM)
    # each child waits out --shutdown-timeout for the stuck step, releases it and exits
    assert parent.wait(timeout=timeout + 20) == 0, parent.output()[-4000:]
    rows = Execution.objects.filter(pk__in=ids)
    assert {(r.status, r.attempts, r.locked_by) for r in rows} == {("pending", 1, None)}
    assert not Worker.objects.exists()
    assert all(gone(pid) for pid in children)
    assert "stopping: 2 worker processes drain" in parent.output()


@pytest.mark.django_db(transaction=True)
def test_a_killed_child_is_recovered_from_and_restarted(start_worker):
    eid = conductor.invoke("hang-in-step", {"key": "k"})  # hangs in step b on attempt 1
    parent = start_worker("--processes", "2", "--concurrency", "2", env=DEAD_AFTER)
    child_pids(2)
    poll(lambda: Mark.count("k:b"), timeout=60, message="step b to start")
    victim = Worker.objects.get(pk=Execution.objects.get(pk=eid).locked_by).pid
    os.kill(victim, signal.SIGKILL)
    # the other child recovers it after WORKER_DEAD_AFTER; attempt 2 does not hang
    assert conductor.wait(eid, timeout=60) == "B"
    ex = Execution.objects.get(pk=eid)
    assert ex.attempts == 2 and Mark.count("k:a") == 1
    restarted = poll(lambda: (lambda p: len(p) == 2 and victim not in p and p)(
        set(Worker.objects.values_list("pid", flat=True))), timeout=60,
        message="the dead child's row gone and a new child registered")
    assert parent.proc.poll() is None  # the parent runs on
    assert re.search(rf"worker process \d \(pid {victim}\) was killed by SIGKILL; "
                     r"restarting it in 1 s", parent.output())
    parent.signal(signal.SIGTERM)
    assert parent.wait(timeout=60) == 0
    assert all(gone(pid) for pid in restarted)


@pytest.mark.django_db(transaction=True)
def test_children_of_a_killed_parent_stop(start_worker):
    parent = start_worker("--processes", "2", env={"CONDUCTOR_LOG_LEVEL": "INFO"})
    children = child_pids(2)
    os.kill(parent.pid, signal.SIGKILL)  # the parent only, not its process group
    parent.proc.wait(timeout=10)
    try:
        # they notice, drain like on SIGTERM (removing their rows) and exit
        poll(lambda: not Worker.objects.exists(), timeout=60, message="the children to stop")
        poll(lambda: all(gone(pid) for pid in children), timeout=30,
             message="the children to exit")
    finally:  # never leave them running into the next test (the fixture knows the parent)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(parent.pid, signal.SIGKILL)
    assert parent.output().count("the supervising process") == 2


def test_a_crash_loop_is_restarted_after_doubling_pauses(caplog):
    """A child that dies at once (an option it refuses) is restarted after 0.05, 0.1,
    0.2 s... (here; 1 s up to 60 s by default), logged each time; never in a spin."""
    supervisor = Supervisor(processes=1, child_args=["--no-such-option"],
                            handle_signals=False, restart_backoff=(0.05, 0.2))
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(supervisor.run()), daemon=True)
    with caplog.at_level(logging.INFO, logger="conductor_django.worker"):
        thread.start()

        def restarts() -> list[str]:
            return [r.getMessage() for r in caplog.records if "restarting it in" in r.getMessage()]

        try:
            poll(lambda: len(restarts()) >= 4, timeout=120, message="four restarts")
        finally:  # a failure must not leave the loop restarting children after the test
            supervisor.stop()
            thread.join(60)
    assert result == [0]
    # all stopped; each restart counted (the last one logged may have been called off)
    running, restarted = supervisor.counts()
    assert running == 0 and len(restarts()) - 1 <= restarted <= len(restarts())
    pauses = [re.search(r"restarting it in (\S+) s", m).group(1) for m in restarts()[:4]]
    assert pauses == ["0.05", "0.1", "0.2", "0.2"]
    assert all("exited with code 2" in m for m in restarts())


# --- metrics ------------------------------------------------------------------------------


@pytest.mark.skipif(not LINUX, reason="127.0.0.2 is a loopback address on Linux only")
@pytest.mark.django_db(transaction=True)
def test_metrics_of_all_children_summed_on_the_chosen_host(start_worker, tmp_path):
    pytest.importorskip("prometheus_client")
    from tests.test_metrics import samples, value

    log = tmp_path / "runs.jsonl"
    temp = tmp_path / "tmp"
    temp.mkdir()
    port = free_port("127.0.0.2")
    parent = start_worker("--processes", "2", "--concurrency", "2", "--metrics-port", str(port),
                          "--metrics-host", "127.0.0.2", env={"TMPDIR": str(temp)})
    children = child_pids(2)
    [shared] = poll(lambda: list(temp.glob("conductor-metrics-*")), message="the counters' dir")
    n = 60
    conductor.invoke_many("chaos-steps", [
        {"payload": {"log": str(log), "steps": 1, "pause": 0.02}} for _ in range(n)])
    poll(lambda: not Execution.objects.unfinished().exists(), timeout=120,
         message="the executions to finish")
    assert pids(log) == set(children)  # the sum below is over both

    def scraped():
        text = fetch(f"http://127.0.0.2:{port}/metrics")
        got = samples(text) if text else {}
        done = value(got, "conductor_executions_finished_total", task="chaos-steps",
                     queue="default", outcome="completed")
        return got if done == n else None

    got = poll(scraped, timeout=30, interval=0.2, message=f"{n} completed runs counted")
    assert value(got, "conductor_executions_started_total", task="chaos-steps",
                 queue="default") == n
    assert value(got, "conductor_execution_duration_seconds_count", task="chaos-steps") == n
    assert value(got, "conductor_worker_processes") == 2
    assert value(got, "conductor_worker_restarts_total") == 0
    assert refused("127.0.0.1", port)  # only the address asked for
    parent.signal(signal.SIGINT)
    assert parent.wait(timeout=60) == 0
    assert not shared.exists()  # the children's counter files are removed


@pytest.mark.skipif(not LINUX, reason="127.0.0.2 is a loopback address on Linux only")
@pytest.mark.django_db(transaction=True)
def test_one_process_serves_metrics_on_localhost_only_by_default(start_worker):
    pytest.importorskip("prometheus_client")
    port = free_port()
    start_worker("--metrics-port", str(port))
    poll(lambda: fetch(f"http://127.0.0.1:{port}/metrics"), timeout=60, message="the metrics")
    assert refused("127.0.0.2", port)

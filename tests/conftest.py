"""Fixtures: real ``conductor_worker`` subprocesses and polling helpers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def poll(predicate: Callable[[], object], timeout: float = 20.0, interval: float = 0.02,
         message: str = "condition") -> object:
    """Call ``predicate`` until it returns something truthy, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


class WorkerProcess:
    """A ``manage.py conductor_worker`` subprocess on the test database."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log_path = log
        self._log = open(log, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "django", "conductor_worker", "-v", "2", *args],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """The exit code; a worker still running after ``timeout`` fails the test with
        its output and the stacks of all its threads (``PYTHONFAULTHANDLER``: SIGABRT)."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGABRT)
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
            tail = self.output()[-12000:]
            raise AssertionError(
                f"the worker did not exit within {timeout:g} s; the end of its output, "
                f"with the stacks of its threads:\n{tail}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._log.close()


def pgbouncer_console(*commands: str) -> None:
    """Run ``commands`` on PgBouncer's console (``CONDUCTOR_TEST_DB=pgbouncer`` only),
    ``{db}`` standing for the test database's name."""
    if os.environ.get("CONDUCTOR_TEST_DB") != "pgbouncer":
        return
    import psycopg

    settings = connection.settings_dict
    with psycopg.connect(host=settings["HOST"], port=settings["PORT"], user=settings["USER"],
                         dbname="pgbouncer", autocommit=True) as console:
        for command in commands:  # the console speaks simple queries only
            console.pgconn.exec_(command.format(db=settings["TEST"]["NAME"]).encode())


def release_pooled_connections() -> None:
    """Behind PgBouncer the pooler keeps server connections to the test database open:
    drop them (``KILL``, then ``RESUME``), so that Django can drop the database."""
    pgbouncer_console("KILL {db}", "RESUME {db}")


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings):
    release_pooled_connections()  # of an earlier run, before Django drops the database


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    yield
    release_pooled_connections()


@pytest.fixture
def start_worker(transactional_db, tmp_path):
    """Start real workers: ``start_worker("--concurrency", "2", env={...})``."""
    started: list[WorkerProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> WorkerProcess:
        full_env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "CONDUCTOR_TEST_DB_NAME": connection.settings_dict["NAME"],
            "PYTHONPATH": str(ROOT),
            "PYTHONFAULTHANDLER": "1",  # a hung worker shows its threads (``wait``)
            **(env or {}),
        }
        worker = WorkerProcess(list(args), full_env, tmp_path / f"worker-{len(started)}.log")
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.proc.poll() is None:
            worker.signal(signal.SIGTERM)
            try:
                worker.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        worker.kill()


@pytest.fixture
def is_postgres() -> bool:
    return connection.vendor == "postgresql"


# --- django_q engine: real qcluster subprocesses next to conductor_worker ----------------


class QclusterProcess(WorkerProcess):
    """A ``manage.py qcluster`` subprocess on the test database."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log_path = log
        self._log = open(log, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "django", "qcluster"],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def redis_reachable() -> bool:
    try:
        import redis

        redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=2).ping()
    except Exception:  # noqa: BLE001 - any failure means: not reachable
        return False
    return True


_q_names = iter(range(1_000_000))


@pytest.fixture(params=["database", "django_q-orm", "django_q-redis"])
def engine(request, start_worker, transactional_db, tmp_path):
    """Start one engine: ``engine.start(*worker_args)``; ``engine.name`` says which.

    ``database``: a conductor_worker. ``django_q-orm`` / ``django_q-redis``: a
    conductor_worker dispatching through that django-q2 broker and a qcluster, with a
    cluster name (the broker queue) of this test's own.
    """
    name = request.param
    if name == "django_q-redis" and not redis_reachable():
        pytest.skip("Redis is not reachable on 127.0.0.1:6379")
    runner = EngineRunner(name, start_worker, tmp_path)
    yield runner
    runner.stop()


class EngineRunner:
    def __init__(self, name: str, start_worker, tmp_path: Path) -> None:
        self.name = name
        self.is_django_q = name.startswith("django_q")
        self._start_worker = start_worker
        self._tmp = tmp_path
        self.env: dict[str, str] = {}
        self.qclusters: list[QclusterProcess] = []
        if self.is_django_q:
            self.env = {
                "CONDUCTOR_TEST_ENGINE": "django_q",
                "CONDUCTOR_TEST_BROKER": name.split("-", 1)[1],
                "CONDUCTOR_TEST_Q_NAME": f"cdj-test-{os.getpid()}-{next(_q_names)}",
            }

    def start(self, *args: str, env: dict[str, str] | None = None,
              qcluster: bool = True) -> WorkerProcess:
        """Start the conductor_worker (and, for django_q, one qcluster)."""
        worker = self._start_worker(*args, env={**self.env, **(env or {})})
        if self.is_django_q and qcluster:
            self.start_qcluster(env=env)
        return worker

    def start_qcluster(self, env: dict[str, str] | None = None) -> QclusterProcess:
        full_env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "CONDUCTOR_TEST_DB_NAME": connection.settings_dict["NAME"],
            "PYTHONPATH": str(ROOT),
            **self.env,
            **(env or {}),
        }
        proc = QclusterProcess(full_env, self._tmp / f"qcluster-{len(self.qclusters)}.log")
        self.qclusters.append(proc)
        return proc

    def output(self) -> str:
        return "\n".join(q.output() for q in self.qclusters)

    def stop(self) -> None:
        for q in self.qclusters:
            if q.proc.poll() is None:
                q.signal(signal.SIGTERM)
        for q in self.qclusters:
            try:
                q.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            q.kill()



def pytest_terminal_summary(terminalreporter) -> None:
    """The chaos tests' one line per scenario (tests/chaos_support.py)."""
    from tests.chaos_support import SUMMARY

    if SUMMARY:
        terminalreporter.section("chaos summary")
        for line in SUMMARY:
            terminalreporter.write_line(line)


def pytest_runtest_call(item) -> None:
    from tests.chaos_support import SUMMARY

    item.stash[_SUMMARY_LINES] = len(SUMMARY)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A chaos test that fails before its checks still gets its summary line."""
    from tests.chaos_support import SCENARIOS, SUMMARY, summarize

    outcome = yield
    report = outcome.get_result()
    if (call.when == "call" and report.failed and item.get_closest_marker("chaos")
            and len(SUMMARY) == item.stash.get(_SUMMARY_LINES, -1)):
        message = str(call.excinfo.value).strip().splitlines() if call.excinfo else []
        db = os.environ.get("CONDUCTOR_TEST_DB", "sqlite")
        summarize(SCENARIOS.get(item.name, item.name), db,
                  "FAILED before its checks: " + " / ".join(message[:2])[:300])


_SUMMARY_LINES = pytest.StashKey[int]()


@pytest.fixture(autouse=True)
def _reopen_a_connection_the_pooler_closed():
    """Behind PgBouncer, a test that terminates server sessions (the chaos tests) can
    make PgBouncer close this process's own client connection; Django keeps the closed
    one and every later test would fail on it. Open a new one instead."""
    if os.environ.get("CONDUCTOR_TEST_DB") == "pgbouncer":
        raw = getattr(connection, "connection", None)
        if raw is not None and getattr(raw, "closed", False):
            connection.close()
    yield

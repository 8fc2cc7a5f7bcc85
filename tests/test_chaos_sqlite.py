"""Chaos: Django's default SQLite settings never say "database is locked" (SPEC §14.8).

A database file configured as ``startproject`` writes it (no OPTIONS: rollback journal,
deferred transactions, 5 s timeout) and never opened in WAL mode; a worker runs on it
(its handlers also call ``ctx.schedule``/``ctx.unschedule``) while another process calls
``invoke``/``schedule``/``cancel``/``unschedule`` many times.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.chaos_support import poll, scale, show, stop_all, summarize, tails, vendor
from tests.conftest import ROOT

pytestmark = [pytest.mark.chaos, pytest.mark.django_db(transaction=True)]

UNFINISHED = "('pending', 'running', 'suspended')"


def _query(db: Path, sql: str) -> list[tuple]:
    """A short read of the file, outside Django (it takes no write lock)."""
    conn = sqlite3.connect(db, timeout=30)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_default_sqlite_settings_never_lock(start_worker, tmp_path: Path) -> None:
    if vendor() != "sqlite":  # it makes its own SQLite file: the SQLite cells run it
        pytest.skip("SQLite locking")
    db, log = tmp_path / "startproject.sqlite3", tmp_path / "runs.jsonl"
    calls = scale("LOCK_CALLS")
    settings = {"CONDUCTOR_TEST_DB": "sqlite", "CONDUCTOR_TEST_DB_NAME": str(db),
                "CONDUCTOR_TEST_SQLITE_DEFAULTS": "1"}
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(ROOT),
           **settings}
    subprocess.run([sys.executable, "-m", "django", "migrate", "-v", "0"], cwd=ROOT, env=env,
                   check=True, timeout=300)
    assert _query(db, "PRAGMA journal_mode") == [("delete",)]  # not WAL: the default
    worker = start_worker("--concurrency", "4", env={**settings, "CONDUCTOR_LOG_LEVEL": "WARNING"})
    poll(lambda: _query(db, "SELECT count(*) FROM conductor_django_worker")[0][0], timeout=60,
         message="the worker to register", workers=[worker])
    began = time.monotonic()
    caller = subprocess.run([sys.executable, "-m", "tests.chaos_caller", str(log), str(calls)],
                            cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120 + calls)
    assert caller.returncode == 0, caller.stderr[-3000:]
    result = json.loads(caller.stdout.strip().splitlines()[-1])
    poll(lambda: not _query(db, "SELECT count(*) FROM conductor_django_execution WHERE "
                            f"task_name <> 'chaos-noop' AND status IN {UNFINISHED}")[0][0],
         timeout=120, message="the invoked executions to finish", workers=[worker])
    seconds = time.monotonic() - began
    stop_all([worker])

    caller_locked = result["errors"].get("locked", 0)
    caller_other = sum(n for kind, n in result["errors"].items() if kind != "locked")
    output = worker.log_path.read_text(errors="replace")
    # the system check's advice quotes the error; an error itself is anything else
    worker_lines = [line for line in output.splitlines()
                    if "database is locked" in line and "HINT:" not in line]
    warned = "conductor_django.W001" in output
    failed = [f"{eid} {task}: {error!r}" for eid, task, error in _query(
        db, "SELECT id, task_name, last_error FROM conductor_django_execution"
            " WHERE status = 'failed' AND last_error LIKE '%locked%'")]
    summarize("sqlite-default-settings", "sqlite", (
        f"{calls} API calls from another process in {seconds:.0f} s with a worker running "
        f"({result['invoked']} executions), {caller_locked} 'database is locked' in the caller, "
        f"{len(worker_lines)} in the worker log, {len(failed)} executions failed on it, "
        f"{caller_other} other caller errors, system check warned: {warned}"))
    problems = (show("caller errors", result["examples"]) + show("worker log", worker_lines)
                + show("executions failed with a lock error", failed))
    assert not (caller_locked or caller_other or worker_lines or failed), (
        problems + tails([worker], 40))

"""Async handlers: many awaiting executions on one worker, and how fast a cancel
interrupts an ``await`` (docs/async.md quotes the output).

    .venv/bin/python bench/async_handlers.py --db postgres
    .venv/bin/python bench/async_handlers.py --db sqlite

1. ``--n`` executions (default 1,000) of ``async-nap-step`` (one step awaiting
   ``asyncio.sleep(1)``) run by ONE ``conductor_worker --async-concurrency N``: the time
   from the first start to the last finish (database timestamps), and the wall time
   including the worker's start-up.
2. ``--trials`` cancels (default 20) of ``async-await-forever`` while its step awaits:
   the time from just before ``conductor.cancel()`` to the moment the handler's
   ``await`` was interrupted (written by the handler), and to ``status = cancelled``
   as seen by a 1 ms poll. Median, 95th percentile and max.

Uses the task modules of the test suite and the database ``conductor_bench_async``
(PostgreSQL of the test settings) or a temporary SQLite file, created and migrated.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def setup(db: str) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    os.environ["CONDUCTOR_TEST_DB"] = db
    if db == "postgres":
        os.environ["CONDUCTOR_TEST_DB_NAME"] = "conductor_bench_async"
        import psycopg

        with psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres",
                             autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                ["conductor_bench_async"]).fetchone():
                conn.execute('CREATE DATABASE "conductor_bench_async"')
    else:
        path = Path(tempfile.gettempdir()) / "conductor-bench-async.sqlite3"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        os.environ["CONDUCTOR_TEST_DB_NAME"] = str(path)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def start_worker(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "django", "conductor_worker", "-v", "0",
                             *args], cwd=ROOT, env=env)


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)


def many(n: int, concurrency: int) -> None:
    import conductor_django as conductor
    from conductor_django.models import Execution

    Execution.objects.all().delete()
    ids = conductor.invoke_many("async-nap-step", [
        {"payload": {"n": i, "seconds": 1}} for i in range(n)])
    began = time.monotonic()
    worker = start_worker("--async-concurrency", str(concurrency))
    done = Execution.objects.filter(pk__in=ids, status="completed")
    deadline = time.monotonic() + 600
    while done.count() < n:
        if time.monotonic() > deadline or worker.poll() is not None:
            raise SystemExit("not all executions completed")
        time.sleep(0.05)
    wall = time.monotonic() - began
    stop(worker)
    rows = Execution.objects.filter(pk__in=ids)
    first = min(rows.values_list("started_at", flat=True))
    last = max(rows.values_list("finished_at", flat=True))
    print(f"{n} executions x await asyncio.sleep(1) in a step, one worker, "
          f"--async-concurrency {concurrency}:")
    print(f"  first start to last finish: {(last - first).total_seconds():.2f} s")
    print(f"  wall time with worker start-up: {wall:.2f} s")
    print(f"  (one after another: {n} s; with 10 threads: {n / 10:.0f} s)")


def cancels(trials: int) -> None:
    import conductor_django as conductor
    from conductor_django.models import Execution

    Execution.objects.all().delete()
    worker = start_worker()
    interrupted, finished = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for trial in range(trials):
            log = Path(tmp) / f"{trial}.log"
            eid = conductor.invoke("async-await-forever", {"log": str(log)})
            deadline = time.monotonic() + 30
            while not (log.exists() and log.read_text().startswith("started")):
                if time.monotonic() > deadline:
                    raise SystemExit("the handler did not start")
                time.sleep(0.005)
            time.sleep(0.1)  # the step's await has begun
            sent = time.time()
            conductor.cancel(eid, "bench")
            row = Execution.objects.filter(pk=eid)
            while row.values_list("status", flat=True).first() != "cancelled":
                time.sleep(0.001)
            finished.append(time.time() - sent)
            lines = log.read_text().splitlines()
            stamp = next(line for line in lines if line.startswith("interrupted"))
            interrupted.append(float(stamp.split()[1]) - sent)
    stop(worker)

    def show(what: str, values: list[float]) -> None:
        ms = sorted(v * 1000 for v in values)
        p95 = ms[max(0, round(0.95 * len(ms)) - 1)]
        print(f"  {what}: median {statistics.median(ms):.1f} ms, p95 {p95:.1f} ms, "
              f"max {ms[-1]:.1f} ms")

    print(f"cancel of an awaiting step, {trials} trials:")
    show("cancel() to the await interrupted", interrupted)
    show("cancel() to status cancelled (1 ms poll)", finished)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=1000)
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    setup(args.db)
    print(f"database: {args.db}")
    many(args.n, args.concurrency)
    cancels(args.trials)


if __name__ == "__main__":
    main()

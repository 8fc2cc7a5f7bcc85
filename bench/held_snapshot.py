#!/usr/bin/env python
"""A drain while another session holds a snapshot open, beside the same drain without.

PostgreSQL's VACUUM removes no row version that an open snapshot may still read. A job
queue writes several versions per execution (the claim, the finish, each step), so a
``REPEATABLE READ`` transaction left open (a report, a shell ``idle in transaction``)
makes every claim step over the dead versions of everything claimed since it began.

Rounds, interleaved (plain, held, plain, held...), each on an emptied and vacuumed
table: N executions (``bench.steps3``: three memoized steps each, or ``--task``) queued,
then drained by one ``conductor_worker``. In the held rounds two other sessions are
opened before the executions are queued and kept until the drain ends: one
``REPEATABLE READ`` transaction that has read the executions' table (its snapshot),
and one ``idle in transaction`` that holds a transaction id. Measured per round: the
drain rate (first start to last finish, from the rows), the executions' table size
(with indexes and TOAST) and its dead row versions at the end, the worker's peak RSS,
and whether the worker reported the long transaction (``BENCH_LONG_TRANSACTION``, 5 s
here). Checked: every execution completed once.

Usage: ``python bench/held_snapshot.py [--n 100000] [--rounds 2] [--json out.json]``
(PostgreSQL). Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]
os.environ.setdefault("BENCH_LONG_TRANSACTION", "5")

import run  # noqa: E402  (bench/run.py: database set-up, worker start and stop)

TABLE = "conductor_django_execution"


def hold() -> list:
    """Two sessions that keep old row versions alive until they are closed."""
    import psycopg
    from django.db import connection

    params = connection.get_connection_params()
    snapshot = psycopg.connect(**{k: v for k, v in params.items() if k != "cursor_factory"})
    snapshot.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    snapshot.execute(f"SELECT count(*) FROM {TABLE}").fetchall()
    idle = psycopg.connect(**{k: v for k, v in params.items() if k != "cursor_factory"})
    idle.execute("BEGIN")
    idle.execute("SELECT txid_current()").fetchall()
    return [snapshot, idle]


def table_state() -> tuple[int, int]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"SELECT pg_total_relation_size('{TABLE}')")
        size = cursor.fetchone()[0]
        cursor.execute("SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = %s", [TABLE])
        dead = cursor.fetchone()[0]
    return int(size), int(dead)


def drain_round(task: str, n: int, held: bool, log: Path) -> dict:
    from django.db.models import Max, Min

    import conductor_django as conductor
    from conductor_django.models import Execution

    run.purge()
    sessions = hold() if held else []
    try:
        for start in range(0, n, 10000):
            conductor.invoke_many(task, [{"payload": {"i": i}}
                                         for i in range(start, min(n, start + 10000))])
        with log.open("w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "django", "conductor_worker", "--concurrency",
                 os.environ.get("BENCH_CONCURRENCY", "10")],
                cwd=HERE, env={**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{HERE.parent}"},
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            peak = 0
            try:
                deadline = time.monotonic() + max(300, n / 50)
                while run.unfinished():
                    if time.monotonic() > deadline:
                        raise SystemExit("bench: the drain did not finish")
                    peak = max(peak, run.read_rss(proc.pid))
                    time.sleep(0.5)
                time.sleep(1.0)  # at least one more look for long transactions
            finally:
                run.stop(proc)
        size, dead = table_state()
    finally:
        for session in sessions:
            session.rollback()
            session.close()
    rows = Execution.objects.filter(task_name=task)
    span = rows.aggregate(a=Min("started_at"), b=Max("finished_at"))
    seconds = (span["b"] - span["a"]).total_seconds()
    done = rows.filter(status="completed", attempts=1).count()
    if done != n:
        raise SystemExit(f"bench: {done} of {n} completed in one attempt")
    return {"held": held, "per_s": round(n / seconds), "table_mb": round(size / 2**20, 1),
            "dead_versions": dead, "peak_rss_mb": round(peak / 1024, 1),
            "warned": "has been open for" in log.read_text()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--task", default="bench.steps3")
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()
    run.setup_django("postgres")
    log = Path(os.environ.get("BENCH_WORKER_LOG", "/tmp/conductor-held-snapshot-worker.log"))
    results = []
    for number in range(args.rounds):
        for held in (False, True):
            result = drain_round(args.task, args.n, held, log)
            print(f"round {number + 1} {'held ' if held else 'plain'}: {json.dumps(result)}",
                  flush=True)
            results.append(result)
    plain = statistics.median(r["per_s"] for r in results if not r["held"])
    held_rate = statistics.median(r["per_s"] for r in results if r["held"])
    summary = {"n": args.n, "task": args.task, "rounds": results,
               "plain_per_s": plain, "held_per_s": held_rate,
               "held_ratio": round(held_rate / plain, 2)}
    print(json.dumps({k: v for k, v in summary.items() if k != "rounds"}))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    if not all(r["warned"] for r in results if r["held"]):
        raise SystemExit("bench: a worker did not report the long transaction")


if __name__ == "__main__":
    main()

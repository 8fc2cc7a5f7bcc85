#!/usr/bin/env python
"""The hot path and the admin with a long history beside the same on an empty table.

Measures, first on an empty table, then with ``--rows`` finished executions of the past
20 days (97 % completed, 2 % failed, 1 % cancelled) and ``--steps`` steps each already
in the tables (built in SQL with ``generate_series``, in chunks, then ``VACUUM
ANALYZE``), in one run on PostgreSQL:

* ``invoke`` one by one (1,000) and ``invoke_many`` (10,000);
* the drain of N no-op executions and of N/2 with three steps each, one
  ``conductor_worker``; start latency p50 (200 executions into an idle worker);
* the admin (a logged-in superuser, the median of three requests): the execution list,
  the list filtered by task and status, searched by an id, an execution's page, the
  dashboard; the metrics endpoint;
* retention: the cleanup of 100,000 expired executions (three steps each).

Usage: ``python bench/scale.py --rows 10000000 --steps 3 [--n 10000] [--json out.json]``
Needs about 13 GB of disk for 10 million rows with 3 steps each, and leaves them in
the database (drop it afterwards); run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]
os.environ["BENCH_ADMIN"] = "1"  # benchproject.settings: the admin and the metrics URL

import run  # noqa: E402  (bench/run.py)

HISTORY = """
INSERT INTO conductor_django_execution (id, task_name, queue, status, payload, result,
    last_error, cancelled, cancel_requested, attempts, max_attempts, priority, run_at,
    created_at, started_at, finished_at, event_name, resume, lease)
SELECT gen_random_uuid(), 'bench.old', 'default', s.status, jsonb_build_object('n', i),
    CASE WHEN s.status = 'completed' THEN '1'::jsonb END,
    CASE WHEN s.status = 'failed' THEN 'ValueError: boom ' || (i %% 50) ELSE '' END,
    false, s.status = 'cancelled', 1, 3, 0, t.at, t.at, t.at, t.at + interval '20 ms',
    'conductor.invoke', false, 1
FROM generate_series(%s, %s) i,
    LATERAL (SELECT now() - interval '20 days' * (i::float / %s) AS at) t,
    LATERAL (SELECT CASE WHEN i %% 100 < 97 THEN 'completed' WHEN i %% 100 < 99 THEN 'failed'
                         ELSE 'failed' END AS status) s
"""

STEPS = """
INSERT INTO conductor_django_step (execution_id, name, result, started_at, created_at)
SELECT e.id, 'step-' || k, '1'::jsonb, e.started_at, e.started_at
FROM conductor_django_execution e, generate_series(1, %s) k
WHERE e.task_name = %s AND e.created_at >= %s AND e.created_at < %s
"""


def fill(rows: int, steps: int, task: str = "bench.old", days_ago: float = 0.0) -> float:
    """``rows`` finished executions of ``task`` (and ``steps`` steps each), ending
    ``days_ago`` days ago; seconds taken."""
    from datetime import timedelta

    from django.db import connection
    from django.utils import timezone

    began = time.perf_counter()
    sql = HISTORY.replace("'bench.old'", "%s").replace(
        "now() - interval '20 days'", f"now() - interval '{days_ago} days' - interval '20 days'")
    chunk = 1_000_000
    with connection.cursor() as cursor:
        for start in range(1, rows + 1, chunk):
            end = min(rows, start + chunk - 1)
            cursor.execute(sql, [task, start, end, rows])
            if start == 1 or end == rows or (end // chunk) % 5 == 0:
                print(f"  {end:,} executions ({time.perf_counter() - began:.0f} s)", flush=True)
        if steps:
            now = timezone.now()
            oldest = now - timedelta(days=21 + days_ago)
            span = (now - oldest) / max(1, rows // chunk)
            at = oldest
            while at < now:
                cursor.execute(STEPS, [steps, task, at, at + span])
                at += span
            print(f"  steps ({time.perf_counter() - began:.0f} s)", flush=True)
        cursor.execute("VACUUM ANALYZE conductor_django_execution")
        cursor.execute("VACUUM ANALYZE conductor_django_step")
    return time.perf_counter() - began


def timed_get(client, url: str) -> float:
    times = []
    for _ in range(3):
        began = time.perf_counter()
        reply = client.get(url)
        times.append((time.perf_counter() - began) * 1000)
        assert reply.status_code == 200, (url, reply.status_code)
    return statistics.median(times)


def admin_pages(client) -> dict:
    import conductor_django as conductor
    from conductor_django.models import Execution

    one = Execution.objects.filter(task_name="bench.old", status="failed").order_by(
        "-created_at").values_list("pk", flat=True).first()
    one = one or conductor.invoke("bench.noop", {"page": 1})  # the empty table's one row
    base = "/admin/conductor_django/execution/"
    pages = {"list_ms": base,
             "list_filtered_ms": f"{base}?task_name=bench.old&status__exact=failed",
             "list_search_id_ms": f"{base}?q={one}",
             "execution_page_ms": f"{base}{one}/change/",
             "dashboard_ms": f"{base}dashboard/",
             "metrics_ms": "/conductor/metrics"}
    times = {name: round(timed_get(client, url), 1) for name, url in pages.items()}
    run.clear_work()
    return times


def retention(n: int) -> float:
    """Seconds to clean up ``n`` expired executions (three steps each)."""
    from datetime import timedelta

    from django.test import override_settings

    from conductor_django import conf
    from conductor_django import retention as cleanup_module

    fill(n, 3, task="bench.expired", days_ago=40)
    settings = {**conf.user_settings(), "RETENTION": {"completed": timedelta(days=30),
                                                        "failed": timedelta(days=30)}}
    began = time.perf_counter()
    with override_settings(CONDUCTOR=settings):
        while not cleanup_module.cleanup().finished:
            pass
    return time.perf_counter() - began


def measure(client, n: int) -> dict:
    out = run.enqueue(1000, fresh=False)
    bulk = time.perf_counter()
    import conductor_django as conductor

    conductor.invoke_many("bench.noop", [{"payload": {"i": i}} for i in range(10_000)])
    out["enqueue_bulk_per_s"] = 10_000 / (time.perf_counter() - bulk)
    out["drain_per_s"] = run.drain("bench.noop", n, fresh=False)["per_s"]
    out["drain_steps3_per_s"] = run.drain("bench.steps3", n // 2, fresh=False)["per_s"]
    out["start_p50_ms"] = run.latency(fresh=False)["p50_ms"]
    run.clear_work()
    out.update(admin_pages(client))
    out["cleanup_100k_s"] = retention(100_000)
    return {k: round(v, 1) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()
    run.setup_django("postgres")
    run.purge()
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.test.utils import setup_test_environment

    setup_test_environment()
    user, _ = get_user_model().objects.get_or_create(
        username="bench-scale", defaults={"is_staff": True, "is_superuser": True})
    client = Client()
    client.force_login(user)
    empty = measure(client, args.n)
    print("empty:", json.dumps(empty), flush=True)
    print(f"filling {args.rows:,} executions with {args.steps} steps each", flush=True)
    filled = fill(args.rows, args.steps)
    big = measure(client, args.n)
    print(f"{args.rows:,} rows:", json.dumps(big), flush=True)
    result = {"rows": args.rows, "steps": args.steps, "n": args.n, "fill_s": round(filled),
              "empty": empty, "big": big}
    # ratio: the big table's figure over the empty table's (per_s: higher is better;
    # ms and s: lower is better)
    print(f"\n| figure | empty table | {args.rows:,} finished | ratio |\n|---|---|---|---|")
    for key, value in empty.items():
        ratio = big[key] / value if value else float("nan")
        print(f"| {key} | {value:,} | {big[key]:,} | {ratio:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    # the filled database is left as it is: deleting ten million rows takes longer than
    # dropping the database (BENCH_PG_NAME, conductor_bench by default)


if __name__ == "__main__":
    main()

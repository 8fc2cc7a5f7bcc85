"""The admin on a big table: fill PostgreSQL with N executions (and one execution of
10,000 steps, a few workers and schedules), time every admin page and print the plan of
every query they make on the executions and steps (docs/admin.md quotes its output).

    .venv/bin/python bench/admin_explain.py --rows 1000000 > bench/runs/admin.md

Uses (and by default re-creates) the database ``conductor_admin_bench`` on the
PostgreSQL of the test settings (``CONDUCTOR_PG_*``).
"""

from __future__ import annotations

import argparse
import statistics
import time

from bigtable import prepare, use_postgres

use_postgres("conductor_admin_bench")

FILL = """
INSERT INTO conductor_django_execution (id, task_name, queue, status, payload, result,
    last_error, cancelled, attempts, max_attempts, priority, run_at, created_at, started_at,
    finished_at, locked_by, locked_at, dedupe_key, parent_id, schedule_name, event_name, resume)
SELECT gen_random_uuid(), 'task-' || (i %% 20), (ARRAY['default', 'mail', 'reports'])[1 + i %% 3],
    s.status, jsonb_build_object('n', i), CASE WHEN s.status = 'completed' THEN '1'::jsonb END,
    CASE WHEN s.status IN ('failed', 'cancelled') THEN 'boom ' || i ELSE '' END,
    s.status = 'cancelled', 1, 3, 0, t.at, t.at,
    CASE WHEN s.status <> 'pending' THEN t.at END,
    CASE WHEN s.status IN ('completed', 'failed', 'cancelled')
         THEN t.at + make_interval(secs => 0.05 + (i %% 97) * 0.04) END,
    NULL, NULL, CASE WHEN i %% 10 = 0 THEN 'key-' || i END, NULL, NULL, 'conductor.invoke', false
FROM generate_series(1, %s) AS i,
    LATERAL (SELECT now() - make_interval(secs => i * 0.5) AS at) AS t,
    LATERAL (SELECT CASE WHEN i %% 100 = 7 THEN 'failed' WHEN i %% 1000 = 3 THEN 'cancelled'
                         WHEN i < 200 THEN 'pending' ELSE 'completed' END AS status) AS s
"""

# One execution of 10,000 steps (a step every 0.2 s, each 0.15 s long), two attempts.
BIG = "0f0f0f0f-0000-4000-8000-000000000001"
BIG_FILL = """
INSERT INTO conductor_django_execution (id, task_name, queue, status, payload, result,
    last_error, cancelled, attempts, max_attempts, priority, run_at, created_at, started_at,
    finished_at, locked_by, locked_at, dedupe_key, parent_id, schedule_name, event_name, resume)
VALUES (%(id)s, 'import-catalogue', 'default', 'completed', '{"file": "big.csv"}', '10000',
    '', false, 2, 3, 0, now() - interval '1 hour', now() - interval '1 hour',
    now() - interval '1 hour', now() - interval '1 hour' + interval '2001 seconds', NULL, NULL,
    NULL, NULL, NULL, 'conductor.invoke', false);
INSERT INTO conductor_django_attempt (execution_id, number, worker, started_at, finished_at,
    ended, error, retried_by, from_step)
VALUES (%(id)s, 1, NULL, now() - interval '1 hour',
    now() - interval '1 hour' + interval '600 seconds', 'recovered', 'worker presumed dead',
    '', ''),
    (%(id)s, 2, NULL, now() - interval '1 hour' + interval '601 seconds',
    now() - interval '1 hour' + interval '2001 seconds', 'completed', '', '', '');
INSERT INTO conductor_django_step (execution_id, name, result, started_at, created_at)
SELECT %(id)s, 'row-' || i, jsonb_build_object('row', i),
    now() - interval '1 hour' + make_interval(secs => i * 0.2),
    now() - interval '1 hour' + make_interval(secs => i * 0.2 + 0.15)
FROM generate_series(1, 10000) AS i;
INSERT INTO conductor_django_worker (id, hostname, pid, queues, concurrency, started_at,
    last_heartbeat, role)
SELECT gen_random_uuid(), 'host-' || i, 1000 + i, '[]', 8, now() - interval '1 day', now(),
    'worker' FROM generate_series(1, 4) AS i;
INSERT INTO conductor_django_schedule (task_name, name, cron, payload, timezone, enabled,
    static, next_run_at, last_run_at)
SELECT 'task-' || i, 'nightly', '0 ' || i || ' * * *', NULL, CASE WHEN i %% 2 = 0 THEN
    'Europe/Paris' ELSE '' END, true, false, now() + interval '1 hour', NULL
FROM generate_series(1, 20) AS i;
"""

PAGES = [
    ("list, unfiltered", "/admin/conductor_django/execution/"),
    ("list, status failed", "/admin/conductor_django/execution/?status__exact=failed"),
    ("list, status pending (rare)", "/admin/conductor_django/execution/?status__exact=pending"),
    ("list, one task", "/admin/conductor_django/execution/?task_name=task-3"),
    ("list, one queue", "/admin/conductor_django/execution/?queue=mail"),
    ("list, search dedupe key", "/admin/conductor_django/execution/?q=key-5000"),
    ("list, page 50", "/admin/conductor_django/execution/?p=50"),
    ("list, search short id prefix", "/admin/conductor_django/execution/?q=0f0f0f0f"),
    ("dashboard", "/admin/conductor_django/execution/dashboard/"),
    ("execution of 10,000 steps (latest page)",
     f"/admin/conductor_django/execution/{BIG}/change/"),
    ("execution of 10,000 steps, first page",
     f"/admin/conductor_django/execution/{BIG}/change/?steps=1"),
    ("execution of 10,000 steps, page 100",
     f"/admin/conductor_django/execution/{BIG}/change/?steps=100"),
    ("execution live poll (JSON)", f"/admin/conductor_django/execution/{BIG}/live/"),
    ("schedules list", "/admin/conductor_django/schedule/"),
    ("workers list", "/admin/conductor_django/worker/"),
]
REPEAT = 5  # timed views per page (after one to warm up): the median is reported


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="reuse the filled database")
    args = parser.parse_args()

    def fill(cursor) -> None:
        cursor.execute(FILL, [args.rows])
        cursor.execute(BIG_FILL, {"id": BIG})
        for table in ("execution", "step", "attempt", "worker", "schedule"):
            cursor.execute(f"VACUUM ANALYZE conductor_django_{table}")

    client = prepare(args.keep, fill)
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*), pg_size_pretty(pg_total_relation_size("
                       "'conductor_django_execution')) FROM conductor_django_execution")
        rows, size = cursor.fetchone()
        cursor.execute("SHOW server_version")
        version = cursor.fetchone()[0]
    print(f"# Admin on {rows} executions (table + indexes {size}, PostgreSQL {version})\n")
    summary = []
    for title, url in PAGES:
        client.get(url)  # warm the cache: the numbers are for a page view on a warm server
        times = []
        for _ in range(REPEAT):
            with CaptureQueriesContext(connection) as captured:
                started = time.monotonic()
                response = client.get(url)
                times.append((time.monotonic() - started) * 1000)
            assert response.status_code == 200, (url, response.status_code)
        median, worst = statistics.median(times), max(times)
        sql_ms = sum(float(q["time"]) for q in captured.captured_queries) * 1000
        summary.append((title, median, worst, len(captured.captured_queries), sql_ms))
        print(f"## {title}: `{url}`\n\n{median:.0f} ms for the page (median of {REPEAT}, "
              f"slowest {worst:.0f} ms), {len(captured.captured_queries)} queries\n")
        for query in captured.captured_queries:
            sql = query["sql"]
            if not any(f"conductor_django_{t}" in sql for t in ("execution", "step")) \
                    or not sql.lstrip().startswith(("SELECT", "WITH")):
                continue
            with connection.cursor() as cursor:
                cursor.execute(f"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON) {sql}")
                plan = "\n".join(row[0] for row in cursor.fetchall())
            print(f"```sql\n{sql[:600]}{' ...' if len(sql) > 600 else ''}\n```\n"
                  f"```\n{plan}\n```\n")
    print("## Summary\n\n| page | median | slowest | queries | time in the database |\n"
          "|---|---|---|---|---|")
    for title, median, worst, queries, sql_ms in summary:
        print(f"| {title} | {median:.0f} ms | {worst:.0f} ms | {queries} | {sql_ms:.1f} ms |")


if __name__ == "__main__":
    main()

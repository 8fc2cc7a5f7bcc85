"""The metrics endpoint on a big table: fill PostgreSQL with N executions, time
``/conductor/metrics`` and print the plan of every query it makes
(docs/observability.md quotes the numbers).

    .venv/bin/python bench/metrics_endpoint.py --rows 1000000 --unfinished 10000

Most rows are finished history (completed, some failed and cancelled, one every half
second over the past days); ``--unfinished`` of them are pending, running or suspended
(the backlog). Uses (and by default re-creates) the database ``conductor_metrics_bench``
on the PostgreSQL of the test settings (``CONDUCTOR_PG_*``; ``CONDUCTOR_TEST_DB_NAME``
names another).
"""

from __future__ import annotations

import argparse
import statistics
import time

from bigtable import prepare, use_postgres

use_postgres("conductor_metrics_bench")

# Row i finished i/2 seconds ago; one row in every rows/unfinished is unfinished (the
# backlog): a tenth of those running, a tenth suspended, the rest pending.
FILL = """
INSERT INTO conductor_django_execution (id, task_name, queue, status, payload, result,
    last_error, cancelled, attempts, max_attempts, priority, run_at, created_at, started_at,
    finished_at, locked_by, locked_at, dedupe_key, parent_id, schedule_name, event_name, resume,
    lease)
SELECT gen_random_uuid(), 'task-' || (i %% 20), (ARRAY['default', 'mail', 'reports'])[1 + i %% 3],
    s.status, jsonb_build_object('n', i), CASE WHEN s.status = 'completed' THEN '1'::jsonb END,
    CASE WHEN s.status IN ('failed', 'cancelled') THEN 'boom ' || i ELSE '' END,
    s.status = 'cancelled', 1, 3, 0, t.at, t.at,
    CASE WHEN s.status <> 'pending' THEN t.at END,
    CASE WHEN s.status IN ('completed', 'failed', 'cancelled') THEN t.at + interval '1 second' END,
    CASE WHEN s.status = 'running' THEN gen_random_uuid() END,
    CASE WHEN s.status = 'running' THEN t.at END,
    NULL, NULL, NULL, 'conductor.invoke', false, 1
FROM generate_series(1, %s) AS i,
    LATERAL (SELECT now() - make_interval(secs => i * 0.5) AS at) AS t,
    LATERAL (SELECT CASE WHEN i %% %s = 0 THEN (CASE WHEN i / %s %% 10 = 1 THEN 'running'
                                                   WHEN i / %s %% 10 = 2 THEN 'suspended'
                                                   ELSE 'pending' END)
                         WHEN i %% 100 = 7 THEN 'failed' WHEN i %% 1000 = 3 THEN 'cancelled'
                         ELSE 'completed' END AS status) AS s
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--unfinished", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--keep", action="store_true", help="reuse the filled database")
    args = parser.parse_args()

    def fill(cursor) -> None:
        every = max(1, args.rows // max(1, args.unfinished))
        cursor.execute(FILL, [args.rows, every, every, every])
        cursor.execute("VACUUM ANALYZE conductor_django_execution")

    client = prepare(args.keep, fill)
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*), count(*) FILTER (WHERE status IN ('pending', "
                       "'running', 'suspended')) FROM conductor_django_execution")
        rows, unfinished = cursor.fetchone()
        cursor.execute("SHOW server_version")
        version = cursor.fetchone()[0]
    url = "/conductor/metrics"
    client.get(url)  # warm: the numbers are for a scrape of a warm server
    times = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.status_code
    times.sort()
    p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
    print(f"# /conductor/metrics on {rows} executions ({unfinished} unfinished), "
          f"PostgreSQL {version}\n")
    print(f"median {statistics.median(times):.1f} ms, p95 {p95:.1f} ms, "
          f"max {times[-1]:.1f} ms over {len(times)} scrapes "
          f"({len(response.content)} bytes)\n")
    with CaptureQueriesContext(connection) as captured:
        client.get(url)
    for query in captured.captured_queries:
        sql = query["sql"]
        if "conductor_django_" not in sql or not sql.lstrip().startswith(("SELECT", "(")):
            continue
        with connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON) {sql}")
            plan = "\n".join(row[0] for row in cursor.fetchall())
        print(f"```sql\n{sql}\n```\n```text\n{plan}\n```\n")


if __name__ == "__main__":
    main()

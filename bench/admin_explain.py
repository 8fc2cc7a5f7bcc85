"""The admin on a big table: fill PostgreSQL with N executions, time the admin pages and
print the plan of every query they make (docs/admin.md quotes its output).

    .venv/bin/python bench/admin_explain.py --rows 1000000 > bench/runs/admin.md

Uses (and by default re-creates) the database ``conductor_admin_bench`` on the
PostgreSQL of the test settings (``CONDUCTOR_PG_*``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["CONDUCTOR_TEST_DB"] = "postgres"
os.environ.setdefault("CONDUCTOR_TEST_DB_NAME", "conductor_admin_bench")
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"

FILL = """
INSERT INTO conductor_django_execution (id, task_name, queue, status, payload, result,
    last_error, cancelled, attempts, max_attempts, priority, run_at, created_at, started_at,
    finished_at, locked_by, locked_at, dedupe_key, parent_id, schedule_name, event_name, resume)
SELECT gen_random_uuid(), 'task-' || (i %% 20), (ARRAY['default', 'mail', 'reports'])[1 + i %% 3],
    s.status, jsonb_build_object('n', i), CASE WHEN s.status = 'completed' THEN '1'::jsonb END,
    CASE WHEN s.status IN ('failed', 'cancelled') THEN 'boom ' || i ELSE '' END,
    s.status = 'cancelled', 1, 3, 0, t.at, t.at,
    CASE WHEN s.status <> 'pending' THEN t.at END,
    CASE WHEN s.status IN ('completed', 'failed', 'cancelled') THEN t.at + interval '1 second' END,
    NULL, NULL, CASE WHEN i %% 10 = 0 THEN 'key-' || i END, NULL, NULL, 'conductor.invoke', false
FROM generate_series(1, %s) AS i,
    LATERAL (SELECT now() - make_interval(secs => i * 0.5) AS at) AS t,
    LATERAL (SELECT CASE WHEN i %% 100 = 7 THEN 'failed' WHEN i %% 1000 = 3 THEN 'cancelled'
                         WHEN i < 200 THEN 'pending' ELSE 'completed' END AS status) AS s
"""

PAGES = [
    ("list, unfiltered", "/admin/conductor_django/execution/"),
    ("list, status failed", "/admin/conductor_django/execution/?status__exact=failed"),
    ("list, status pending (rare)", "/admin/conductor_django/execution/?status__exact=pending"),
    ("list, one task", "/admin/conductor_django/execution/?task_name=task-3"),
    ("list, one queue", "/admin/conductor_django/execution/?queue=mail"),
    ("list, search dedupe key", "/admin/conductor_django/execution/?q=key-5000"),
    ("list, page 50", "/admin/conductor_django/execution/?p=50"),
    ("dashboard", "/admin/conductor_django/execution/dashboard/"),
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="reuse the filled database")
    args = parser.parse_args()

    import psycopg

    name = os.environ["CONDUCTOR_TEST_DB_NAME"]
    conninfo = dict(host=os.environ.get("CONDUCTOR_PG_HOST", "127.0.0.1"),
                    port=os.environ.get("CONDUCTOR_PG_PORT", "5432"),
                    user=os.environ.get("CONDUCTOR_PG_USER", "postgres"),
                    password=os.environ.get("CONDUCTOR_PG_PASSWORD", ""))
    if not args.keep:
        with psycopg.connect(dbname="postgres", autocommit=True, **conninfo) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')

    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    if not args.keep:
        call_command("migrate", verbosity=0)
        started = time.monotonic()
        with connection.cursor() as cursor:
            cursor.execute(FILL, [args.rows])
            cursor.execute("VACUUM ANALYZE conductor_django_execution")
        print(f"<!-- filled {args.rows} rows in {time.monotonic() - started:.1f} s -->")
        User.objects.create_superuser("bench", password="bench")
    client = Client()
    client.force_login(User.objects.get(username="bench"))

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*), pg_size_pretty(pg_total_relation_size("
                       "'conductor_django_execution')) FROM conductor_django_execution")
        rows, size = cursor.fetchone()
        cursor.execute("SHOW server_version")
        version = cursor.fetchone()[0]
    print(f"# Admin on {rows} executions (table + indexes {size}, PostgreSQL {version})\n")
    for title, url in PAGES:
        client.get(url)  # warm the cache: the numbers are for a page view on a warm server
        with CaptureQueriesContext(connection) as captured:
            started = time.monotonic()
            response = client.get(url)
            elapsed = (time.monotonic() - started) * 1000
        assert response.status_code == 200, (url, response.status_code)
        print(f"## {title}: `{url}`\n\n{elapsed:.0f} ms for the page, "
              f"{len(captured.captured_queries)} queries\n")
        for query in captured.captured_queries:
            sql = query["sql"]
            if "conductor_django_execution" not in sql or not sql.lstrip().startswith(
                    ("SELECT", "WITH")):
                continue
            with connection.cursor() as cursor:
                cursor.execute(f"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON) {sql}")
                plan = "\n".join(row[0] for row in cursor.fetchall())
            print(f"```sql\n{sql[:600]}{' ...' if len(sql) > 600 else ''}\n```\n"
                  f"```\n{plan}\n```\n")


if __name__ == "__main__":
    main()

"""Bulk cancel of N matching executions from the admin, in the background with progress:
fill PostgreSQL with N pending executions of one queue (and some others that must stay
untouched), open "Cancel all matching…" for that queue as a logged-in admin, confirm,
and time the background task on a real ``conductor_worker`` until every match is
cancelled, printing its progress as the execution page shows it
(docs/performance.md quotes the numbers).

    .venv/bin/python bench/bulk_cancel.py --rows 100000

Run it alone on the machine (its time is the point). Uses (and by default re-creates)
the database ``conductor_bulk_bench`` on the PostgreSQL of the test settings
(``CONDUCTOR_PG_*``; ``CONDUCTOR_TEST_DB_NAME`` names another).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bigtable import ROOT, prepare, use_postgres

use_postgres("conductor_bulk_bench")

FILL = """
INSERT INTO conductor_django_execution (id, task_name, queue, status, payload, last_error,
    cancelled, cancel_requested, attempts, max_attempts, priority, run_at, created_at,
    resume, lease, event_name)
SELECT gen_random_uuid(), CASE WHEN i <= %s THEN 'import-feed' ELSE 'other' END,
    CASE WHEN i <= %s THEN 'imports' ELSE 'parked' END, 'pending', jsonb_build_object('n', i),
    '', false, false, 0, 3, 0, now() - make_interval(secs => i * 0.01),
    now() - make_interval(secs => i * 0.01), false, 0, 'conductor.invoke'
FROM generate_series(1, %s) AS i
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000, help="executions to cancel")
    parser.add_argument("--others", type=int, default=1_000,
                        help="executions of another queue, left untouched")
    parser.add_argument("--keep", action="store_true", help="reuse the filled database")
    args = parser.parse_args()

    def fill(cursor) -> None:
        cursor.execute(FILL, [args.rows, args.rows, args.rows + args.others])
        cursor.execute("VACUUM ANALYZE conductor_django_execution")

    client = prepare(args.keep, fill)
    from django.db import connection
    from django.test.utils import setup_test_environment
    from django.urls import reverse

    from conductor_django.admin import bulk
    from conductor_django.models import Execution

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        version = cursor.fetchone()[0]
    setup_test_environment()  # the test client keeps each page's template context
    matching = Execution.objects.filter(queue="imports", status="pending").count()
    url = reverse("admin:conductor_django_execution_bulk", args=["cancel"]) + "?queue=imports"
    started = time.perf_counter()
    page = client.get(url)
    confirm_ms = (time.perf_counter() - started) * 1000
    assert page.status_code == 200, page.status_code
    data = {"selection": page.context["selection"], "count": page.context["legal_count"],
            "reason": "bench: bad feed"}
    started = time.perf_counter()
    reply = client.post(url.split("?")[0], data)
    post_ms = (time.perf_counter() - started) * 1000
    assert reply.status_code == 302, reply.status_code
    task_row = Execution.objects.get(task_name=bulk.BULK_TASK)

    log = Path(os.environ.get("TMPDIR", "/tmp")) / "conductor-bulk-bench-worker.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "django", "conductor_worker", "--queue", "default"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    print(f"# Bulk cancel of {matching} matching executions, PostgreSQL {version}\n")
    print(f"confirmation page {confirm_ms:.0f} ms, POST (hands over to execution "
          f"{task_row.pk}) {post_ms:.0f} ms\n")
    began = time.perf_counter()
    try:
        last = None
        while True:
            task_row.refresh_from_db()
            if task_row.progress != last and task_row.progress:
                last = task_row.progress
                print(f"{time.perf_counter() - began:7.1f} s  {last['done']}/{last['total']}"
                      f"  {last.get('message', '')}")
            if task_row.status in Execution.FINAL:
                break
            if time.perf_counter() - began > 3600:
                raise SystemExit("the bulk task did not finish within an hour")
            time.sleep(1)
        total = time.perf_counter() - began
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
    assert task_row.status == "completed", (task_row.status, task_row.last_error)
    left = Execution.objects.filter(queue="imports").exclude(status="failed").count()
    untouched = Execution.objects.filter(queue="parked", status="pending").count()
    ran = (task_row.finished_at - task_row.started_at).total_seconds()
    print(f"\nbackground task: {ran:.1f} s from its start to its end for {matching} "
          f"executions ({matching / ran:.0f}/s, chunks of {bulk.TASK_CHUNK}); "
          f"{total:.1f} s from the POST with the worker's start-up; result {task_row.result}; "
          f"not cancelled: {left}; other queue untouched: {untouched}/{args.others}")
    print(f"worker log: {log}")


if __name__ == "__main__":
    main()

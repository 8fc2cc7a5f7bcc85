#!/usr/bin/env python
"""The admin's "Cancel all matching" on a large selection, end to end.

Makes N pending executions (``invoke_many``, run in an hour, so that nothing starts
them), then drives the admin as an operator would, with Django's test client: the
confirmation page for "status = pending" (it counts the matches), its POST (which
hands the work to the background task ``conductor_django.bulk`` and redirects to that
execution's page), and one ``conductor_worker`` that runs the task. Measured: the two
requests, the time from the POST to the task's end, the rate, and the progress the
execution page shows along the way (sampled). Checked: every execution ended failed,
flagged ``cancel_requested``, with the operator's reason.

Usage: ``python bench/bulk_cancel.py --db postgres --n 100000`` (also ``mysql``,
``sqlite``). Run it alone on the machine: the numbers are only comparable in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]
os.environ["BENCH_ADMIN"] = "1"  # benchproject.settings: with the admin and its urls

import run  # noqa: E402  (bench/run.py: database set-up, worker start and stop)


def make_pending(n: int) -> float:
    from datetime import timedelta

    from django.utils import timezone

    import conductor_django as conductor

    later = timezone.now() + timedelta(hours=1)
    began = time.perf_counter()
    for start in range(0, n, 5000):
        conductor.invoke_many("bench.noop", [{"payload": i, "run_at": later}
                                       for i in range(start, min(n, start + 5000))])
    return time.perf_counter() - began


def operator_client():
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.test.utils import setup_test_environment

    setup_test_environment()  # the responses carry their template context

    user, _ = get_user_model().objects.get_or_create(
        username="bench-operator", defaults={"is_staff": True, "is_superuser": True})
    client = Client()
    client.force_login(user)
    return client


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=["postgres", "mysql", "sqlite"], default="postgres")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()
    run.setup_django(args.db)
    run.purge()

    from conductor_django.models import Execution

    made = make_pending(args.n)
    client = operator_client()
    url = "/admin/conductor_django/execution/all-matching/cancel/confirm/?status__exact=pending"
    began = time.perf_counter()
    page = client.get(url)
    confirm_s = time.perf_counter() - began
    assert page.status_code == 200, page.status_code
    html = page.content.decode()
    selection = page.context["selection"]
    count = page.context["legal_count"]
    assert count == args.n, (count, re.findall(r"\d[\d,]* execution", html)[:3])
    began = time.perf_counter()
    reply = client.post(url, {"selection": selection, "count": count,
                              "reason": "bench: all pending cancelled"})
    post_s = time.perf_counter() - began
    assert reply.status_code == 302, reply.status_code
    task_id = reply["Location"].rstrip("/").split("/")[-2]
    handed = time.perf_counter()
    worker = run.start_worker()
    samples: list[tuple[float, int]] = []
    try:
        while True:
            row = Execution.objects.values("status", "progress").get(pk=task_id)
            done = (row["progress"] or {}).get("done", 0)
            if not samples or samples[-1][1] != done:
                samples.append((round(time.perf_counter() - handed, 2), done))
            if row["status"] in ("completed", "failed", "cancelled"):
                break
            if time.perf_counter() - handed > 3600:
                raise SystemExit("bench: the bulk task did not end within an hour")
            time.sleep(0.25)
    finally:
        run.stop(worker)
    total_s = time.perf_counter() - handed
    task = Execution.objects.get(pk=task_id)
    cancelled = Execution.objects.exclude(pk=task_id).filter(
        status="failed", cancel_requested=True,
        last_error__contains="bench: all pending cancelled").count()
    result = {
        "db": args.db, "n": args.n, "invoke_many_s": round(made, 2),
        "confirmation_page_s": round(confirm_s, 3), "post_s": round(post_s, 3),
        "background_s": round(total_s, 2), "per_second": round(args.n / total_s),
        "task_status": task.status, "task_result": task.result,
        "cancelled_with_reason": cancelled, "progress_samples": len(samples),
        "progress_first": samples[:3], "progress_last": samples[-3:],
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    if task.status != "completed" or cancelled != args.n:
        raise SystemExit(f"bench: {cancelled} of {args.n} cancelled; the task {task.status}")


if __name__ == "__main__":
    main()

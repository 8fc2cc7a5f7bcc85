"""Costs of issue-7 features: stored log lines, model triggers, cleanup throughput.

    CONDUCTOR_TEST_DB=sqlite|postgres python bench/events_logs_retention.py [N]

Creates a throw-away test database (like the test suite), prints one line per number.
"""

import logging
import os
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
os.environ.setdefault("CONDUCTOR_PG_TEST_NAME", "bench_conductor_issue7")

import django  # noqa: E402

django.setup()
logging.getLogger().addHandler(logging.NullHandler())  # the task's warnings: not on stderr

from django.db import connection, transaction  # noqa: E402
from django.test.utils import override_settings  # noqa: E402
from django.utils import timezone  # noqa: E402

import conductor_django as conductor  # noqa: E402
from conductor_django.models import Execution, ExecutionLog, Step  # noqa: E402
from conductor_django.retention import cleanup  # noqa: E402
from conductor_django.testing import drain  # noqa: E402
from tests.testapp.models import Article, Mark  # noqa: E402


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_logged(n, log_lines):
    base = dict(django.conf.settings.CONDUCTOR)
    with override_settings(CONDUCTOR={**base, "LOG_LINES": log_lines}):
        conductor.invoke_many("log-lines", [{"payload": {"tag": "b", "n": 3}}] * n)
        return timed(drain) / n * 1e6


def saves(model, n, field):
    objs = [model.objects.create(**({"title": "t"} if model is Article else {"key": "k"}))
            for _ in range(n)]

    def go():
        for i, obj in enumerate(objs):
            with transaction.atomic():
                setattr(obj, field, f"v{i}")
                obj.save()

    return timed(go) / n * 1e6


def fill_old(n):
    now = timezone.now()
    rows = [Execution(task_name="echo", status="completed", finished_at=now - timedelta(days=2))
            for _ in range(n)]
    Execution.objects.bulk_create(rows, batch_size=1000)
    Step.objects.bulk_create([Step(execution=r, name=f"s{k}", result=k)
                              for r in rows for k in range(2)], batch_size=1000)
    ExecutionLog.objects.bulk_create([ExecutionLog(execution=r, attempt=1, level=20, logger="x",
                                                   message="line") for r in rows
                                      for _ in range(3)], batch_size=1000)


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    name = connection.creation.create_test_db(verbosity=0, keepdb=False)
    try:
        print(f"database: {connection.vendor} ({name}), n={n}")
        runs = {100: [], 0: []}
        for _ in range(3):  # alternate: the machine is shared, take the best of three
            for lines in (0, 100):
                runs[lines].append(run_logged(n, lines))
        with_logs, without = min(runs[100]), min(runs[0])
        print(f"drain, task logging 3 lines: {with_logs:.0f} us/execution stored, "
              f"{without:.0f} us with LOG_LINES=0 (+{with_logs - without:.0f} us)")
        fires = saves(Article, n, "title")
        quiet = saves(Article, n, "body")
        plain = saves(Mark, n, "key")
        print(f"save() in a transaction: {fires:.0f} us with an update trigger that fires, "
              f"{quiet:.0f} us when it does not (unlisted field), {plain:.0f} us without "
              "triggers")
        Execution.objects.all().delete()
        fill_old(10 * n)
        base = dict(django.conf.settings.CONDUCTOR)
        with override_settings(CONDUCTOR={**base, "RETENTION": {"completed": 86400}}):
            took = timed(lambda: cleanup(batch_size=1000))
        assert not Execution.objects.exists()
        print(f"cleanup: {10 * n} executions (+2 steps, 3 log lines each) in {took:.2f} s, "
              f"{10 * n / took:.0f} executions/s, batches of 1000")
    finally:
        connection.creation.destroy_test_db(name, verbosity=0)


if __name__ == "__main__":
    main()

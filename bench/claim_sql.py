"""The SQL every claim variant runs, to show that a change of the claim keeps it.

    CONDUCTOR_TEST_DB=postgres .venv/bin/python bench/claim_sql.py before.json
    ... change the claim ...
    CONDUCTOR_TEST_DB=postgres .venv/bin/python bench/claim_sql.py after.json
    python bench/claim_sql.py --compare before.json after.json

On a fresh test database (``tests/settings.py``: ``CONDUCTOR_TEST_DB`` and its test
database name), the same rows are claimed by every variant of ``store.claims`` -
plain (with queues, exclusions), limited, keyed, keyed and limited, per-key and
task-wide rate limits, batches with and without ``fill`` - once in autocommit and once
inside a transaction, each twice in a row (the second sees the first's claims and
turns). The statements each ran (Django's query log, with their parameters inlined;
PostgreSQL's prepared statements are logged there too) and the ids each claimed are
written as JSON. ``--compare`` says whether two such files match, savepoint names
(which carry a thread id) aside. Same statements, same count: same round trips.
"""

from __future__ import annotations

import json
import os
import re
import sys
import uuid
from datetime import UTC, datetime, timedelta

#: The fixed moment and worker of every claim, so that two runs log the same parameters.
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
WORKER = uuid.UUID(int=7)


def compare(first: str, second: str) -> int:
    def load(path: str) -> dict:
        with open(path) as f:
            return json.loads(re.sub(r"s\d+_x(\d+)", r"s_x\1", f.read()))

    a, b = load(first), load(second)
    differ = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    statements = sum(len(v["queries"]) for v in a.values())
    print(f"{len(a)} claims, {statements} statements:",
          "the same" if not differ else f"differ in {differ}")
    return 1 if differ else 0


def capture(out: str) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    from django.db import connections, transaction
    from django.test.utils import setup_test_environment

    from conductor_django.definitions.registry import KeyRule
    from conductor_django.models import Execution
    try:
        from conductor_django.store import claims
    except ImportError:  # before store/claims/ (one module per database): the same API
        from conductor_django.store import claim as claims

    connection = connections["default"]
    setup_test_environment()
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    table = Execution._meta.db_table

    def seed() -> None:
        Execution.objects.all().delete()
        rows, n = [], 0
        for name, keys in [("plain", [None]), ("lim", [None]), ("keyed", ["A", "B", "C", None]),
                           ("rate", ["x", "y"]), ("batch", [None])]:
            for key in keys:
                for i in range(4):
                    n += 1
                    rows.append(Execution(
                        id=uuid.UUID(int=n), task_name=name, key=key,
                        queue="default" if i % 2 else "q2", priority=i % 3,
                        run_at=NOW - timedelta(seconds=100 - n),
                        created_at=NOW - timedelta(seconds=200)))
        Execution.objects.bulk_create(rows)

    ex = [str(uuid.UUID(int=2)), str(uuid.UUID(int=3))]
    since = NOW - timedelta(seconds=60)
    keyed = {"keyed": KeyRule(concurrency=5, key_concurrency=2)}
    per_key = {"rate": KeyRule(key_starts=2, since=since)}
    task_wide = {"rate": KeyRule(task_starts=3, concurrency=4, since=since)}
    c = connection
    variants = {
        "plain": lambda: claims.claim(c, table, WORKER, None, 5, NOW),
        "plain_queue": lambda: claims.claim(c, table, WORKER, ["default"], 5, NOW, ["batch"]),
        "plain_queues_exclude": lambda: claims.claim(c, table, WORKER, ["default", "q2"], 5,
                                                     NOW, ["batch"], ex),
        "limited": lambda: claims.claim_limited(c, table, WORKER, None, 6, NOW, ["batch"],
                                                {"lim": 2}),
        "limited_exclude_queue": lambda: claims.claim_limited(
            c, table, WORKER, ["default"], 6, NOW, ["batch"], {"lim": 2}, ex),
        "keyed": lambda: claims.claim_limited(c, table, WORKER, None, 6, NOW, ["batch"], {},
                                              (), keyed),
        "keyed_and_limited": lambda: claims.claim_limited(
            c, table, WORKER, None, 8, NOW, ["batch"], {"lim": 1}, ex, keyed),
        "rate_key": lambda: claims.claim_limited(c, table, WORKER, None, 6, NOW, ["batch"],
                                                 {}, (), per_key),
        "rate_task": lambda: claims.claim_limited(c, table, WORKER, ["q2"], 6, NOW, ["batch"],
                                                  {}, (), task_wide),
        "batch": lambda: claims.claim_batch(c, table, WORKER, None, "batch", 3, 10.0, NOW,
                                            False),
        "batch_fill": lambda: claims.claim_batch(c, table, WORKER, None, "batch", 3, 10.0,
                                                 NOW, True, ex),
        "batch_fill_queue": lambda: claims.claim_batch(c, table, WORKER, ["q2"], "batch", 30,
                                                       10.0, NOW, True),
    }
    result = {}
    for atomic in (False, True):
        for name, run in variants.items():
            seed()
            for repeat in range(2):
                connection.queries_log.clear()
                connection.force_debug_cursor = True
                try:
                    if atomic:
                        with transaction.atomic():
                            rows = run()
                    else:
                        rows = run()
                finally:
                    connection.force_debug_cursor = False
                result[f"{name}{'_atomic' if atomic else ''}#{repeat}"] = {
                    "queries": [q["sql"] for q in connection.queries_log],
                    "rows": sorted(str(r[0]) for r in rows),
                }
    connection.creation.destroy_test_db(old_name, verbosity=0)
    with open(out, "w") as f:
        json.dump(result, f, indent=1, sort_keys=True)
    print(f"{out}: {len(result)} claims on {connection.vendor}, "
          f"{sum(len(v['queries']) for v in result.values())} statements")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--compare"] and len(sys.argv) == 4:
        sys.exit(compare(sys.argv[2], sys.argv[3]))
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    capture(sys.argv[1])

#!/usr/bin/env python
"""Many worker processes on one PostgreSQL: 50 ``conductor_worker`` processes of small
concurrency and 10,000 executions invoked one by one (each ``invoke`` NOTIFYs every
idle worker), on a private server (tests/private_postgres.py).

It reports:

* claims per insert: the claim statements the workers ran (``pg_stat_statements``),
  per execution invoked, and how many of them found nothing (a thundering herd is
  every worker claiming on every NOTIFY);
* executions started more than once (each start appends a line to a file, outside
  any transaction) and executions not completed;
* the most connections the server had open at once (sampled every 0.2 s), against
  the budget ``workers x (concurrency + 4)``.

Usage (heavy at full size; do not run beside tests on a shared machine):

    python bench/many_workers.py --workers 50 --concurrency 2 --n 10000 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]

DBNAME = "conductor_bench"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--workers", type=int, default=50)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--invokers", type=int, default=4, help="threads invoking one by one")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    from tests.private_postgres import PrivatePostgres

    budget = a.workers * (a.concurrency + 4)
    pg = PrivatePostgres(max_connections=budget + 50,
                         settings="-c shared_preload_libraries=pg_stat_statements")
    workers: list[subprocess.Popen] = []
    starts = Path(tempfile.mkdtemp(prefix="conductor-many-")) / "starts.log"
    try:
        pg.start()
        os.environ.update(BENCH_DB="postgres", BENCH_PG_HOST="127.0.0.1",
                          BENCH_PG_PORT=str(pg.port), BENCH_PG_NAME=DBNAME)
        import run as bench  # bench/run.py

        bench.setup_django("postgres")
        pg.sql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements", DBNAME)
        bench.purge()
        env = {**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{ROOT}",
               "BENCH_CONCURRENCY": str(a.concurrency)}
        for _ in range(a.workers):
            workers.append(subprocess.Popen(
                [sys.executable, "-m", "django", "conductor_worker", "--concurrency",
                 str(a.concurrency)], cwd=HERE, env=env, start_new_session=True,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        from conductor_django.models import Worker

        bench.wait_until(lambda: Worker.objects.count() >= a.workers, 300, "the workers")
        time.sleep(2.0)  # their listeners are up
        pg.sql("SELECT pg_stat_statements_reset()", DBNAME)
        peak = [0]
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.is_set():
                count = pg.sql("SELECT count(*) FROM pg_stat_activity WHERE datname ="
                               f" '{DBNAME}'")[0][0]
                peak[0] = max(peak[0], count)
                sampling.wait(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()

        def invoke(share: int) -> None:
            from django.db import connection

            import conductor_django as conductor

            for _ in range(share):
                conductor.invoke("bench.record", {"file": str(starts)})
            connection.close()

        began = time.monotonic()
        shares = [a.n // a.invokers + (1 if i < a.n % a.invokers else 0)
                  for i in range(a.invokers)]
        invokers = [threading.Thread(target=invoke, args=(s,)) for s in shares]
        for t in invokers:
            t.start()
        for t in invokers:
            t.join()
        bench.wait_until(lambda: not bench.unfinished(), 600, "every execution to finish")
        seconds = time.monotonic() - began
        sampling.set()
        sampler.join()
        claims = pg.sql(
            "SELECT coalesce(sum(calls), 0), coalesce(sum(rows), 0) FROM pg_stat_statements"
            # the claim (store/claim.py): prepared, or with its constants normalized
            " WHERE query LIKE 'UPDATE conductor_django_execution SET status = %,"
            " locked_by = $%, locked_at = $%'", DBNAME)[0]
        top = pg.sql("SELECT calls, rows, toplevel, query FROM pg_stat_statements WHERE query"
                     " LIKE '%conductor_django_execution%' ORDER BY calls DESC LIMIT 8", DBNAME)
        lines = starts.read_text().split("\n")[:-1] if starts.exists() else []
        per_execution = Counter(line.split()[0] for line in lines)
        from conductor_django.models import Execution

        completed = Execution.objects.filter(task_name="bench.record",
                                             status="completed").count()
        out = {
            "workers": a.workers, "concurrency": a.concurrency, "n": a.n,
            "seconds": seconds, "per_s": a.n / seconds,
            "claim_statements": int(claims[0]), "rows_claimed": int(claims[1]),
            "claims_per_insert": int(claims[0]) / a.n,
            "started_twice": sum(1 for k in per_execution.values() if k > 1),
            "never_started": a.n - len(per_execution), "not_completed": a.n - completed,
            "peak_connections": peak[0], "connection_budget": budget,
            "top_statements": [(calls, rows, toplevel, " ".join(q.split())[:120])
                               for calls, rows, toplevel, q in top],
        }
        print(json.dumps(out, indent=2))
        if a.json:
            a.json.write_text(json.dumps(out, indent=2))
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            try:
                w.wait(timeout=30)
            except subprocess.TimeoutExpired:
                w.kill()
        from django.db import connections

        connections.close_all()
        pg.destroy()


if __name__ == "__main__":
    main()

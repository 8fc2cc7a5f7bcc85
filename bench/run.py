#!/usr/bin/env python
"""conductor_django's own benchmark: ``make bench`` (PostgreSQL, MariaDB/MySQL, SQLite).

Workloads (one ``conductor_worker`` process, ``--concurrency 10``):

* enqueue N no-op executions one by one (``invoke``) and in bulk (``invoke_many``);
* drain N queued no-op executions, and N with three memoized steps each: from the
  first start to the last finish, read from the rows' own timestamps;
* start latency: 200 executions invoked 20 ms apart into an idle worker, from just
  before ``invoke()`` to the handler's first line (the handler records the time), as
  the peers' harness measures it;
* running-cancel latency: from just before ``cancel()`` to the handler seeing
  ``ctx.signal.aborted`` (the handler records the time);
* optionally the drain with ``--history`` finished executions already in the table,
  and the worker's peak RSS (``--memory N``) over an N-execution drain.

Usage: ``python bench/run.py --db postgres --n 5000 [--history 1000000] [--memory 100000]``

``BENCH_CONCURRENCY`` sets the worker's ``--concurrency`` (10 by default).

Each run is saved as ``bench/results/<db>-<UTC time>.json`` and compared with the
previous saved run of the same database and N: a row more than 10 % worse is flagged
``REGRESSED`` (``bench/history.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def setup_django(db: str) -> None:
    os.environ["BENCH_DB"] = db
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchproject.settings")
    sys.path[:0] = [str(HERE), str(ROOT)]
    if db == "postgres":
        ensure_pg_database(os.environ.get("BENCH_PG_NAME", "conductor_bench"))
    elif db == "mysql":
        ensure_mysql_database(os.environ.get("BENCH_MYSQL_NAME", "conductor_bench"))
    else:
        path = os.environ.setdefault("BENCH_SQLITE_PATH", "/tmp/conductor-bench.sqlite3")
        for suffix in ("", "-wal", "-shm"):
            Path(path + suffix).unlink(missing_ok=True)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def ensure_pg_database(name: str) -> None:
    import psycopg

    with psycopg.connect(host=os.environ.get("BENCH_PG_HOST", "127.0.0.1"),
                         port=os.environ.get("BENCH_PG_PORT", "5432"),
                         user=os.environ.get("BENCH_PG_USER", "postgres"),
                         dbname="postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def ensure_mysql_database(name: str) -> None:
    import MySQLdb

    conn = MySQLdb.connect(host=os.environ.get("BENCH_MYSQL_HOST", "127.0.0.1"),
                           port=int(os.environ.get("BENCH_MYSQL_PORT", "3306")),
                           user=os.environ.get("BENCH_MYSQL_USER", "root"),
                           password=os.environ.get("BENCH_MYSQL_PASSWORD", ""))
    try:
        conn.cursor().execute(f"CREATE DATABASE IF NOT EXISTS `{name}`"
                              " CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    finally:
        conn.close()


def purge() -> None:
    from django.db import connection

    tables = set(connection.introspection.table_names())
    with connection.cursor() as cur:
        if "conductor_django_attempt" in tables:  # the attempt history (since 0012)
            cur.execute("DELETE FROM conductor_django_attempt")
        cur.execute("DELETE FROM conductor_django_step")
        cur.execute("DELETE FROM conductor_django_execution")
        cur.execute("DELETE FROM conductor_django_worker")
    if connection.vendor == "postgresql":
        with connection.cursor() as cur:
            cur.execute("VACUUM ANALYZE conductor_django_execution")
    elif connection.vendor == "mysql":
        with connection.cursor() as cur:
            cur.execute("ANALYZE TABLE conductor_django_execution")
            cur.fetchall()


def clear_work() -> None:
    """Delete the benchmarks' own executions, keeping the history (``bench.old``)."""
    from conductor_django.models import Execution

    Execution.objects.exclude(task_name="bench.old").delete()


def start_worker(*extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{ROOT}"}
    return subprocess.Popen(
        [sys.executable, "-m", "django", "conductor_worker",
         "--concurrency", os.environ.get("BENCH_CONCURRENCY", "10"), *extra],
        cwd=HERE, env=env, start_new_session=True,
    )


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out waiting for {what}")
        time.sleep(0.01)


def unfinished() -> int:
    from conductor_django.models import Execution

    return Execution.objects.unfinished().count()


def enqueue(n: int, fresh: bool = True) -> dict:
    """``fresh``: on an emptied table (else beside what is there; see bench/scale.py)."""
    from django.db import connection

    import conductor_django as conductor

    clear = purge if fresh else clear_work
    clear()
    connection.ensure_connection()
    t0 = time.perf_counter()
    for i in range(n):
        conductor.invoke("bench.noop", {"i": i})
    single = time.perf_counter() - t0
    clear()
    t0 = time.perf_counter()
    conductor.invoke_many("bench.noop", [{"payload": {"i": i}} for i in range(n)])
    bulk = time.perf_counter() - t0
    return {"enqueue_single_per_s": n / single, "enqueue_bulk_per_s": n / bulk}


def drain(task_name: str, n: int, history: int = 0, sample_rss: bool = False,
          fresh: bool = True) -> dict:
    from django.db.models import Max, Min

    import conductor_django as conductor
    from conductor_django.models import Execution

    purge() if fresh else clear_work()
    if history:
        add_history(history)
    for start in range(0, n, 10000):
        conductor.invoke_many(task_name, [{"payload": {"i": i}}
                                          for i in range(start, min(n, start + 10000))])
    proc = start_worker()
    peak = rss = []
    try:
        deadline = time.monotonic() + max(120, n / 100)
        while unfinished():
            if time.monotonic() > deadline:
                raise SystemExit(f"bench: drain of {task_name} did not finish")
            if sample_rss:
                rss.append(read_rss(proc.pid))
            time.sleep(0.05 if not sample_rss else 0.5)
        if sample_rss:
            peak = read_status(proc.pid, "VmHWM")
    finally:
        stop(proc)
    rows = Execution.objects.filter(task_name=task_name)
    span = rows.aggregate(a=Min("started_at"), b=Max("finished_at"))
    seconds = (span["b"] - span["a"]).total_seconds()
    done = rows.filter(status="completed").count()
    if done != n:
        raise SystemExit(f"bench: only {done} of {n} {task_name} completed")
    out = {"seconds": seconds, "per_s": n / seconds}
    if sample_rss:
        out.update(peak_rss_mb=peak / 1024, rss_samples_mb=[r / 1024 for r in rss if r])
    return out


def add_history(count: int) -> None:
    """Insert ``count`` finished executions straight in SQL (fast)."""
    from django.db import connection

    with connection.cursor() as cur:
        if connection.vendor == "postgresql":
            cur.execute(
                "INSERT INTO conductor_django_execution (id, task_name, queue, status, payload,"
                " result, last_error, cancelled, attempts, max_attempts, priority, run_at,"
                " created_at, started_at, finished_at, event_name, resume)"
                " SELECT gen_random_uuid(), 'bench.old', 'default', 'completed', '{}'::jsonb,"
                " NULL, '', false, 1, 3, 0, now() - interval '1 day', now() - interval '1 day',"
                " now() - interval '1 day', now() - interval '1 day', 'conductor.invoke', false"
                " FROM generate_series(1, %s)", [count])
            cur.execute("VACUUM ANALYZE conductor_django_execution")
        elif connection.vendor == "mysql":
            depth = ("max_recursive_iterations" if connection.mysql_is_mariadb
                     else "cte_max_recursion_depth")
            cur.execute(f"SET SESSION {depth} = %s", [count + 1])
            cur.execute(
                "INSERT INTO conductor_django_execution (id, task_name, queue, status, payload,"
                " last_error, cancelled, attempts, max_attempts, priority, run_at, created_at,"
                " started_at, finished_at, event_name, resume)"
                " WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %s)"
                " SELECT REPLACE(UUID(), '-', ''), 'bench.old', 'default', 'completed', '{}',"
                " '', 0, 1, 3, 0, NOW(6) - INTERVAL 1 DAY, NOW(6) - INTERVAL 1 DAY,"
                " NOW(6) - INTERVAL 1 DAY, NOW(6) - INTERVAL 1 DAY, 'conductor.invoke', 0"
                " FROM n", [count])
            cur.execute("ANALYZE TABLE conductor_django_execution")
            cur.fetchall()
        else:
            cur.execute(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %s)"
                " INSERT INTO conductor_django_execution (id, task_name, queue, status, payload,"
                " last_error, cancelled, attempts, max_attempts, priority, run_at, created_at,"
                " started_at, finished_at, event_name, resume)"
                " SELECT lower(hex(randomblob(16))), 'bench.old', 'default', 'completed', '{}',"
                " '', 0, 1, 3, 0, datetime('now', '-1 day'), datetime('now', '-1 day'),"
                " datetime('now', '-1 day'), datetime('now', '-1 day'), 'conductor.invoke', 0"
                " FROM n", [count])


def read_status(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def read_rss(pid: int) -> int:
    return read_status(pid, "VmRSS")


def latency(count: int = 200, gap: float = 0.02, fresh: bool = True) -> dict:
    import conductor_django as conductor
    from conductor_django.models import Execution

    purge() if fresh else clear_work()
    proc = start_worker()
    try:
        time.sleep(1.0)  # idle worker
        ids = []
        for _ in range(count):
            ids.append(conductor.invoke("bench.lat", {"t": time.time()}))
            time.sleep(gap)
        wait_until(lambda: not unfinished(), 60, "latency executions")
    finally:
        stop(proc)
    ms = sorted(r.result * 1000 for r in Execution.objects.filter(pk__in=ids))
    return {"p50_ms": statistics.median(ms), "p95_ms": ms[int(len(ms) * 0.95) - 1]}


def cancel_latency(samples: int = 20) -> dict:
    import conductor_django as conductor
    from conductor_django.models import Execution

    purge()
    proc = start_worker()
    out = []
    try:
        for _ in range(samples):
            eid = conductor.invoke("bench.loop")
            wait_until(lambda e=eid: Execution.objects.filter(pk=e, status="running").exists(),
                       30, "loop start")
            time.sleep(0.05)
            t = time.time()
            conductor.cancel(eid)
            wait_until(lambda e=eid: Execution.objects.get(pk=e).status == "cancelled", 30,
                       "cancelled")
            noticed = Execution.objects.get(pk=eid).result["noticed"]
            out.append((noticed - t) * 1000)
    finally:
        stop(proc)
    return {"p50_ms": statistics.median(out), "samples": len(out)}


#: The workloads ``--only`` can pick (all by default).
WORKLOADS = ("enqueue", "drain", "steps", "latency", "cancel")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--db", choices=["postgres", "mysql", "sqlite"], default="postgres")
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--history", type=int, default=0,
                    help="also drain with this many finished executions in the table")
    ap.add_argument("--memory", type=int, default=0,
                    help="also drain this many executions sampling the worker's RSS")
    ap.add_argument("--json", type=Path, help="also write the raw numbers here")
    ap.add_argument("--results-dir", type=Path, default=HERE / "results",
                    help="where each run is saved as JSON and compared with the previous "
                         "run of the same database and N (default bench/results)")
    ap.add_argument("--no-save", action="store_true",
                    help="neither save this run nor compare it")
    ap.add_argument("--only", default=",".join(WORKLOADS),
                    help=f"comma-separated subset of {','.join(WORKLOADS)}")
    a = ap.parse_args()
    only = [w.strip() for w in a.only.split(",") if w.strip()]
    unknown = sorted(set(only) - set(WORKLOADS))
    if unknown:
        ap.error(f"unknown workload(s) {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}")
    setup_django(a.db)
    res: dict = {"db": a.db, "n": a.n, "python": platform.python_version(),
                 "concurrency": int(os.environ.get("BENCH_CONCURRENCY", "10")),
                 "machine": {"cpus": os.cpu_count(), "loadavg_before": os.getloadavg()}}
    if "enqueue" in only:
        res["enqueue"] = enqueue(a.n)
    if "drain" in only:
        res["drain_noop"] = drain("bench.noop", a.n)
    if "steps" in only:
        res["drain_steps3"] = drain("bench.steps3", a.n)
    if "latency" in only:
        res["latency"] = latency()
    if "cancel" in only:
        res["cancel"] = cancel_latency()
    if a.history:
        res["drain_history"] = drain("bench.noop", a.n, history=a.history)
        res["history"] = a.history
    if a.memory:
        res["memory"] = drain("bench.noop", a.memory, sample_rss=True)
        res["memory_n"] = a.memory
    purge()
    res["machine"]["loadavg_after"] = os.getloadavg()
    print_table(res)
    if a.json:
        a.json.write_text(json.dumps(res, indent=2))
    if not a.no_save:
        report(res, a.results_dir)


def report(res: dict, directory: Path) -> None:
    """Save this run and print its change against the previous one (``history.py``)."""
    import history

    table = rows(res)
    saved = history.save(res, table, directory)
    before = history.previous(directory, res["db"], res["n"], exclude=saved)
    print(f"\nsaved {saved.relative_to(ROOT) if saved.is_relative_to(ROOT) else saved}")
    if before is None:
        print("no previous run of this database and N to compare with")
        return
    lines, regressed = history.compare(table, json.loads(before.read_text())["rows"])
    print(f"\nchange against {before.name}:\n")
    print("\n".join(lines))
    if regressed:
        print(f"\nREGRESSED by more than {history.THRESHOLD:.0%}: {', '.join(regressed)}")


def rows(r: dict) -> list[dict]:
    """The table's rows: ``key`` (stable, for comparing runs), ``label``, ``value``,
    ``unit``, whether higher is better, and the text shown."""
    out: list[dict] = []

    def add(key: str, label: str, value: float, unit: str, higher: bool, text: str) -> None:
        out.append({"key": key, "label": label, "value": value, "unit": unit,
                    "higher_is_better": higher, "text": text})

    if "enqueue" in r:
        e = r["enqueue"]
        add("enqueue_single", "enqueue one-by-one (invoke)", e["enqueue_single_per_s"], "/s",
            True, f"{e['enqueue_single_per_s']:,.0f}/s")
        add("enqueue_bulk", "enqueue bulk (invoke_many)", e["enqueue_bulk_per_s"], "/s", True,
            f"{e['enqueue_bulk_per_s']:,.0f}/s")
    d = r.get("drain_noop")
    if d:
        add("drain_noop", "drain, no-op", d["per_s"], "/s", True,
            f"{d['per_s']:,.0f}/s ({d['seconds']:.2f} s)")
    if "drain_steps3" in r:
        s = r["drain_steps3"]
        share = f", {s['per_s'] / d['per_s']:.0%} of no-op" if d else ""
        add("drain_steps3", "drain, 3 memoized steps", s["per_s"], "/s", True,
            f"{s['per_s']:,.0f}/s ({s['seconds']:.2f} s{share})")
    if "latency" in r:
        lat = r["latency"]
        add("latency_p50", "start latency p50", lat["p50_ms"], "ms", False,
            f"{lat['p50_ms']:.1f} ms")
        add("latency_p95", "start latency p95", lat["p95_ms"], "ms", False,
            f"{lat['p95_ms']:.1f} ms")
    if "cancel" in r:
        c = r["cancel"]
        add("cancel_p50", "running-cancel latency p50", c["p50_ms"], "ms", False,
            f"{c['p50_ms']:.1f} ms ({c['samples']} samples)")
    if "drain_history" in r:
        h = r["drain_history"]
        share = f", {h['per_s'] / d['per_s']:.0%} of empty" if d else ""
        add("drain_history", f"drain, no-op, {r['history']:,} finished rows in the table",
            h["per_s"], "/s", True, f"{h['per_s']:,.0f}/s{share}")
    if "memory" in r:
        m = r["memory"]
        steady = m["rss_samples_mb"][1:] or m["rss_samples_mb"]  # the first is at boot
        add("memory_peak_rss", f"worker memory over a {r['memory_n']:,}-execution drain",
            m["peak_rss_mb"], "MB", False,
            f"peak RSS {m['peak_rss_mb']:.0f} MB; sampled every 0.5 s after start: "
            f"{min(steady):.0f}-{max(steady):.0f} MB ({m['per_s']:,.0f}/s)")
    return out


def print_table(r: dict) -> None:
    load = r.get("machine", {})
    print(f"\nconductor_django on {r['db']}, N={r['n']}, one worker --concurrency "
          f"{r.get('concurrency', 10)}"
          + (f" (load average {load['loadavg_before'][0]:.1f} before, "
             f"{load['loadavg_after'][0]:.1f} after, {load['cpus']} CPUs)" if load else "")
          + "\n")
    print("| metric | value |\n|---|---|")
    for row in rows(r):
        print(f"| {row['label']} | {row['text']} |")


if __name__ == "__main__":
    main()

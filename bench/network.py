#!/usr/bin/env python
"""The benchmark with a network between the worker and PostgreSQL.

A private PostgreSQL server (tests/private_postgres.py) is reached only through
bench/latency_proxy.py, which delays every byte by half the round-trip time in each
direction; the benchmark process (the caller) and its ``conductor_worker`` both
connect through it, as they would to a database 1 or 5 ms away. (``tc qdisc ... netem``
in a network namespace would do the same in the kernel; the proxy needs neither root
nor the ``sch_netem`` module, which not every kernel has.) For each round-trip time it
measures, with bench/run.py's workloads:

* the drain of N no-op executions and of N executions of three steps (per second);
* start latency (invoke to the handler's first line; p50 and p95) and the latency of a
  running execution's cancel (p50);
* statements per execution that the worker sent during each drain, from
  ``pg_stat_statements`` (the worker connects as a role of its own, so the benchmark's
  own reads are not counted; ``BEGIN``/``COMMIT`` count as statements, the foreign key
  checks inside a statement do not): each statement is one round trip. The
  difference between the two drains, divided by three, is the cost of one step. The
  statements that make up the 3-step drain are listed too.

Usage (a shared machine gives numbers comparable within one run only):

    python bench/network.py --rtt 0,1,5 --n 2000 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]

WORKER_ROLE = "cdj_bench_worker"
DBNAME = "conductor_bench"


def start_proxy(port: int, to_port: int, rtt_ms: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, str(HERE / "latency_proxy.py"),
                             "--listen", f"127.0.0.1:{port}", "--to", f"127.0.0.1:{to_port}",
                             "--delay-ms", f"{rtt_ms / 2:g}"])
    time.sleep(0.5)
    return proc


def measured_rtt(port: int) -> float:
    """The median time of ``SELECT 1`` through the proxy, in ms: the round trip."""
    import psycopg

    times = []
    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres",
                         autocommit=True) as conn:
        for _ in range(20):
            began = time.perf_counter()
            conn.execute("SELECT 1").fetchone()
            times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


def worker_statements(pg, n: int) -> tuple[float, list[tuple[float, str]]]:
    """Statements per execution of the worker's role, and the most frequent ones."""
    rows = pg.sql("SELECT calls, query FROM pg_stat_statements s JOIN pg_roles r"
                  f" ON r.oid = s.userid WHERE r.rolname = '{WORKER_ROLE}'"
                  # foreign key checks run inside the statements, not as round trips
                  " AND s.query NOT LIKE '% FROM ONLY %FOR KEY SHARE%'"
                  " ORDER BY calls DESC", DBNAME)
    top = [(calls / n, " ".join(query.split())[:110]) for calls, query in rows[:10]]
    return sum(calls for calls, _ in rows) / n, top


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rtt", default="0,1,5", help="round-trip times in ms, comma-separated")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    from tests.private_postgres import PrivatePostgres, free_port

    pg = PrivatePostgres(max_connections=100,
                         settings="-c shared_preload_libraries=pg_stat_statements")
    proxy_port = free_port()
    proxy = None
    results = []
    try:
        pg.start()
        pg.sql(f"CREATE ROLE {WORKER_ROLE} LOGIN SUPERUSER")
        os.environ.update(BENCH_DB="postgres", BENCH_PG_HOST="127.0.0.1",
                          BENCH_PG_PORT=str(proxy_port), BENCH_PG_NAME=DBNAME,
                          BENCH_PG_USER=WORKER_ROLE)  # the worker subprocesses' role
        proxy = start_proxy(proxy_port, pg.port, 0)
        import run as bench  # bench/run.py

        bench.setup_django("postgres")
        pg.sql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements", DBNAME)
        from django.db import connection

        connection.close()
        connection.settings_dict["USER"] = "postgres"  # this process: not counted
        for rtt in [float(x) for x in a.rtt.split(",")]:
            connection.close()
            proxy.terminate()
            proxy.wait()
            proxy = start_proxy(proxy_port, pg.port, rtt)
            row: dict = {"rtt_ms": rtt, "select1_ms": measured_rtt(proxy_port), "n": a.n}
            for key, task in (("drain_noop", "bench.noop"), ("drain_steps3", "bench.steps3")):
                pg.sql("SELECT pg_stat_statements_reset()", DBNAME)
                row[key] = bench.drain(task, a.n)
                per, top = worker_statements(pg, a.n)
                row[key].update(statements_per_execution=per, top_statements=top)
            row["statements_per_step"] = (
                row["drain_steps3"]["statements_per_execution"]
                - row["drain_noop"]["statements_per_execution"]) / 3
            row["start_latency"] = bench.latency()
            row["cancel_latency"] = bench.cancel_latency()
            results.append(row)
            print(
                f"rtt {rtt:g} ms (SELECT 1: {row['select1_ms']:.2f} ms): drain "
                f"{row['drain_noop']['per_s']:.0f}/s, 3-step drain "
                f"{row['drain_steps3']['per_s']:.0f}/s, start p50 "
                f"{row['start_latency']['p50_ms']:.1f} ms p95 "
                f"{row['start_latency']['p95_ms']:.1f} ms, cancel p50 "
                f"{row['cancel_latency']['p50_ms']:.1f} ms; statements per execution "
                f"{row['drain_noop']['statements_per_execution']:.2f}, per step "
                f"{row['statements_per_step']:.2f}", flush=True)
        print("statements per execution of the 3-step drain at the last round-trip time:")
        for per, query in results[-1]["drain_steps3"]["top_statements"]:
            print(f"  {per:6.2f}  {query}")
    finally:
        from django.db import connections

        connections.close_all()
        if proxy is not None:
            proxy.terminate()
        pg.destroy()
    if a.json:
        a.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

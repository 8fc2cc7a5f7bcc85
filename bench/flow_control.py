"""What each flow control costs in throughput, on PostgreSQL.

    CONDUCTOR_BENCH_N=2000 .venv/bin/python bench/flow_control.py

For every no-op task of ``bench/tasks.py`` it queues N executions, runs two
``conductor_worker --concurrency 8`` processes until all completed and reports executions per
second from the first start to the last finish (worker start-up is not counted), and
the most executions seen running at once (sampled every few milliseconds; for a batch
task every item of a running batch counts). Then it times N invocations with and without throttle
and debounce. Uses the database ``CONDUCTOR_BENCH_DB`` (default ``conductor_bench_flow``),
created and migrated on first use. Numbers vary with the machine: compare the rows
of one run with each other.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.db.models import Max, Min  # noqa: E402

import conductor_django as conductor  # noqa: E402
from conductor_django.models import Execution, FlowSlot  # noqa: E402

N = int(os.environ.get("CONDUCTOR_BENCH_N", "2000"))
WORKERS = int(os.environ.get("CONDUCTOR_BENCH_WORKERS", "2"))


def ensure_database() -> None:
    import psycopg

    params = connection.settings_dict
    with psycopg.connect(host=params["HOST"], port=params["PORT"], user=params["USER"],
                         password=params["PASSWORD"], dbname="postgres",
                         autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                              [params["NAME"]]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{params["NAME"]}"')
    call_command("migrate", verbosity=0)


def reset() -> None:
    FlowSlot.objects.all().delete()
    Execution.objects.all().delete()


def run_workers(task_name: str) -> tuple[float, int]:
    conductor.invoke_many(task_name, [{"payload": n} for n in range(N)])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen([sys.executable, "-m", "django", "conductor_worker",
                          "--concurrency", "8", "-v", "0"], cwd=ROOT, env=env)
        for _ in range(WORKERS)
    ]
    qs = Execution.objects.filter(task_name=task_name)
    running = qs.filter(status=Execution.Status.RUNNING)
    deadline = time.monotonic() + 600
    peak = 0
    while qs.filter(status=Execution.Status.COMPLETED).count() < N:
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            raise SystemExit(f"{task_name}: not all {N} completed")
        peak = max(peak, running.count())  # sampled: the most seen running at one moment
        time.sleep(0.005)
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        if p.wait(timeout=60) != 0:
            raise SystemExit(f"worker exited {p.returncode}")
    span = qs.aggregate(first=Min("started_at"), last=Max("finished_at"))
    seconds = (span["last"] - span["first"]).total_seconds()
    return N / seconds, peak


def time_invokes(label: str, make_options) -> float:
    started = time.perf_counter()
    for n in range(N):
        conductor.invoke("bench-plain", {"n": n}, **make_options(n))
    return N / (time.perf_counter() - started)


def main() -> None:
    ensure_database()
    print(f"PostgreSQL {connection.pg_version // 10000}, N={N}, {WORKERS} workers x 8 threads")
    print(f"{'task':<34} {'executions/s':>12} {'max running':>12}")
    for name, label in [
        ("bench-plain", "plain"),
        ("bench-limit-100", "concurrency=100 (never reached)"),
        ("bench-limit-4", "concurrency=4"),
        ("bench-window", "window (open)"),
        ("bench-batch-50", "batch size=50"),
    ]:
        reset()
        rate, peak = run_workers(name)
        print(f"{label:<34} {rate:>12.0f} {peak:>12}")
    print(f"\n{'invoke':<34} {'invocations/s':>12}")
    for label, options in [
        ("plain", lambda n: {}),
        ("throttle, a new key each time", lambda n: {"throttle": 60, "dedupe_key": f"k{n}"}),
        ("throttle, one key (absorbed)", lambda n: {"throttle": 60}),
        ("debounce, one key (pushed)", lambda n: {"debounce": 60}),
    ]:
        reset()
        print(f"{label:<34} {time_invokes(label, options):>12.0f}")
    reset()


if __name__ == "__main__":
    main()

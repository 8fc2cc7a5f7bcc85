"""What each flow control costs in throughput, on PostgreSQL.

    CONDUCTOR_BENCH_N=2000 .venv/bin/python bench/flow_control.py

For every no-op task of ``bench/tasks.py`` it queues N executions, runs two
``conductor_worker --concurrency 8`` processes until all completed and reports executions per
second from the first start to the last finish (worker start-up is not counted), and
the most executions seen running at once (sampled every few milliseconds; for a batch
task every item of a running batch counts). Then it times N invocations with and without throttle
and debounce.

Keys: ``claim_rates`` claims a backlog of ``CONDUCTOR_CLAIM_N`` executions (default
10,000) in process, ``CONDUCTOR_CLAIM_BATCH`` (default 8, a worker's ``--concurrency``)
at a time, marking each batch completed between claims (not timed), and reports the
executions claimed per second of claim statements: the plain claim with nothing
limited registered (the one-statement fast path), the same with the limited and keyed
tasks registered but idle, a task with ``concurrency=100``, and a keyed task
(``key_concurrency`` that never binds, with and without a per-key rate limit) whose
backlog has no key or is spread over 1 to 1,000 keys; each as a share of the first two.
``CONDUCTOR_BENCH_PARTS`` picks the parts to run (default ``claims,workers,invokes``).

Uses the database ``CONDUCTOR_BENCH_DB`` (default ``conductor_bench_flow``), created and
migrated on first use. Numbers vary with the machine: compare the rows
of one run with each other.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
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
from conductor_django.definitions.registry import all_tasks, register, unregister  # noqa: E402
from conductor_django.models import Execution, FlowSlot  # noqa: E402

N = int(os.environ.get("CONDUCTOR_BENCH_N", "2000"))
CLAIM_N = int(os.environ.get("CONDUCTOR_CLAIM_N", "10000"))
CLAIM_BATCH = int(os.environ.get("CONDUCTOR_CLAIM_BATCH", "8"))
PARTS = os.environ.get("CONDUCTOR_BENCH_PARTS", "claims,workers,invokes").split(",")
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


def run_workers(task_name: str, keys: int = 0) -> tuple[float, int]:
    conductor.invoke_many(task_name, [{"payload": n, **({"key": f"k{n % keys}"} if keys else {})}
                                      for n in range(N)])
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


def claim_seconds(task_name: str, keys: int) -> float:
    """Seconds of claim statements to claim a backlog of ``CLAIM_N``, ``CLAIM_BATCH`` at
    a time (each batch is marked completed between claims, untimed)."""
    reset()
    conductor.invoke_many(task_name, [
        {"payload": n, **({"key": f"k{n % keys:04d}"} if keys else {})} for n in range(CLAIM_N)])
    with connection.cursor() as cursor:
        # the dead rows of earlier rounds would slow the later ones (autovacuum may be
        # off, or behind): every row starts from the same clean table
        cursor.execute(f"VACUUM ANALYZE {Execution._meta.db_table}")
    worker = uuid.uuid4()
    claimed = 0
    spent = 0.0
    while True:
        started = time.perf_counter()
        got = Execution.objects.claim(worker, None, CLAIM_BATCH, using="default")
        spent += time.perf_counter() - started
        if not got:
            break
        claimed += len(got)
        Execution.objects.filter(pk__in=[c.id for c in got]).update(
            status=Execution.Status.COMPLETED, locked_by=None)
    if claimed != CLAIM_N:
        raise SystemExit(f"{task_name}: claimed {claimed} of {CLAIM_N}")
    return spent


#: (label, task, keys, whether only bench-plain is registered)
CLAIM_ROWS = [
    ("plain, nothing limited registered", "bench-plain", 0, True),
    ("plain, limited and keyed tasks registered", "bench-plain", 0, False),
    ("concurrency=100 (never reached)", "bench-limit-100", 0, False),
    ("keyed task, executions without a key", "bench-keyed", 0, False),
    ("keyed, backlog over 1 key", "bench-keyed", 1, False),
    ("keyed, backlog over 10 keys", "bench-keyed", 10, False),
    ("keyed, backlog over 100 keys", "bench-keyed", 100, False),
    ("keyed, backlog over 1000 keys", "bench-keyed", 1000, False),
    ("keyed + per-key rate limit, 100 keys", "bench-keyed-rate", 100, False),
]


def claim_rates() -> None:
    """Every row once per round, ``CLAIM_ROUNDS`` rounds interleaved (a busy machine
    slows all rows alike); the median round of each row."""
    rounds = int(os.environ.get("CONDUCTOR_CLAIM_ROUNDS", "5"))
    print(f"\nclaims: a backlog of {CLAIM_N}, {CLAIM_BATCH} per claim, in process, "
          f"median of {rounds} interleaved rounds")
    everything = all_tasks()
    times: dict[str, list[float]] = {label: [] for label, *_ in CLAIM_ROWS}
    for _ in range(rounds):
        for label, name, keys, alone in CLAIM_ROWS:
            if alone:
                for other in everything:
                    if other != name:
                        unregister(other)
            try:
                times[label].append(claim_seconds(name, keys))
            finally:
                for t in everything.values():
                    register(t)
    rates = {label: CLAIM_N / statistics.median(spent) for label, spent in times.items()}
    base = rates[CLAIM_ROWS[0][0]]
    same = rates[CLAIM_ROWS[1][0]]
    print(f"{'claim':<46} {'executions/s':>12} {'of plain':>9} {'of same reg.':>13}")
    for label, rate in rates.items():
        print(f"{label:<46} {rate:>12.0f} {rate / base:>9.0%} {rate / same:>13.0%}")


def main() -> None:
    ensure_database()
    print(f"PostgreSQL {connection.pg_version // 10000}, N={N}, {WORKERS} workers x 8 threads")
    if "claims" in PARTS:
        claim_rates()
    if "workers" in PARTS:
        run_all_workers()
    if "invokes" in PARTS:
        run_invokes()
    reset()


def run_all_workers() -> None:
    print(f"\n{'task':<34} {'executions/s':>12} {'max running':>12}")
    for name, label, keys in [
        ("bench-plain", "plain", 0),
        ("bench-limit-100", "concurrency=100 (never reached)", 0),
        ("bench-limit-4", "concurrency=4", 0),
        ("bench-window", "window (open)", 0),
        ("bench-batch-50", "batch size=50", 0),
        ("bench-keyed", "keyed, 100 keys (never limited)", 100),
        ("bench-keyed-rate", "keyed + per-key rate, 100 keys", 100),
    ]:
        reset()
        rate, peak = run_workers(name, keys)
        print(f"{label:<34} {rate:>12.0f} {peak:>12}")


def run_invokes() -> None:
    print(f"\n{'invoke':<34} {'invocations/s':>12}")
    for label, options in [
        ("plain", lambda n: {}),
        ("throttle, a new key each time", lambda n: {"throttle": 60, "dedupe_key": f"k{n}"}),
        ("throttle, one key (absorbed)", lambda n: {"throttle": 60}),
        ("debounce, one key (pushed)", lambda n: {"debounce": 60}),
    ]:
        reset()
        print(f"{label:<34} {time_invokes(label, options):>12.0f}")


if __name__ == "__main__":
    main()

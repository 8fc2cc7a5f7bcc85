"""Chaos: several workers on one queue, their database sessions terminated during a
drain (``pg_terminate_backend``, MySQL's ``KILL CONNECTION``), and
atomic steps whose worker is killed mid-step (SPEC §9, §14.1, §14.2).

Same recording and checks as tests/test_chaos.py; scale in tests/chaos_support.py.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from conductor_django.models import Execution
from tests.chaos_support import (
    Record,
    committed_reruns,
    double_completions,
    executions,
    invoke_payloads,
    listed,
    not_completed,
    overlapping,
    poll,
    reruns_per_step,
    runs_of,
    scale,
    show,
    stale_runs,
    step_records,
    stop_all,
    summarize,
    tails,
    terminate_other_sessions,
    unfinished,
    vendor,
)
from tests.testapp.models import ChaosOrder

pytestmark = [pytest.mark.chaos, pytest.mark.django_db(transaction=True)]


# --- 4. several workers on one queue --------------------------------------------------------


def test_several_workers_share_one_queue(start_worker, tmp_path: Path) -> None:
    """Executions of several steps, shared by several workers: each step runs exactly
    once, no execution runs in two places at once, none is lost or completed twice."""
    log = tmp_path / "runs.jsonl"
    n, nworkers, steps = scale("SHARED_EXECUTIONS"), scale("SHARED_WORKERS"), 3
    invoke_payloads("chaos-steps", [{"log": str(log), "steps": steps}] * n, chunk=1000)
    began = time.monotonic()
    workers = [start_worker("--concurrency", "4", env={"CONDUCTOR_LOG_LEVEL": "WARNING"})
               for _ in range(nworkers)]
    poll(lambda: not unfinished("chaos-steps"), timeout=60 + n * 0.1, interval=0.2,
         message=f"all {n} executions to finish", workers=workers)
    seconds = time.monotonic() - began
    stop_all(workers)
    record = Record(log)
    record.refresh()

    rows = executions("chaos-steps")
    runs = runs_of(record.events)
    committed = step_records()
    twice = [f"{eid} {step}: {k} runs" for (eid, step), k in reruns_per_step(runs).items()]
    concurrent = overlapping(runs)
    lost = not_completed(rows)
    doubles = double_completions(rows)
    missing = [f"{eid} s{i}" for eid in rows for i in range(steps)
               if (eid, f"s{i}") not in committed]
    by_worker = {w.pid: sum(1 for r in runs if r.pid == w.pid) for w in workers}
    summarize("shared-queue", vendor(), (
        f"{nworkers} workers, {n} executions in {seconds:.0f} s "
        f"({n / seconds:.0f}/s; step runs per worker {sorted(by_worker.values())}), "
        f"{len(twice)} step re-runs, {len(concurrent)} concurrent runs, {len(lost)} lost, "
        f"{len(doubles)} double completions"))
    problems = (show("steps run more than once", twice) + show("concurrent runs", concurrent)
                + show("lost", lost) + show("double completions", doubles)
                + show("steps without a record", missing))
    assert not problems, problems + tails(workers)


# --- 5. the workers' sessions terminated during a drain -----------------------------------


def test_sessions_terminated_during_a_drain(start_worker, tmp_path: Path) -> None:
    """The workers' connections are terminated again and again while they drain: every
    execution finishes, no committed step runs again, nothing completes twice."""
    if vendor() == "sqlite":
        pytest.skip("SQLite is a file: there is no server session to terminate")
    log = tmp_path / "runs.jsonl"
    n, terminations, steps = scale("TERMINATE_EXECUTIONS"), scale("TERMINATES"), 4
    invoke_payloads("chaos-steps", [{"log": str(log), "steps": steps, "pause": 0.05}] * n)
    workers = [start_worker("--drain", "--concurrency", "4",
                            env={"CONDUCTOR_LOG_LEVEL": "WARNING"}) for _ in range(2)]
    record = Record(log)
    poll(lambda: record.refresh() is not None and record.count("end"), timeout=60,
         message="the first step to end")
    began = time.monotonic()
    killed_backends, done = 0, 0
    while done < terminations and unfinished("chaos-steps"):
        killed_backends += terminate_other_sessions()
        done += 1
        ends = record.count("end")
        try:  # the next termination after some progress
            poll(lambda e=ends: record.refresh() is not None and (
                record.count("end") >= e + 2 or not unfinished("chaos-steps")),
                timeout=30, message="progress after a termination")
        except AssertionError:
            break  # stuck: the checks below say where
    poll(lambda: all(w.proc.poll() is not None for w in workers), timeout=120,
         message="the draining workers to exit", workers=workers)
    record.refresh()

    rows = executions("chaos-steps")
    runs = runs_of(record.events)
    committed = step_records()
    after_commit = listed(committed_reruns(runs, committed), committed)
    concurrent = overlapping(runs)
    stale = listed(stale_runs(runs))
    lost = not_completed(rows)
    doubles = double_completions(rows)
    again = sum(k - 1 for k in reruns_per_step(runs).values())
    exits = [w.proc.returncode for w in workers]
    summarize("terminate", vendor(), (
        f"{done} terminations ({killed_backends} backends) in {time.monotonic() - began:.0f} s, "
        f"{n} executions, {len(after_commit)} committed-step re-runs, {again} step re-runs, "
        f"{len(concurrent)} concurrent runs, {len(lost)} lost, "
        f"{len(doubles)} double completions, worker exits {exits}"))
    problems = (show("re-run after commit", after_commit) + show("concurrent runs", concurrent)
                + show("ran after a newer attempt started", stale) + show("lost", lost)
                + show("double completions", doubles))
    assert not problems, problems + tails(workers)
    assert exits == [0] * len(workers), tails(workers)


# --- 6. atomic steps: the worker is killed inside one --------------------------------------------


def test_atomic_step_killed_mid_step_leaves_no_row(start_worker, tmp_path: Path) -> None:
    """``ctx.step(name, fn, atomic=True)``: fn creates an order row, then blocks; its
    worker is killed. No row is left; after recovery exactly one row per execution."""
    log = tmp_path / "runs.jsonl"
    rounds = scale("ATOMIC_ROUNDS")
    # SQLite has one writer: an open atomic step holds the write lock, one at a time.
    per_round = 1 if vendor() == "sqlite" else scale("ATOMIC_EXECUTIONS")
    env = {"CONDUCTOR_TEST_DEAD_AFTER": "2", "CONDUCTOR_LOG_LEVEL": "WARNING"}

    def start():
        return start_worker("--concurrency", str(per_round), env=env)

    worker = start()
    everyone = [worker]
    record = Record(log)
    all_eids: list[str] = []
    leaked: list[str] = []
    began = time.monotonic()
    for _ in range(rounds):
        eids = invoke_payloads("chaos-atomic", [{"log": str(log), "hold": 60}] * per_round)
        all_eids += eids

        def written(eids=eids):
            record.refresh()
            wrote = {e["eid"] for e in record.of("wrote") if e["attempt"] == 1}
            if wrote >= set(eids):
                return "written"
            errors = Execution.objects.filter(pk__in=eids).exclude(last_error="")
            return "error" if errors.exists() else None

        state = poll(written, timeout=60, message="the atomic steps to write", workers=[worker])
        failed = Execution.objects.filter(pk__in=eids).exclude(last_error="")
        assert state == "written", show("the atomic step failed", [
            f"{r['id']}: {r['status']} {r['last_error']!r}"
            for r in failed.values("id", "status", "last_error")]) + tails([worker])
        # fn wrote its row and now blocks inside the step: nothing is committed yet
        leaked += [f"{o.execution_id} (attempt {o.attempt}) visible while its step runs"
                   for o in ChaosOrder.objects.filter(execution_id__in=eids)]
        worker.kill()
        leaked += [f"{o.execution_id} (attempt {o.attempt}) left after the kill"
                   for o in ChaosOrder.objects.filter(execution_id__in=eids)]
        worker = start()  # recovers them after WORKER_DEAD_AFTER, runs attempt 2
        everyone.append(worker)
        poll(lambda e=eids: not Execution.objects.filter(
            pk__in=e, status__in=Execution.UNFINISHED).exists(), timeout=60,
            message="the killed executions to be recovered and finish", workers=[worker])
    stop_all([worker])

    rows = executions("chaos-atomic")
    lost = not_completed(rows)
    orders = {eid: list(ChaosOrder.objects.filter(execution_id=eid).values_list(
        "attempt", flat=True)) for eid in all_eids}
    not_once = [f"{eid}: order rows of attempts {a}" for eid, a in orders.items() if len(a) != 1]
    wrong_id = [f"{eid}: result {rows[eid]['result']}" for eid in all_eids
                if rows[eid]["status"] == "completed" and ChaosOrder.objects.filter(
                    pk=(rows[eid]["result"] or {}).get("order"), execution_id=eid).count() != 1]
    summarize("atomic-step", vendor(), (
        f"{rounds} kills inside atomic steps, {len(all_eids)} executions in "
        f"{time.monotonic() - began:.0f} s, {len(leaked)} rows left by a killed step, "
        f"{len(not_once)} executions without exactly one row, {len(lost)} lost"))
    problems = (show("rows of a step whose worker was killed", leaked)
                + show("not exactly one row", not_once)
                + show("step result names another row", wrong_id) + show("lost", lost))
    assert not problems, problems + tails(everyone[-2:])

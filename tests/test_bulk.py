"""Bulk operations from code (SPEC §15.3): ``Execution.objects.filter(...).cancel_all()``,
``.retry_all()`` and ``.run_again_all()`` act on every matching execution the single
verb accepts, in chunks, and return how many changed; bad input writes nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from conductor_django.models import Attempt, Execution, Step
from tests.test_admin import make


def statuses(*executions: Execution) -> list[str]:
    return [Execution.objects.get(pk=e.pk).status for e in executions]


@pytest.mark.django_db
def test_cancel_all_cancels_every_unfinished_match_by_the_single_rules():
    pending, suspended, running = make("pending"), make("suspended"), make("running")
    done, other = make("completed"), make("pending", task_name="other")
    child = make("pending", task_name="other", parent=pending)
    assert Execution.objects.filter(task_name="echo").cancel_all(reason="bulk") == 3
    assert statuses(pending, suspended, running, done, other) == [
        "failed", "failed", "running", "completed", "pending"]
    running.refresh_from_db()
    assert running.cancelled and running.last_error == "bulk"  # stops at its next step
    assert Execution.objects.get(pk=child.pk).status == "failed"  # the tree goes too
    # told apart from failures, as a single cancel's are: every one a cancel stopped
    assert [Execution.objects.get(pk=e.pk).cancel_requested
            for e in (pending, suspended, child, done, other)] == [
        True, True, True, False, False]
    # Again: nothing left that cancel would accept (the running one's cancel is accepted).
    assert Execution.objects.filter(task_name="echo").cancel_all() == 0


@pytest.mark.django_db
def test_cancel_all_walks_in_chunks_and_reports_progress():
    rows = [make("pending") for _ in range(7)]
    seen: list[tuple[int, int]] = []
    with CaptureQueriesContext(connection) as queries:
        count = Execution.objects.all().cancel_all(
            chunk=3, on_chunk=lambda c, s: seen.append((c, s)))
    assert count == 7 and seen == [(3, 3), (6, 6), (7, 7)]
    assert set(statuses(*rows)) == {"failed"}
    reads = [q["sql"] for q in queries.captured_queries
             if q["sql"].lstrip().upper().startswith("SELECT") and " LIMIT 3" in q["sql"]]
    assert len(reads) == 3  # one bounded read per chunk


@pytest.mark.django_db
def test_retry_all_retries_failed_and_cancelled_from_a_step():
    a, b = make("failed"), make("cancelled")
    c, running = make("failed"), make("running")
    for ex in (a, b):
        for name in ("s1", "s2", "s3"):
            Step.objects.create(execution=ex, name=name, result=name)
    Step.objects.create(execution=c, name="s1", result="s1")  # no s2: skipped
    assert Execution.objects.all().retry_all(from_step="s2", by="ops") == 2
    assert statuses(a, b, c, running) == ["pending", "pending", "failed", "running"]
    assert list(a.steps.values_list("name", flat=True)) == ["s1"]
    row = Attempt.objects.of(a.pk).get()
    assert (row.ended, row.from_step, row.retried_by) == ("retried", "s2", "ops")
    assert Execution.objects.all().retry_all() == 1  # c; a and b are pending now


@pytest.mark.django_db
def test_run_again_all_starts_one_new_execution_per_finished_match():
    done, failed, pending = make("completed"), make("failed"), make("pending")
    assert Execution.objects.filter(pk__in=[done.pk, failed.pk, pending.pk]).run_again_all() == 2
    assert Execution.objects.filter(status="pending").count() == 3


@pytest.mark.django_db
@pytest.mark.parametrize("call, error", [
    (lambda qs: qs.cancel_all(reason=7), ValueError),
    (lambda qs: qs.cancel_all(reason="a\x00b"), ValueError),
    (lambda qs: qs.retry_all(from_step="nope"), ValueError),
    (lambda qs: qs.retry_all(from_step=3), ValueError),
    (lambda qs: qs[:2].cancel_all(), TypeError),
    (lambda qs: qs.cancel_all(chunk=0), ValueError),
])
def test_bad_input_raises_before_anything_is_written(call, error):
    pending, failed = make("pending"), make("failed")
    Step.objects.create(execution=failed, name="s1", result=1)
    with pytest.raises(error):
        call(Execution.objects.all())
    assert statuses(pending, failed) == ["pending", "failed"]
    assert not Attempt.objects.exists()


@pytest.mark.django_db
def test_cancel_all_wakes_the_parent_waiting_on_a_cancelled_child():
    parent = make("suspended", run_at=timezone.now() + timedelta(days=1))
    child = make("pending", task_name="child", parent=parent)
    assert Execution.objects.filter(task_name="child").cancel_all() == 1
    parent.refresh_from_db()
    assert statuses(child) == ["failed"] and parent.status == "suspended"
    assert parent.run_at <= timezone.now()  # woken: it reads its child's outcome now

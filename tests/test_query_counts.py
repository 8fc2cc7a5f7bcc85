"""Round trips on the hot paths, counted on both databases: a regression fails here.

PostgreSQL's hot statements run on a raw psycopg cursor (``store/prepared.py``), which
records them in Django's query log while Django logs queries, so the counts are the
same kind on both databases.
"""

from __future__ import annotations

import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

import conductor_django as conductor
from conductor_django.models import Execution, Step
from conductor_django.runtime import Runtime
from conductor_django.runtime.context import Context
from conductor_django.state import controls

pytestmark = pytest.mark.django_db


def _count(fn) -> tuple[int, list[str]]:
    with CaptureQueriesContext(connection) as ctx:
        fn()
    return len(ctx.captured_queries), [q["sql"][:120] for q in ctx.captured_queries]


def _claim_one(wid: uuid.UUID):
    [claimed] = Execution.objects.claim(wid, ["default"], 1, "default")
    return claimed


def test_invoke_is_one_statement():
    n, sql = _count(lambda: conductor.invoke("echo", {"n": 1}))
    assert n == 1, sql
    assert sql[0].startswith("INSERT")


def test_invoke_many_is_one_statement():
    n, sql = _count(lambda: conductor.invoke_many("echo", [{"payload": i} for i in range(100)]))
    # the insert (COPY on PostgreSQL, executemany on SQLite) inside its transaction
    assert n <= 3, sql


def test_the_claim_is_one_statement_plus_the_flow_control_locks():
    conductor.invoke("echo", 1)
    wid = uuid.uuid4()
    # the operator's pauses and limits are read once every few seconds, not per claim
    controls.forget()
    n, _ = _count(lambda: controls.current(Execution, "default"))
    assert n == 1
    n, sql = _count(lambda: _claim_one(wid))
    if connection.vendor == "mysql":
        # the named try-locks (no limited task has runnable rows here, so none is taken),
        # then a savepoint around the SELECT ... FOR UPDATE SKIP LOCKED and the UPDATE
        assert n == 5, sql
    else:
        # limited tasks are registered (tests/testapp/flow_tasks.py): on PostgreSQL the
        # flow-control locks and the claim are one call of the claim function
        assert n == 1, sql


def test_a_step_is_one_insert_and_a_replay_is_free():
    eid = conductor.invoke("echo", 1)
    wid = uuid.uuid4()
    claimed = _claim_one(wid)
    runtime = Runtime(worker_id=wid)
    ctx = Context(execution_id=eid, task_name="echo", queue="default", attempt=1,
                  runtime=runtime, steps_may_exist=not claimed.fresh, lease=claimed.lease)
    n, sql = _count(lambda: ctx.step("a", lambda: {"x": 1}))
    assert n == 1, sql  # a fresh first attempt loads no steps
    assert Step.objects.filter(execution_id=eid).count() == 1
    again = Context(execution_id=eid, task_name="echo", queue="default", attempt=2,
                    runtime=runtime, steps_may_exist=True, lease=claimed.lease)
    n, sql = _count(lambda: again.step("a", lambda: {"x": 2}))
    assert n == 1, sql  # the steps load, no insert
    n, sql = _count(lambda: again.step("a", lambda: {"x": 3}))
    assert n == 0, sql


def test_completion_is_one_statement_and_two_with_a_parent():
    eid = conductor.invoke("echo", 1)
    wid = uuid.uuid4()
    claimed = _claim_one(wid)
    n, sql = _count(lambda: Execution.objects.complete(
        eid, wid, claimed.lease, {"ok": 1}, "default", may_have_parent=False))
    assert n == 1, sql
    assert Execution.objects.get(pk=eid).status == Execution.Status.COMPLETED

    eid = conductor.invoke("echo", 2)
    claimed = _claim_one(wid)
    n, sql = _count(lambda: Execution.objects.complete(eid, wid, claimed.lease, None, "default"))
    # a savepoint around waking the parent and the final write
    assert n == 4, sql
    assert Execution.objects.get(pk=eid).finished_at <= timezone.now()

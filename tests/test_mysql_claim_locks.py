"""MySQL/MariaDB: a claim locks the rows it takes, not every runnable row.

InnoDB keeps a lock on every row a ``SELECT ... FOR UPDATE`` reads. A plan that sorts
(the optimizer picks one when the table's statistics were taken while it was empty)
reads, and locks, every runnable row; a second worker's claim then skips them all under
``SKIP LOCKED`` and finds nothing (a ``--drain`` worker took that for "no work left").
The claim names its index, which gives the rows in the claim's order.
"""

from __future__ import annotations

import threading
import uuid

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

import conductor_django as conductor
from conductor_django.models import Execution
from conductor_django.store.claims import claim

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "mysql", reason="InnoDB's row locks"),
]

TABLE = Execution._meta.db_table


def _analyze_while_empty() -> None:
    """Statistics that say the table is empty: the optimizer's cue to scan and sort."""
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE TABLE {TABLE}")
        cursor.fetchall()


@pytest.mark.parametrize("queues", [None, ["default"], ["default", "other"]])
def test_the_claim_reads_its_index_in_order_without_a_sort(queues):
    _analyze_while_empty()
    conductor.invoke_many("echo", [{"payload": i} for i in range(300)])
    with CaptureQueriesContext(connection) as captured, transaction.atomic():
        rows = claim(connection, TABLE, uuid.uuid4(), queues, 10, timezone.now())
    assert len(rows) == 10
    [pick] = [q["sql"] for q in captured.captured_queries if "FOR UPDATE" in q["sql"]]
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN {pick}")  # Django's log has the parameters inlined
        plan = cursor.fetchall()
    index = "cdj_my_claim_idx" if queues == ["default"] else "cdj_my_claim_any_idx"
    assert [(row[2], row[5]) for row in plan] == [(TABLE, index)], plan
    assert "filesort" not in str(plan[0][-1]), plan


def test_two_workers_claiming_at_once_both_get_rows():
    """One claim's transaction is held open; another claim still takes other rows."""
    _analyze_while_empty()
    ids = set(conductor.invoke_many("echo", [{"payload": i} for i in range(50)]))
    holding, release = threading.Event(), threading.Event()
    first: list[tuple] = []

    def hold() -> None:
        try:
            with transaction.atomic():
                first.extend(claim(connection, TABLE, uuid.uuid4(), None, 5, timezone.now()))
                holding.set()
                release.wait(30)
        finally:
            holding.set()
            connection.close()

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert holding.wait(30)
        second = claim(connection, TABLE, uuid.uuid4(), None, 5, timezone.now())
    finally:
        release.set()
        thread.join(30)
    assert len(first) == 5 and len(second) == 5
    taken = {str(r[0]) for r in first} | {str(r[0]) for r in second}
    assert len(taken) == 10 and taken <= {str(i) for i in ids}

"""SQLite: the claim's cost does not grow with the backlog on a database nobody analysed.

A new SQLite database has no planner statistics (``sqlite_stat1`` is empty until
``ANALYZE``); its planner then chose a status index for the claim and sorted every
runnable row. The claim names its index, so the plan reads runnable rows in order and
stops at the ``LIMIT``, and the update reads the picked rows by primary key.
"""

from __future__ import annotations

import uuid

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

import conductor_django as conductor
from conductor_django.models import Execution
from conductor_django.store.claims.sqlite import claim

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's planner"),
]

TABLE = Execution._meta.db_table


def _plan(sql: str, params) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params)
        return [row[-1] for row in cursor.fetchall()]


def _claim_plan(queues):
    with CaptureQueriesContext(connection) as captured, transaction.atomic():
        rows = claim(connection, TABLE, uuid.uuid4(), queues, 10, timezone.now())
    [query] = [q["sql"] for q in captured.captured_queries if q["sql"].startswith("UPDATE")]
    # Django's log has the parameters inlined: explain the statement as it ran
    return rows, _plan(query, None)


@pytest.mark.parametrize("queues", [None, ["default"], ["default", "other"]])
def test_the_claim_reads_the_claim_index_in_order_and_updates_by_id(queues):
    conductor.invoke_many("echo", [{"payload": i} for i in range(300)])
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM sqlite_master WHERE name = 'sqlite_stat1'")
        assert cursor.fetchone() is None  # never analysed, as a new project's database
    rows, plan = _claim_plan(queues)
    assert len(rows) == 10
    text = "\n".join(plan)
    index = "cdj_exec_claim_idx" if queues == ["default"] else "cdj_exec_claim_any_idx"
    assert index in text, text
    assert "USING INDEX sqlite_autoindex" in text and "(id=?)" in text, text  # the update
    assert "TEMP B-TREE" not in text, text  # no sort: the index gives the claim's order

"""A worker reports a long transaction of another session (it keeps the database from
cleaning up old row versions: the executions' tables grow and the claim slows)."""

from __future__ import annotations

import pytest
from django.db import connection

from conductor_django.store.stats import oldest_transaction
from tests.conftest import poll

pytestmark = pytest.mark.django_db(transaction=True)


def _open_transaction():
    """A second session with a transaction that has read and written (a snapshot and a
    transaction id on PostgreSQL; an InnoDB transaction on MariaDB)."""
    raw = connection.get_new_connection(connection.get_connection_params())
    cursor = raw.cursor()
    if connection.vendor == "postgresql":
        raw.autocommit = False
        cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        cursor.execute("SELECT count(*) FROM conductor_django_execution")
        cursor.execute("SELECT txid_current()")
    else:
        raw.autocommit(False)
        cursor.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        cursor.execute("SELECT count(*) FROM conductor_django_execution")
    cursor.fetchall()
    return raw


def test_the_oldest_transaction_is_seen_and_forgotten_when_it_ends():
    if connection.vendor == "sqlite":
        assert oldest_transaction(connection) is None  # nothing to report on SQLite
        return
    before = oldest_transaction(connection)
    assert before is None or before < 60  # nothing long on a test database
    raw = _open_transaction()
    # MariaDB keeps serving INFORMATION_SCHEMA.INNODB_TRX from a cache while it is read
    # again within 0.1 s: read it less often than that
    try:
        poll(lambda: (oldest_transaction(connection) or 0) >= 0.5, interval=0.25,
             message="the open transaction to be seen")
    finally:
        raw.rollback()
        raw.close()
    poll(lambda: (oldest_transaction(connection) or 0) < 0.5, interval=0.25,
         message="the ended transaction to be forgotten")


def test_a_worker_warns_of_a_long_transaction_and_says_when_it_ended(start_worker):
    if connection.vendor == "sqlite":
        pytest.skip("SQLite keeps no old row versions for a reader")
    worker = start_worker(env={"CONDUCTOR_TEST_LONG_TRANSACTION": "1"})
    raw = _open_transaction()
    try:
        poll(lambda: "a transaction on the database has been open for" in worker.output(),
             timeout=30, message="the warning")
    finally:
        raw.rollback()
        raw.close()
    poll(lambda: "the long transaction on the database has ended" in worker.output(),
         timeout=30, message="the all-clear")
    assert worker.output().count("has been open for") == 1  # not repeated at every check

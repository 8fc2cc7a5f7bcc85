"""PostgreSQL: the hot statements are prepared on the server (conductor_django.store.prepared),
can be turned off, and survive a pooler that loses prepared statements."""

import logging

import pytest
from django.db import DatabaseError, connection, transaction
from django.test import override_settings

import conductor_django as conductor
from conductor_django.models import Execution
from conductor_django.store import pooling, prepared
from conductor_django.testing import drain

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def fresh_connection(is_postgres):
    """Each test starts on a new connection with nothing prepared, and not broken."""
    if not is_postgres:
        pytest.skip("prepared statements are PostgreSQL's")
    if pooling.pooled(connection):
        pytest.skip("nothing is prepared on a transaction-pooled database "
                    "(tests/test_pooling.py checks that)")
    connection.close()
    prepared._broken = False
    yield
    prepared._broken = False
    connection.close()


def lose_prepared_statements() -> None:
    """What a transaction-mode pooler does to a client: its next statement reaches a
    server connection that never saw the PREPARE. (Sent under psycopg, which would
    otherwise notice the DEALLOCATE and forget its statements too.)"""
    connection.connection.pgconn.exec_(b"DEALLOCATE ALL")


def server_prepared() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [row[0] for row in cursor.fetchall()]


def test_invoke_claim_and_step_are_prepared_once_per_connection():
    eid = conductor.invoke("steady-steps", {"key": "p", "count": 2, "pause": 0})
    conductor.invoke("steady-steps", {"key": "q", "count": 2, "pause": 0})
    statements = server_prepared()
    assert sum("INSERT INTO conductor_django_execution" in s for s in statements) == 1
    assert drain() == 2  # the inline drain claims and writes steps on this connection
    statements = server_prepared()
    assert any(s.startswith("UPDATE conductor_django_execution SET status = 'running'")
               for s in statements)
    assert any("INSERT INTO conductor_django_step" in s for s in statements)
    assert Execution.objects.get(pk=eid).status == "completed"
    # Django's own statements are not prepared by this (its threshold is never reached)
    assert not any("pg_prepared_statements" in s for s in statements)


@override_settings(CONDUCTOR={"PREPARED_STATEMENTS": False})
def test_setting_turns_it_off():
    conductor.invoke("echo", 1)
    assert drain() == 1
    assert server_prepared() == []


def test_explicit_prepare_threshold_none_turns_it_off(settings):
    db = {**settings.DATABASES["default"]}
    db["OPTIONS"] = {**db.get("OPTIONS", {}), "prepare_threshold": None}
    connection.settings_dict["OPTIONS"] = db["OPTIONS"]
    try:
        conductor.invoke("echo", 1)
        assert server_prepared() == []
    finally:
        connection.settings_dict["OPTIONS"].pop("prepare_threshold")


def test_a_lost_prepared_statement_turns_preparing_off_and_the_invoke_still_succeeds(caplog):
    conductor.invoke("echo", 1)
    assert server_prepared()
    lose_prepared_statements()
    with caplog.at_level(logging.WARNING, logger="conductor_django"):
        eid = conductor.invoke("echo", 2)
    assert prepared._broken
    assert "prepared statements do not survive" in caplog.text
    assert Execution.objects.get(pk=eid).payload == 2
    conductor.invoke("echo", 3)  # unprepared from now on
    assert server_prepared() == []
    assert Execution.objects.count() == 3


def test_inside_a_transaction_the_error_reaches_the_caller_and_writes_nothing():
    conductor.invoke("echo", 1)
    lose_prepared_statements()
    with pytest.raises(DatabaseError), transaction.atomic():
        conductor.invoke("echo", 2)
    assert prepared._broken
    assert Execution.objects.count() == 1
    with transaction.atomic():  # the next transaction works, unprepared
        conductor.invoke("echo", 3)
    assert Execution.objects.count() == 2

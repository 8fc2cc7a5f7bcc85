"""PostgreSQL behind a transaction pooler (conductor_django.store.pooling): the marker,
LISTEN_DATABASE, the checks, and nothing session-level on pooled connections. The
worker tests run in the dj52-pgbouncer cell (CONDUCTOR_TEST_DB=pgbouncer), through a
real PgBouncer in transaction mode."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
from django.db import connection, connections
from django.test import override_settings

import conductor_django as conductor
from conductor_django.checks import pooling_advice, proxy_advice
from conductor_django.runtime import listener, sessions
from conductor_django.runtime.sessions import enroll
from conductor_django.store import pooling, prepared

from .conftest import poll

through_pgbouncer = pytest.mark.skipif(
    os.environ.get("CONDUCTOR_TEST_DB") != "pgbouncer",
    reason="needs PostgreSQL through PgBouncer (the dj52-pgbouncer cell)")

PG = {"ENGINE": "django.db.backends.postgresql", "NAME": "app"}
POOLED = {**PG, "PORT": "6432", "DISABLE_SERVER_SIDE_CURSORS": True}
#: Polls far slower than every wait below: only a LISTEN wake-up is quicker.
SLOW_POLL = {"CONDUCTOR_TEST_POLL": "30", "CONDUCTOR_TEST_CANCEL_POLL": "30",
             "CONDUCTOR_TEST_HEARTBEAT": "20", "CONDUCTOR_TEST_DEAD_AFTER": "90"}
PROMPT = 8.0


@contextlib.contextmanager
def marked_pooled(alias: str = "default"):
    """``alias`` marked as transaction-pooled for a while."""
    settings_dict = connections[alias].settings_dict
    before = settings_dict.get("DISABLE_SERVER_SIDE_CURSORS", False)
    settings_dict["DISABLE_SERVER_SIDE_CURSORS"] = True
    try:
        yield
    finally:
        settings_dict["DISABLE_SERVER_SIDE_CURSORS"] = before


def test_pooled_is_djangos_marker_on_postgresql_only(db):
    with marked_pooled():
        assert pooling.pooled(connection) == (connection.vendor == "postgresql")
    if os.environ.get("CONDUCTOR_TEST_DB") != "pgbouncer":
        assert not pooling.pooled(connection)


def test_listen_alias(db):
    with override_settings(CONDUCTOR={"LISTEN_DATABASE": "direct"}):
        assert pooling.listen_alias("default") == "direct"
    with override_settings(CONDUCTOR={}), marked_pooled():
        expected = None if connection.vendor == "postgresql" else "default"
        assert pooling.listen_alias("default") == expected


def test_check_listen_database():
    databases = {"default": POOLED, "direct": PG, "sqlite": {
        "ENGINE": "django.db.backends.sqlite3"}, "pooled2": POOLED}
    assert pooling_advice("default", databases, {"LISTEN_DATABASE": "direct"}) == []
    for alias, words in (("nope", "is not an alias"), ("sqlite", "not a PostgreSQL"),
                         ("pooled2", "transaction pooler too")):
        [error] = pooling_advice("default", databases, {"LISTEN_DATABASE": alias})
        assert error.id == "conductor_django.E010" and words in error.msg, error.msg
    [warning] = pooling_advice("default", databases, {})
    assert warning.id == "conductor_django.W004"
    assert "LISTEN_DATABASE" in warning.hint
    assert pooling_advice("default", {"default": PG}, None) == []
    assert pooling_advice("default", {"default": {
        "ENGINE": "django.db.backends.mysql", "DISABLE_SERVER_SIDE_CURSORS": True}}, {}) == []


def test_check_a_pooler_nobody_marked():
    [warning] = proxy_advice("default", "6432", 5432)
    assert warning.id == "conductor_django.W005"
    assert "DISABLE_SERVER_SIDE_CURSORS" in warning.hint
    assert proxy_advice("default", "5432", 5432) == []
    assert proxy_advice("default", "", 5432) == []  # the default port
    assert proxy_advice("default", "", None) == []  # a Unix socket


def test_the_database_check_sees_pgbouncer(db):
    from conductor_django.checks import check_unmarked_pooler

    if connection.vendor != "postgresql":
        assert check_unmarked_pooler(databases=["default"]) == []
        return
    before = connection.settings_dict.get("DISABLE_SERVER_SIDE_CURSORS", False)
    connection.settings_dict["DISABLE_SERVER_SIDE_CURSORS"] = False
    try:
        found = check_unmarked_pooler(databases=["default"])
    finally:
        connection.settings_dict["DISABLE_SERVER_SIDE_CURSORS"] = before
    through = os.environ.get("CONDUCTOR_TEST_DB") == "pgbouncer"
    assert [w.id for w in found] == (["conductor_django.W005"] if through else [])


def test_nothing_prepared_nor_set_on_a_pooled_connection(transactional_db):
    if connection.vendor != "postgresql":
        pytest.skip("prepared statements and session settings are PostgreSQL's")
    try:
        with marked_pooled():
            assert not prepared.enabled(connection)
            connection.close()
            enroll("default", 7.5)  # as a worker's thread does
            with connection.cursor() as cursor:
                cursor.execute("SHOW idle_in_transaction_session_timeout")
                assert cursor.fetchone()[0] == "0"
            conductor.invoke("echo", 1)
            with connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM pg_prepared_statements")
                assert cursor.fetchone()[0] == 0
    finally:
        sessions._local.guard = None  # this thread is not a worker's
        connection.close()


@through_pgbouncer
def test_worker_through_pgbouncer_listens_on_listen_database(start_worker, tmp_path: Path):
    """A worker whose poll is 30 s starts new work at once: it LISTENs on the direct
    connection of LISTEN_DATABASE."""
    worker = start_worker("--concurrency", "2", env=SLOW_POLL)

    def listening() -> bool:
        with connection.cursor() as cursor:  # any server connection sees every session
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname ="
                           " current_database() AND query LIKE 'LISTEN conductor_cancel%%'")
            return cursor.fetchone()[0] > 0

    poll(listening, timeout=30, message="the worker's LISTEN session")
    eid = conductor.invoke("echo", {"hello": 1})
    poll(lambda: conductor.get(eid).status == "completed", timeout=PROMPT,
         message="a start woken by NOTIFY")
    assert "transaction pooler" not in worker.output()


@through_pgbouncer
def test_worker_through_pgbouncer_without_listen_database_polls_and_says_so_once(
        start_worker):
    worker = start_worker("--concurrency", "2",
                          env={"CONDUCTOR_TEST_NO_LISTEN_DATABASE": "1"})
    eids = [conductor.invoke("echo", n) for n in range(3)]
    poll(lambda: all(conductor.get(e).status == "completed" for e in eids), timeout=30,
         message="the executions to run (by polling)")
    poll(lambda: "transaction pooler" in worker.output(), timeout=10,
         message="the warning")
    assert worker.output().count("no LISTEN, this worker") == 1, worker.output()


def test_listen_database_of_a_worker_says_so_once(db, caplog):
    if connection.vendor != "postgresql":
        assert listener.listen_database("default") is None
        return
    with override_settings(CONDUCTOR={}), marked_pooled(), caplog.at_level("WARNING"):
        assert listener.listen_database("default") is None
    assert caplog.text.count("goes through a transaction pooler") == 1
    with override_settings(CONDUCTOR={"LISTEN_DATABASE": "direct"}):
        assert listener.listen_database("default") == "direct"

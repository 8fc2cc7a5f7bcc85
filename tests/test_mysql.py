"""MySQL/MariaDB: the system check's advice, Django's partial-index warnings, and what
migration 0010_mysql builds (the behaviour itself is the whole suite's, on MySQL)."""

from __future__ import annotations

import threading

import pytest
from django.core import checks as django_checks
from django.db import IntegrityError, connection, connections, transaction
from django.utils import timezone

import conductor_django as conductor
from conductor_django import checks
from conductor_django.models import Execution
from conductor_django.store.vendor import dialect

on_mysql = pytest.mark.skipif(connection.vendor != "mysql", reason="MySQL/MariaDB only")


def test_system_check_recommends_read_committed_and_utf8mb4_on_mysql():
    default = {"ENGINE": "django.db.backends.mysql", "NAME": "app"}
    assert checks.mysql_advice("default", default) == []  # Django's defaults are right
    tuned = {**default, "OPTIONS": {"isolation_level": "repeatable read", "charset": "utf8"}}
    [warning] = checks.mysql_advice("default", tuned)
    assert warning.id == "conductor_django.W002"
    assert "read committed" in warning.msg and "utf8mb4" in warning.msg
    assert "utf8mb4_bin" in warning.hint
    assert checks.mysql_advice("default", {"ENGINE": "django.db.backends.sqlite3"}) == []
    assert checks.check_mysql_settings() == []  # the test settings follow the advice


def test_a_case_insensitive_collation_is_warned_about():
    [warning] = checks.collation_advice("default", "utf8mb4_uca1400_ai_ci")  # MariaDB 11
    assert warning.id == "conductor_django.W002"
    assert "'utf8mb4_uca1400_ai_ci'" in warning.msg and "differ only in case" in warning.msg
    assert "COLLATE utf8mb4_bin" in warning.hint
    assert checks.collation_advice("default", "utf8mb4_bin") == []
    assert checks.collation_advice("default", None) == []


@on_mysql
@pytest.mark.django_db(transaction=True)
def test_the_collation_check_reads_the_database():
    # the test database is created COLLATE utf8mb4_bin (tests/settings.py)
    assert checks.check_mysql_collation(databases=["default"]) == []
    assert checks.check_mysql_collation() == []  # not a database check run: no query
    assert dialect(connection).text_collation(
        connection, Execution._meta.db_table, "dedupe_key") == "utf8mb4_bin"
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE cdj_collation_probe (k varchar(10)"
                       " CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci)")
    try:
        assert dialect(connection).text_collation(
            connection, "cdj_collation_probe", "k") == "utf8mb4_general_ci"
        # a table not created yet: the database's default
        assert dialect(connection).text_collation(
            connection, "cdj_no_such_table", "k") == "utf8mb4_bin"
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE cdj_collation_probe")


@pytest.mark.django_db(databases=["default", "other"])
def test_no_partial_index_warnings_for_conductors_models():
    messages = django_checks.run_checks(databases=["default", "other"])
    ours = [m for m in messages if m.id in ("models.W036", "models.W037")
            and getattr(m.obj, "_meta", None) is not None
            and m.obj._meta.app_label == "conductor_django"]
    assert ours == []


def _columns() -> set[str]:
    with connection.cursor() as cursor:
        return {c.name for c in connection.introspection.get_table_description(
            cursor, Execution._meta.db_table)}


@on_mysql
@pytest.mark.django_db
def test_generated_columns_follow_the_status():
    assert {"cdj_runnable", "cdj_open_dedupe"} <= _columns()
    eid = conductor.invoke("echo", dedupe_key="k")
    table = Execution._meta.db_table

    def generated() -> tuple:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT cdj_runnable, cdj_open_dedupe FROM {table} WHERE id = %s",
                           [Execution.objects.get(pk=eid).pk])
            return cursor.fetchone()

    assert generated() == (1, "k")
    Execution.objects.filter(pk=eid).update(status="running")
    assert generated() == (None, "k")
    Execution.objects.filter(pk=eid).update(status="completed")
    assert generated() == (None, None)


@on_mysql
@pytest.mark.django_db
def test_dedupe_key_is_unique_among_unfinished_executions_of_a_task():
    row = Execution.objects.create(task_name="t", dedupe_key="k")
    with pytest.raises(IntegrityError), transaction.atomic():
        Execution.objects.create(task_name="t", dedupe_key="k")
    Execution.objects.create(task_name="other", dedupe_key="k")  # another task
    Execution.objects.create(task_name="t", dedupe_key="K")  # utf8mb4_bin: exact keys
    Execution.objects.filter(pk=row.pk).update(status="completed")
    Execution.objects.create(task_name="t", dedupe_key="k")  # the first one finished


@on_mysql
@pytest.mark.django_db
def test_one_execution_per_schedule_fire_time():
    when = timezone.now()
    Execution.objects.create(task_name="t", schedule_name="s", scheduled_for=when)
    with pytest.raises(IntegrityError), transaction.atomic():
        Execution.objects.create(task_name="t", schedule_name="s", scheduled_for=when)
    Execution.objects.create(task_name="t", schedule_name="s")  # NULLs never collide
    Execution.objects.create(task_name="t", schedule_name="s")


@on_mysql
@pytest.mark.django_db(transaction=True)
def test_worker_sessions_end_transactions_left_idle_on_mariadb():
    if not connection.mysql_is_mariadb:
        pytest.skip("MySQL 8 has no idle-transaction timeout (docs/mysql.md)")
    from conductor_django.runtime.sessions import enroll

    seen: list[int] = []

    def worker_thread() -> None:
        enroll("default", 7.5)
        try:
            with connections["default"].cursor() as cursor:
                cursor.execute("SELECT @@SESSION.idle_transaction_timeout")
                seen.append(int(cursor.fetchone()[0]))
        finally:
            connections["default"].close()

    thread = threading.Thread(target=worker_thread)
    thread.start()
    thread.join(10)
    assert seen == [8]
    with connection.cursor() as cursor:  # the test's own session is left alone
        cursor.execute("SELECT @@SESSION.idle_transaction_timeout")
        assert int(cursor.fetchone()[0]) == 0

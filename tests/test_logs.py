"""ctx.logger, the stored log lines of each execution, and the custom context."""

import logging
import os

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.urls import reverse

import conductor_django as conductor
from conductor_django.models import Execution, ExecutionLog
from conductor_django.testing import drain
from tests.conftest import poll
from tests.testapp import context as test_context


def lines(eid, *fields):
    return list(ExecutionLog.objects.filter(execution_id=eid).order_by("id")
                .values_list(*(fields or ("message",)), flat=not fields or len(fields) == 1))


@pytest.fixture
def conductor_settings(settings):
    """Change CONDUCTOR keys for one test: ``conductor_settings(LOG_LINES=5)``."""

    def change(**values):
        settings.CONDUCTOR = {**settings.CONDUCTOR, **values}

    return change


@pytest.mark.django_db
def test_log_lines_of_an_execution_are_stored(caplog):
    caplog.set_level(logging.INFO, logger="conductor_django.task")
    eid = conductor.invoke("log-lines", {"tag": "t1", "n": 3, "thread": True})
    drain()
    assert conductor.get(eid).status == "completed"
    assert lines(eid, "attempt", "level", "logger", "message") == [
        (1, logging.INFO, "conductor_django.task", "t1 line 0"),
        (1, logging.INFO, "conductor_django.task", "t1 line 1"),
        (1, logging.INFO, "conductor_django.task", "t1 line 2"),
        # the logging configuration lets only WARNING and above of this logger through
        (1, logging.WARNING, "tests.plain", "t1 plain warning"),
        # ctx.logger from another thread is stored; a plain logger there is not
        (1, logging.INFO, "conductor_django.task", "t1 from a thread"),
    ]
    records = [r for r in caplog.records if r.name == "conductor_django.task"]
    assert [r.getMessage() for r in records][:3] == ["t1 line 0", "t1 line 1", "t1 line 2"]
    for record in records:
        assert (record.execution_id, record.task_name, record.queue, record.attempt) == \
            (eid, "log-lines", "default", 1)


@pytest.mark.django_db
def test_only_the_last_lines_are_kept(conductor_settings):
    conductor_settings(LOG_LINES=5)
    eid = conductor.invoke("log-lines", {"tag": "t", "n": 50})
    drain()
    assert lines(eid) == ["t line 46", "t line 47", "t line 48", "t line 49", "t plain warning"]


@pytest.mark.django_db
def test_lines_of_all_attempts_stay_bounded_and_failures_are_logged(conductor_settings):
    conductor_settings(LOG_LINES=4)
    eid = conductor.invoke("log-lines", {"tag": "r", "n": 2, "fail_until": 1})
    drain()
    ex = conductor.get(eid)
    assert (ex.status, ex.attempts) == ("completed", 2)
    stored = lines(eid, "attempt", "level", "message")
    assert [(a, lv) for a, lv, _ in stored] == [(1, logging.ERROR), (2, 20), (2, 20), (2, 30)]
    assert stored[0][2].startswith("Attempt 1 failed:\nTraceback (most recent call last):")
    assert stored[0][2].endswith("RuntimeError: r fails on attempt 1")
    assert [m for _, _, m in stored[1:]] == ["r line 0", "r line 1", "r plain warning"]


@pytest.mark.django_db
def test_log_level_and_disabling(conductor_settings):
    conductor_settings(LOG_LEVEL="DEBUG")
    eid = conductor.invoke("log-lines", {"tag": "d", "n": 1})
    drain()
    assert lines(eid) == ["d line 0", "d debug line", "d plain warning"]
    conductor_settings(LOG_LEVEL="WARNING")
    eid = conductor.invoke("log-lines", {"tag": "w", "n": 1})
    drain()
    assert lines(eid) == ["w plain warning"]
    conductor_settings(LOG_LINES=0)
    eid = conductor.invoke("log-lines", {"tag": "z", "n": 1})
    drain()
    assert conductor.get(eid).status == "completed"
    assert lines(eid) == []


@pytest.mark.django_db
def test_admin_page_shows_the_lines_escaped(admin_client):
    eid = conductor.invoke("log-lines", {"tag": "<script>x</script>", "n": 1})
    drain()
    page = admin_client.get(reverse("admin:conductor_django_execution_change", args=[eid]))
    html = page.content.decode()
    assert page.status_code == 200
    assert "&lt;script&gt;x&lt;/script&gt; line 0" in html
    assert "<script>x</script>" not in html


@pytest.mark.django_db(transaction=True)
def test_each_worker_thread_stores_only_its_own_lines(start_worker):
    ids = {f"w{n}": conductor.invoke("log-lines", {"tag": f"w{n}", "n": 6, "pause": 0.02,
                                                   "thread": True})
           for n in range(4)}
    worker = start_worker("--concurrency", "4")
    poll(lambda: Execution.objects.filter(pk__in=ids.values(), status="completed").count() == 4,
         timeout=30, message=f"four executions to finish\n{worker.output()}")
    for tag, eid in ids.items():
        assert lines(eid) == [*(f"{tag} line {i}" for i in range(6)), f"{tag} plain warning",
                              f"{tag} from a thread"]


# --- custom context ---------------------------------------------------------------------


@pytest.mark.django_db
def test_custom_context_members_are_built_once_per_process():
    first = conductor.invoke("uses-context", "ada")
    drain()
    second = conductor.invoke("uses-context", "bob")
    drain()
    results = [conductor.get(first).result, conductor.get(second).result]
    assert results == [{"build": 1, "pid": os.getpid(), "greeting": "hello ada"},
                       {"build": 1, "pid": os.getpid(), "greeting": "hello bob"}]
    assert test_context.BUILDS == [os.getpid()]


@pytest.mark.django_db(transaction=True)
def test_custom_context_on_a_real_worker(start_worker):
    ids = [conductor.invoke("uses-context", name) for name in ("ada", "bob", "cy")]
    worker = start_worker("--concurrency", "3")
    poll(lambda: Execution.objects.filter(pk__in=ids, status="completed").count() == 3,
         timeout=30, message=f"executions to finish\n{worker.output()}")
    results = [conductor.get(eid).result for eid in ids]
    assert {(r["build"], r["pid"]) for r in results} == {(1, worker.pid)}
    assert [r["greeting"] for r in results] == ["hello ada", "hello bob", "hello cy"]


@pytest.mark.django_db
@pytest.mark.parametrize("factory, message", [
    ("bad_names", "'step'"),
    ("not_a_dict", "must return a dict"),
    ("missing", "cannot be imported"),
])
def test_a_broken_custom_context_stops_the_worker_at_start(conductor_settings, factory,
                                                           message):
    conductor_settings(CONTEXT=f"tests.testapp.context.{factory}")
    eid = conductor.invoke("echo", 1)
    with pytest.raises(ImproperlyConfigured, match=message):
        drain()
    assert conductor.get(eid).status == "pending"


@pytest.mark.django_db
def test_cancellation_and_timeout_are_logged():
    cancelled = conductor.invoke("cancels-itself")
    timed_out = conductor.invoke("overruns")
    drain()
    assert conductor.get(cancelled).status == "cancelled"
    assert lines(cancelled, "level", "message") == [
        (logging.INFO, "about to cancel"), (logging.WARNING, "Cancelled: changed my mind")]
    assert conductor.get(timed_out).status == "failed"
    assert lines(timed_out, "level", "message") == [
        (logging.ERROR, "Timed out after 0.01 seconds")]


@pytest.mark.django_db
def test_staff_who_may_view_executions_see_their_lines(client, django_user_model):
    from django.contrib.auth.models import Permission

    eid = conductor.invoke("log-lines", {"tag": "staff", "n": 1})
    drain()
    user = django_user_model.objects.create_user("viewer", password="x", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_execution"))
    client.force_login(user)
    page = client.get(reverse("admin:conductor_django_execution_change", args=[eid]))
    assert page.status_code == 200
    assert "staff line 0" in page.content.decode()

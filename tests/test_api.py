"""The module API (SPEC §3): invoke, invoke_many, get, wait, and every bad input."""

from datetime import datetime, timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.utils import timezone

import conductor_django as conductor
from conductor_django import task
from conductor_django.definitions.registry import get_task, unregister
from conductor_django.models import Execution
from conductor_django.testing import drain
from tests.testapp.tasks import echo

pytestmark = pytest.mark.django_db


def test_invoke_by_name_returns_uuid_string_and_runs():
    eid = conductor.invoke("echo", {"a": 1})
    assert isinstance(eid, str) and len(eid) == 36
    row = conductor.get(eid)
    assert (row.status, row.task_name, row.queue, row.attempts) == ("pending", "echo", "default", 0)
    assert drain() == 1
    row.refresh_from_db()
    assert row.status == "completed"
    assert row.result == {"payload": {"a": 1}, "attempt": 1, "queue": "default"}
    assert row.started_at and row.finished_at and row.locked_by is None


def test_invoke_by_task_object_and_method():
    a = conductor.invoke(echo, [1, 2])
    b = echo.invoke("x", priority=5)
    assert conductor.get(a).payload == [1, 2]
    assert conductor.get(b).priority == 5
    assert echo.name == "echo"


def test_decorated_function_stays_callable():
    class Ctx:
        attempt, queue = 7, "q"

    class Ev:
        payload = "p"

    assert echo(Ev(), Ctx()) == {"payload": "p", "attempt": 7, "queue": "q"}


def test_task_default_name_is_dotted_path_and_duplicates_are_rejected():
    def handler(event, ctx):
        return None

    t = task(handler)
    try:
        assert t.name == f"{__name__}.{handler.__qualname__}"
        assert t.name.endswith("<locals>.handler") and t.name.startswith("tests.test_api.")
        assert get_task(t.name) is t

        def other(event, ctx):
            return None

        with pytest.raises(ImproperlyConfigured, match="Two tasks are named 'echo'"):
            task(name="echo")(other)
        assert get_task("echo").func is echo.func
    finally:
        unregister(t.name)


def test_queue_override_and_delay():
    eid = conductor.invoke("echo", None, queue="special", delay=timedelta(hours=1))
    row = conductor.get(eid)
    assert row.queue == "special"
    assert row.run_at > timezone.now() + timedelta(minutes=59)
    assert drain() == 0  # not runnable yet
    at = timezone.now() + timedelta(minutes=5)
    assert conductor.get(conductor.invoke("echo", run_at=at)).run_at == at
    assert conductor.get(conductor.invoke("echo", delay=2.5)).run_at > timezone.now()


def test_dedupe_key_returns_existing_while_unfinished():
    first = conductor.invoke("echo", {"n": 1}, dedupe_key="k")
    again = conductor.invoke("echo", {"n": 2}, dedupe_key="k")
    assert again == first
    assert Execution.objects.count() == 1
    other_task = conductor.invoke("record-run", {"n": 1}, dedupe_key="k")
    assert other_task != first
    drain()
    third = conductor.invoke("echo", {"n": 3}, dedupe_key="k")
    assert third != first  # the first one finished


def test_invoke_many_returns_ids_in_order_with_per_item_options():
    at = timezone.now() + timedelta(hours=1)
    ids = conductor.invoke_many("echo", [
        {"payload": {"id": 1}, "dedupe_key": "item-1", "priority": 10},
        {"payload": {"id": 2}, "run_at": at},
        {"payload": {"id": 3}},
        {"payload": {"id": 4}, "dedupe_key": "item-1"},
    ])
    assert len(ids) == 4 and ids[3] == ids[0]
    rows = {str(r.pk): r for r in Execution.objects.all()}
    assert len(rows) == 3
    assert rows[ids[0]].priority == 10 and rows[ids[0]].payload == {"id": 1}
    assert rows[ids[1]].run_at == at
    assert rows[ids[2]].payload == {"id": 3}


def test_invoke_many_payload_only_items_share_the_defaults_checked_once():
    ids = conductor.invoke_many("echo", [
        {"payload": {"id": 1}}, {}, {"payload": [1, "x"], "priority": 5}, {"payload": "é"},
    ])
    rows = [Execution.objects.get(pk=eid) for eid in ids]
    assert [r.payload for r in rows] == [{"id": 1}, None, [1, "x"], "é"]
    assert [r.priority for r in rows] == [0, 0, 5, 0]
    assert {r.queue for r in rows} == {"default"}
    assert rows[0].run_at == rows[1].run_at == rows[3].run_at <= timezone.now()


@pytest.mark.parametrize("payload, exc, match", [
    ("a\x00b", ValueError, "item 2: payload contains a NUL"),
    ("\ud800", ValueError, "item 2: payload contains a lone surrogate"),
    (float("nan"), TypeError, "item 2: payload is not JSON-serializable"),
    ({1j: 2}, TypeError, "item 2: payload is not JSON-serializable"),
])
def test_invoke_many_checks_every_payload_only_item(payload, exc, match):
    with pytest.raises(exc, match=match):
        conductor.invoke_many("echo", [{"payload": 1}, {}, {"payload": payload}])
    assert Execution.objects.count() == 0


def test_invoke_many_of_a_task_not_invocable_names_the_first_item():
    with pytest.raises(ValueError, match="invoke_many item 0: task .* is not invocable"):
        conductor.invoke_many("audit-user", [{"payload": 1}])
    assert conductor.invoke_many("audit-user", []) == []


def test_get_and_wait_results():
    eid = conductor.invoke("echo", "x")
    drain()
    assert conductor.wait(eid, timeout=5)["payload"] == "x"
    failed = conductor.invoke("non-retryable")
    drain()
    with pytest.raises(conductor.ExecutionFailed, match="bad input, do not retry"):
        conductor.wait(failed, timeout=5)
    pending = conductor.invoke("echo", delay=3600)
    with pytest.raises(TimeoutError):
        conductor.wait(pending, timeout=0.05)
    conductor.cancel(pending)
    with pytest.raises(conductor.ExecutionFailed, match="Cancelled by user"):
        conductor.wait(pending, timeout=5)
    with pytest.raises(Execution.DoesNotExist):
        conductor.get("00000000-0000-0000-0000-000000000000")
    with pytest.raises(Execution.DoesNotExist):
        conductor.get("not-a-uuid")


def test_wait_raises_execution_cancelled_for_a_cancelled_execution():
    eid = conductor.invoke("echo")
    Execution.objects.filter(pk=eid).update(status="cancelled", last_error="stop it")
    with pytest.raises(conductor.ExecutionCancelled, match="stop it") as info:
        conductor.wait(eid, timeout=1)
    assert isinstance(info.value, conductor.ExecutionFailed)
    assert info.value.execution_id == eid


# --- bad input: a clear error and nothing written ------------------------------------

BAD_INVOKES = [
    (("no-such-task", None), {}, conductor.TaskNotFound, "no-such-task"),
    (("not-invocable", None), {}, ValueError, "not-invocable"),
    (("echo", {"when": datetime(2030, 1, 1)}), {}, TypeError, "datetime"),
    (("echo", {1, 2}), {}, TypeError, "set"),
    (("echo", None), {"run_at": datetime(2030, 1, 1)}, ValueError, "aware"),
    (("echo", None), {"delay": -1}, ValueError, "negative"),
    (("echo", None), {"delay": timedelta(seconds=-5)}, ValueError, "negative"),
    (("echo", None), {"delay": "soon"}, TypeError, "delay"),
    (("echo", None), {"priority": "high"}, TypeError, "priority"),
    (("echo", None), {"dedupe_key": ""}, ValueError, "dedupe_key"),
    (("echo", None), {"queue": ""}, ValueError, "queue"),
    (("echo", None), {"run_at": timezone.now(), "delay": 1}, ValueError, "not both"),
]


@pytest.mark.parametrize(("args", "kwargs", "exc", "match"), BAD_INVOKES)
def test_bad_invoke_raises_and_writes_nothing(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        conductor.invoke(*args, **kwargs)
    assert Execution.objects.count() == 0


def test_task_not_found_is_a_lookup_error_and_conductor_error():
    with pytest.raises(LookupError):
        conductor.invoke("nope")
    assert issubclass(conductor.TaskNotFound, conductor.ConductorError)


@pytest.mark.parametrize(("items", "exc", "match"), [
    ([{"payload": 1}, {"payload": object()}], TypeError, "item 1.*object"),
    ([{"payload": 1}, {"delay": -3}], ValueError, "item 1.*negative"),
    ([{"payload": 1}, {"colour": "red"}], ValueError, "unknown keys \\['colour'\\]"),
    ([{"payload": 1}, "oops"], TypeError, "item 1 must be a dict"),
    ({"payload": 1}, TypeError, "list of dicts"),
])
def test_bad_invoke_many_item_writes_none(items, exc, match):
    with pytest.raises(exc, match=match):
        conductor.invoke_many("echo", items)
    assert Execution.objects.count() == 0


def test_callers_transaction_stays_usable_after_bad_input():
    with transaction.atomic():
        good = conductor.invoke("echo", 1)
        with pytest.raises(TypeError):
            conductor.invoke("echo", object())
        with pytest.raises(ValueError):
            conductor.invoke_many("echo", [{"payload": 2}, {"delay": -1}])
        dup = conductor.invoke("echo", 3, dedupe_key="d")
        assert conductor.invoke("echo", 4, dedupe_key="d") == dup
        assert Execution.objects.count() == 2
    assert conductor.get(good).status == "pending"


@pytest.mark.django_db(transaction=True)
def test_invoke_in_atomic_is_visible_after_commit_and_gone_after_rollback():
    from django.db import connections

    other = connections.create_connection("default")  # what a worker would see
    try:
        def seen(eid):
            with other.cursor() as cur:
                cur.execute(
                    "SELECT count(*) FROM conductor_django_execution WHERE id = %s",
                    [Execution._meta.pk.get_db_prep_value(Execution._meta.pk.to_python(eid),
                                                          other)],
                )
                return cur.fetchone()[0]

        with transaction.atomic():
            eid = conductor.invoke("echo", 1)
            assert seen(eid) == 0
        assert seen(eid) == 1

        class Rollback(Exception):
            pass

        with pytest.raises(Rollback), transaction.atomic():
            gone = conductor.invoke("echo", 2)
            ids = conductor.invoke_many("echo", [{"payload": 3}])
            raise Rollback
        assert seen(gone) == 0 and seen(ids[0]) == 0
        assert not Execution.objects.filter(pk__in=[gone, *ids]).exists()
    finally:
        other.close()
    assert connection.vendor in ("sqlite", "postgresql", "mysql")


@pytest.mark.django_db
def test_task_not_found_suggests_the_near_miss_name():
    with pytest.raises(conductor.TaskNotFound, match="No task named 'ehco' is registered; "
                                                      "did you mean 'echo'\\?"):
        conductor.invoke("ehco")
    with pytest.raises(conductor.TaskNotFound, match="did you mean 'wait-for-signal'"):
        conductor.invoke("wait_for_signal")
    with pytest.raises(conductor.TaskNotFound) as nothing_close:
        conductor.invoke("zzzzzz-quux")
    assert "did you mean" not in str(nothing_close.value)
    assert not Execution.objects.exists()

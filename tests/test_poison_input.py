"""Bad input to the API, task definitions and the worker's options: a clear error,
nothing written, the caller's transaction usable; and no module imported by a name
(issue 23). Runs on SQLite and PostgreSQL (where a database error would abort the
caller's transaction)."""

from __future__ import annotations

import math
import os
import sys
from datetime import UTC, datetime, timedelta, timezone

import pytest
from django.core.management import CommandError, call_command
from django.core.management.base import SystemCheckError
from django.db import transaction

import conductor_django as conductor
from conductor_django import TaskNotFound, task
from conductor_django.definitions.registry import unregister
from conductor_django.models import Execution, Schedule

pytestmark = pytest.mark.django_db


def _deep(levels):
    value: list = []
    for _ in range(levels):
        value = [value]
    return value


BAD_INVOKES = {
    "priority 2**31": ({"priority": 2**31}, ValueError, "priority must be between"),
    "priority 2**70": ({"priority": 2**70}, ValueError, "priority must be between"),
    "priority -2**31-1": ({"priority": -(2**31) - 1}, ValueError, "priority must be between"),
    "priority float": ({"priority": 1.5}, TypeError, "priority must be an int"),
    "delay nan": ({"delay": math.nan}, ValueError, "delay must be a number of seconds"),
    "delay inf": ({"delay": math.inf}, ValueError, "delay must be at most"),
    "delay 1e20": ({"delay": 1e20}, ValueError, "delay must be at most"),
    "delay timedelta.max": ({"delay": timedelta.max}, ValueError, "delay must be at most"),
    "delay 2**2000": ({"delay": 2**2000}, ValueError, "delay must be at most"),
    "throttle nan": ({"throttle": math.nan}, ValueError, "throttle must be a number"),
    "throttle inf": ({"throttle": math.inf}, ValueError, "throttle must be at most"),
    "debounce 1e20": ({"debounce": 1e20}, ValueError, "debounce must be at most"),
    "debounce timedelta.max": ({"debounce": timedelta.max}, ValueError, "debounce must be"),
    "payload 10000 deep": ({"payload": _deep(10_000)}, ValueError, "nests deeper than 31"),
    "payload 32 deep": ({"payload": _deep(31)}, ValueError, "nests deeper than 31"),
    "payload NUL": ({"payload": {"a": ["x\x00y"]}}, ValueError,
                    r"payload at \['a'\]\[0\] contains a NUL"),
    "payload NUL key": ({"payload": {"a\x00": 1}}, ValueError, "key at the top"),
    "payload surrogate": ({"payload": "\ud800"}, ValueError, "lone surrogate"),
    "payload nan": ({"payload": [math.nan]}, TypeError, "not JSON-serializable"),
    "payload set": ({"payload": {1, 2}}, TypeError, "not JSON-serializable: set"),
    "dedupe NUL": ({"dedupe_key": "a\x00"}, ValueError, "dedupe_key contains a NUL"),
    "dedupe surrogate": ({"dedupe_key": "\udcff"}, ValueError, "dedupe_key contains a lone"),
    "dedupe long": ({"dedupe_key": "k" * 256}, ValueError, "at most 255"),
    "queue NUL": ({"queue": "\x00"}, ValueError, "queue contains a NUL"),
    "queue long": ({"queue": "q" * 101}, ValueError, "at most 100"),
    "run_at out of range": ({"run_at": datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))},
                            ValueError, "out of the range"),
}


@pytest.mark.parametrize("case", sorted(BAD_INVOKES))
def test_bad_invoke_raises_writes_nothing_and_keeps_the_transaction(case):
    options, error, message = BAD_INVOKES[case]
    before = Execution.objects.count()
    with transaction.atomic():
        with pytest.raises(error, match=message):
            conductor.invoke("echo", **options)
        # the caller's transaction is usable: on PostgreSQL a database error would have
        # aborted it ("current transaction is aborted")
        assert Execution.objects.count() == before
        assert conductor.get(conductor.invoke("echo", {"after": case})).payload == {"after": case}


@pytest.mark.parametrize("case", sorted(BAD_INVOKES))
def test_one_bad_item_of_invoke_many_writes_none(case):
    options, error, message = BAD_INVOKES[case]
    items = [{"payload": n} for n in range(999)]
    items.append({"payload": None, **options})
    with transaction.atomic():
        with pytest.raises(error, match=f"invoke_many item 999: .*{message}"):
            conductor.invoke_many("echo", items)
        assert Execution.objects.count() == 0


@pytest.mark.parametrize(("options", "error", "message"), [
    ({"priority": 2**31}, ValueError, "priority must be between"),
    ({"delay": math.nan}, ValueError, "delay must be a number"),
    ({"dedupe_key": "a\x00"}, ValueError, "dedupe_key contains a NUL"),
    ({"queue": "q\ud800"}, ValueError, "queue contains a lone surrogate"),
])
def test_bad_emit_raises_and_writes_nothing(options, error, message):
    with transaction.atomic():
        with pytest.raises(error, match=message):
            conductor.emit("user.created", {"id": 1}, **options)
        with pytest.raises(error, match=message):
            conductor.emit("user.created", _deep(5), **options)
        assert Execution.objects.count() == 0
    with pytest.raises(ValueError, match="event name contains a NUL"):
        conductor.emit("user.\x00created")
    with pytest.raises(ValueError, match="nests deeper"):
        conductor.emit("user.created", _deep(10_000))


@pytest.mark.parametrize(("args", "error", "message"), [
    (("every-minute\x00", "* * * * *"), ValueError, "schedule name contains a NUL"),
    (("m", "* * * * *", {"x": math.nan}), TypeError, "not JSON-serializable"),
    (("m", "* * * * *", _deep(10_000)), ValueError, "nests deeper"),
    (("m", "* * * * *", "\x00"), ValueError, "contains a NUL"),
    (("m", "* * * * *\x00"), ValueError, "invalid cron expression"),
    (("m", "* * * * *", None, "Europe/Paris\x00"), ValueError, "unknown timezone"),
])
def test_bad_schedule_raises_and_writes_nothing(args, error, message):
    with transaction.atomic():
        with pytest.raises(error, match=message):
            conductor.schedule("echo", *args)
        assert not Schedule.objects.exists() and not Execution.objects.exists()


@pytest.mark.parametrize(("reason", "error", "message"), [
    (object(), ValueError, "cancel reason must be a str"),
    (123, ValueError, "cancel reason must be a str"),
    ("stop\x00now", ValueError, "cancel reason contains a NUL"),
    ("stop \ud800", ValueError, "cancel reason contains a lone surrogate"),
])
def test_bad_cancel_reason_raises_and_changes_nothing(reason, error, message):
    eid = conductor.invoke("echo")
    with transaction.atomic():
        with pytest.raises(error, match=message):
            conductor.cancel(eid, reason=reason)
        assert conductor.get(eid).status == "pending"
    assert conductor.cancel(eid, reason="fine") is True


@pytest.mark.parametrize(("timeout", "error", "message"), [
    (math.nan, ValueError, "timeout must be a number"),
    (-1, ValueError, "timeout must not be negative"),
    ("1", TypeError, "timeout must be seconds"),
    (math.inf, ValueError, "timeout must be at most"),
])
def test_bad_wait_timeout_is_a_clear_error(timeout, error, message):
    eid = conductor.invoke("echo")
    with pytest.raises(error, match=message):
        conductor.wait(eid, timeout=timeout)


def _define(**options):
    def handler(event, ctx):
        return None
    handler.__qualname__ = "poison_definition"
    return task(**options)(handler)


@pytest.mark.parametrize(("options", "message"), [
    ({"name": "n" * 201}, "task name must be a non-empty str of at most 200"),
    ({"name": "a\x00b"}, "task name contains a NUL"),
    ({"name": "\ud800"}, "task name contains a lone surrogate"),
    ({"name": "ok-name", "queue": "q" * 101}, "queue of task 'ok-name' must be .* at most 100"),
    ({"name": "ok-name", "queue": "q\x00"}, "contains a NUL"),
    ({"name": "ok-name", "max_attempts": 2**40}, "max_attempts of task 'ok-name' must be between"),
    ({"name": "ok-name", "max_attempts": 0}, "max_attempts of task 'ok-name' must be between"),
    ({"name": "ok-name", "backoff": [1, math.nan]}, "backoff of task 'ok-name' must be a number"),
    ({"name": "ok-name", "backoff": [math.inf]}, "backoff of task 'ok-name' must be at most"),
    ({"name": "ok-name", "timeout": math.inf}, "timeout of task 'ok-name' must be at most"),
    ({"name": "ok-name", "timeout": timedelta.max}, "timeout of task 'ok-name' must be at most"),
    ({"name": "ok-name", "events": ["a\x00"]}, "contains a NUL"),
    ({"name": "ok-name", "cron": "* * * * *\x00"}, "invalid cron expression"),
])
def test_bad_task_definitions_are_refused_when_defined(options, message):
    with pytest.raises((ValueError, TypeError), match=message):
        _define(**options)
    unregister("ok-name")
    with pytest.raises(TaskNotFound):
        conductor.invoke("ok-name")


def test_a_task_name_of_200_characters_is_accepted():
    name = "n" * 200
    _define(name=name, queue="q" * 100, max_attempts=2**30 - 1)
    try:
        eid = conductor.invoke(name)
        assert (conductor.get(eid).task_name, conductor.get(eid).queue) == (name, "q" * 100)
    finally:
        unregister(name)


def test_invoke_imports_no_module_by_name():
    """An unknown dotted name is looked up, not imported (issue 23, group 5)."""
    module = "tests.testapp.import_canary"
    assert module not in sys.modules
    for call in (lambda: conductor.invoke(f"{module}.handler"),
                 lambda: conductor.invoke_many(f"{module}.handler", [{}]),
                 lambda: conductor.schedule(f"{module}.handler", "s", "* * * * *")):
        with pytest.raises(TaskNotFound):
            call()
    assert module not in sys.modules
    assert "CONDUCTOR_IMPORT_CANARY" not in os.environ
    assert not Execution.objects.exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--poll-interval", "nan"], "--poll-interval must be a number of seconds, got NaN"),
    (["--poll-interval", "inf"], "--poll-interval must be at most"),
    (["--shutdown-timeout", "nan"], "--shutdown-timeout must be a number of seconds"),
    (["--shutdown-timeout", "inf"], "--shutdown-timeout must be at most"),
])
def test_worker_refuses_options_that_are_not_finite(args, message):
    with pytest.raises(CommandError, match=message):
        call_command("conductor_worker", *args)


def test_a_far_run_at_is_stored():
    far = datetime(9999, 12, 31, tzinfo=UTC)
    assert conductor.get(conductor.invoke("echo", run_at=far)).run_at == far


@pytest.mark.parametrize(("key", "value"), [
    ("POLL_INTERVAL", math.nan), ("POLL_INTERVAL", math.inf),
    ("CANCEL_POLL_INTERVAL", math.nan), ("RETRY_BACKOFF", [1, math.nan]),
    ("RETRY_BACKOFF", [math.inf]),
])
def test_settings_that_are_not_finite_fail_the_system_checks(settings, key, value):
    settings.CONDUCTOR = {**settings.CONDUCTOR, key: value}
    with pytest.raises(SystemCheckError, match=f"CONDUCTOR\\['{key}'\\] must"):
        call_command("check")


def test_emit_without_subscribers_checks_its_input_too():
    assert conductor.emit("nobody.listens", {"x": 1}) == []
    with pytest.raises(ValueError, match="priority must be between"):
        conductor.emit("nobody.listens", priority=2**31)
    with pytest.raises(ValueError, match="payload at \\[0\\] contains a NUL"):
        conductor.emit("nobody.listens", ["\x00"])

"""Retries, backoff, NonRetryableError and memoized steps (SPEC §6), run in-process."""

import enum
from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

import conductor_django as conductor
from conductor_django import NonRetryableError, task
from conductor_django.definitions.registry import unregister
from conductor_django.models import Attempt, Execution, Step
from conductor_django.testing import drain
from tests.testapp.models import Mark

pytestmark = pytest.mark.django_db


def test_a_step_runs_once_even_when_a_later_step_fails_twice():
    eid = conductor.invoke("steps-then-fail", {"key": "k"})
    assert drain() == 3  # three attempts (RETRY_BACKOFF is [0] in the tests)
    row = conductor.get(eid)
    assert row.status == "completed", row.last_error
    assert row.attempts == 3
    assert row.result == ["A", "B"]
    assert Mark.count("k:a") == 1
    assert Mark.count("k:b") == 3
    steps = {s.name: s.result for s in Step.objects.filter(execution_id=eid)}
    assert steps == {"a": "A", "b": "B"}
    # healed: no error shown any more; the earlier attempts' errors are in the history
    assert row.last_error == ""
    errors = list(Attempt.objects.filter(execution_id=eid).order_by("number")
                  .values_list("ended", "error"))
    assert [ended for ended, _ in errors] == ["retrying", "retrying", "completed"]
    assert all(error for ended, error in errors if ended == "retrying")


def test_failures_retry_until_max_attempts_then_fail_with_the_message():
    eid = conductor.invoke("always-fails")
    drain()
    row = conductor.get(eid)
    assert (row.status, row.attempts, row.last_error) == ("failed", 2, "ValueError: boom")
    assert row.finished_at is not None and not row.cancelled


def test_non_retryable_error_fails_at_once():
    eid = conductor.invoke("non-retryable")
    assert drain() == 1
    row = conductor.get(eid)
    assert (row.status, row.attempts, row.last_error) == ("failed", 1, "bad input, do not retry")


@override_settings(CONDUCTOR={"RETRY_BACKOFF": [15, 30, 60]})
def test_backoff_from_settings_delays_the_retry(caplog):
    eid = conductor.invoke("always-fails")
    before = timezone.now()
    with caplog.at_level("INFO", logger="conductor_django"):
        assert drain() == 1
    # the log line gives the delay before the retry, not how long the attempt ran
    assert f"always-fails {eid} retrying in 15s" in caplog.text
    assert "retrying in 0." not in caplog.text
    row = conductor.get(eid)
    assert row.status == "pending" and row.attempts == 1 and row.last_error == "ValueError: boom"
    assert before + timedelta(seconds=14) < row.run_at < timezone.now() + timedelta(seconds=16)


def test_task_backoff_list_and_callable():
    @task(name="backoff-list", backoff=[100, 200], max_attempts=5)
    def backoff_list(event, ctx):
        raise RuntimeError("x")

    @task(name="backoff-callable", backoff=lambda n: 10 * n, max_attempts=5)
    def backoff_callable(event, ctx):
        raise RuntimeError("x")

    try:
        assert backoff_list.retry_delay(1) == 100
        assert backoff_list.retry_delay(2) == 200
        assert backoff_list.retry_delay(7) == 200  # the last value repeats
        assert backoff_callable.retry_delay(3) == 30
        eid = conductor.invoke("backoff-list")
        drain()
        row = conductor.get(eid)
        assert row.run_at > timezone.now() + timedelta(seconds=95)
    finally:
        unregister("backoff-list")
        unregister("backoff-callable")


def test_repeated_step_name_returns_the_first_result_and_results_are_json():
    calls = []

    @task(name="repeat-steps")
    def repeat_steps(event, ctx):
        first = ctx.step("same", lambda: calls.append(1) or (1, 2))
        second = ctx.step("same", lambda: calls.append(2) or "other")
        return [first, second]

    try:
        eid = conductor.invoke("repeat-steps")
        drain()
        assert conductor.get(eid).result == [[1, 2], [1, 2]]
        assert calls == [1]
    finally:
        unregister("repeat-steps")


class Level(enum.IntEnum):
    HIGH = 3


class Label(str):
    pass


@pytest.mark.parametrize("value, stored", [
    (None, None), (True, True), (7, 7), (2.5, 2.5), ("é\n", "é\n"),
    (2**62, 2**62), (Level.HIGH, 3), (Label("x"), "x"), ((1, "a"), [1, "a"]),
    ({"k": (1,)}, {"k": [1]}),
])
def test_a_step_returns_what_is_stored_on_the_first_run_and_on_replay(value, stored):
    seen = []

    @task(name="typed-step")
    def typed_step(event, ctx):
        result = ctx.step("v", lambda: value)
        seen.append((type(result), result))
        if len(seen) == 1:
            raise ValueError("again")  # the retry replays the step
        return None

    try:
        conductor.invoke("typed-step")
        drain()
        assert seen == [(type(stored), stored)] * 2
    finally:
        unregister("typed-step")


def test_non_json_step_or_task_result_fails_the_attempt():
    @task(name="bad-step", max_attempts=1)
    def bad_step(event, ctx):
        ctx.step("s", lambda: object())

    @task(name="bad-result", max_attempts=1)
    def bad_result(event, ctx):
        return {1, 2}

    try:
        a, b = conductor.invoke("bad-step"), conductor.invoke("bad-result")
        drain()
        assert "not JSON-serializable: object" in conductor.get(a).last_error
        assert "not JSON-serializable: set" in conductor.get(b).last_error
        assert not Step.objects.exists()
    finally:
        unregister("bad-step")
        unregister("bad-result")


def test_ctx_identity_and_logger():
    seen = {}

    @task(name="ctx-identity", queue="q1")
    def ctx_identity(event, ctx):
        seen.update(id=ctx.execution_id, name=ctx.task_name, queue=ctx.queue,
                    attempt=ctx.attempt, event_name=event.name, eid=event.execution_id,
                    extra=dict(ctx.logger.extra))
        return None

    try:
        eid = conductor.invoke("ctx-identity")
        drain(queues=["q1"])
        assert seen == {
            "id": eid, "name": "ctx-identity", "queue": "q1", "attempt": 1,
            "event_name": "conductor.invoke", "eid": eid,
            "extra": {"execution_id": eid, "task_name": "ctx-identity", "queue": "q1",
                      "attempt": 1},
        }
    finally:
        unregister("ctx-identity")


def test_drain_serves_only_the_given_queues_and_priority_order():
    order = []

    @task(name="ordered-in-test")
    def ordered(event, ctx):
        order.append(event.payload)

    try:
        conductor.invoke("ordered-in-test", "low", priority=-1)
        conductor.invoke("ordered-in-test", "mid")
        conductor.invoke("ordered-in-test", "high", priority=9)
        other = conductor.invoke("on-other-queue", 1)
        assert drain(queues=["default"]) == 3
        assert order == ["high", "mid", "low"]
        assert conductor.get(other).status == "pending"
        assert drain(queues=["other"]) == 1
    finally:
        unregister("ordered-in-test")


def test_unregistered_task_fails_the_attempt_clearly():
    eid = conductor.invoke("echo")
    Execution.objects.filter(pk=eid).update(task_name="gone-task", max_attempts=1)
    drain()
    row = conductor.get(eid)
    assert row.status == "failed"
    assert row.last_error.startswith("Task 'gone-task' is not registered in this worker: ")
    assert "restart" in row.last_error


@pytest.mark.parametrize(("exc", "expected"), [
    (KeyError("user"), "KeyError: 'user'"),
    (ValueError("boom"), "ValueError: boom"),
    (ZeroDivisionError(), "ZeroDivisionError"),
    (Exception("plain words"), "plain words"),
    (NonRetryableError("bad input, do not retry"), "bad input, do not retry"),
])
def test_last_error_names_the_exception_type(exc, expected):
    from conductor_django.exceptions import error_text

    assert error_text(exc) == expected

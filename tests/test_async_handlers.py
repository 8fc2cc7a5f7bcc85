"""``async def`` handlers run in-process (``testing.drain``): steps, memoization, bad input."""

import asyncio

import pytest

import conductor_django as conductor
from conductor_django import task
from conductor_django.models import Execution, Step
from conductor_django.testing import drain
from tests.testapp.async_tasks import lines
from tests.testapp.models import Mark


@pytest.mark.django_db
def test_async_handler_runs_async_and_sync_steps_and_memoizes():
    eid = conductor.invoke("async-echo", {"n": 1})
    assert drain() == 1
    row = conductor.get(eid)
    assert row.status == "completed", row.last_error
    assert row.result == {"first": {"fetched": {"n": 1}}, "second": "synced", "same": True,
                          "attempt": 1, "queue": "default"}
    assert sorted(Step.objects.filter(execution_id=eid).values_list("name", flat=True)) == [
        "fetch", "sync"]
    assert Mark.count("async-echo:sync") == 1


@pytest.mark.django_db
def test_async_durable_sleep_invoke_and_signal(tmp_path):
    log = tmp_path / "durable.log"
    eid = conductor.invoke("async-durable", {"log": str(log), "nap": 0})
    drain()
    row = conductor.get(eid)
    assert row.status == "suspended", row.last_error
    assert conductor.send_signal(eid, "approval", "yes") is True
    drain()
    row.refresh_from_db()
    assert row.status == "completed", row.last_error
    assert row.result["answer"] == "yes"
    assert row.result["child"] == {"fetched": {"from": eid}}
    assert lines(log) == ["before", "after"]  # each step ran once across the resumes
    assert row.attempts == 1


def test_async_batch_task_is_refused():
    from conductor_django import Batch

    with pytest.raises(ValueError, match="needs a plain function"):
        @task(name="async-batch-refused", batch=Batch(size=2, timeout=1))
        async def refused(events, ctx):
            return []


@pytest.mark.django_db
def test_async_step_bad_input_is_a_clear_error_and_writes_nothing():
    @task(name="async-bad-step", max_attempts=1)
    async def bad(event, ctx):
        await ctx.step("not-callable", 42)

    eid = conductor.invoke("async-bad-step")
    drain()
    row = Execution.objects.get(pk=eid)
    assert row.status == "failed"
    assert "needs a callable" in row.last_error
    assert not Step.objects.filter(execution_id=eid).exists()


@pytest.mark.django_db
def test_async_step_result_must_be_json():
    @task(name="async-bad-result", max_attempts=1)
    async def bad(event, ctx):
        await ctx.step("s", lambda: asyncio.sleep(0, result={1, 2}))

    eid = conductor.invoke("async-bad-result")
    drain()
    row = Execution.objects.get(pk=eid)
    assert row.status == "failed" and "set" in row.last_error
    assert not Step.objects.filter(execution_id=eid).exists()

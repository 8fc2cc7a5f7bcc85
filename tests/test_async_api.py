"""``ainvoke`` / ``acancel`` / ``aget`` / ``await_result`` from async code, with a real
worker: results, failures, cancellation, timeouts and bad input."""

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.db import connections

import conductor_django as conductor
from conductor_django import ExecutionCancelled, ExecutionFailed, TaskNotFound, asyncapi
from conductor_django.models import Execution
from tests.conftest import poll


def run(coro):
    """Run ``coro`` as an async view would; then close the connection the async ORM's
    thread opened (a request's end does that in a server)."""
    try:
        return asyncio.run(coro)
    finally:
        asyncio.run(sync_to_async(connections.close_all)())


@pytest.mark.django_db(transaction=True)
def test_ainvoke_and_await_result_of_an_async_task(start_worker):
    start_worker()

    async def view():
        eid = await conductor.ainvoke("async-echo", {"n": 7})
        return eid, await conductor.await_result(eid, timeout=30)

    eid, result = run(view())
    assert result["first"] == {"fetched": {"n": 7}}
    assert Execution.objects.get(pk=eid).status == "completed"


@pytest.mark.django_db(transaction=True)
def test_await_result_raises_like_wait(start_worker, tmp_path):
    start_worker()

    async def failing():
        eid = await conductor.ainvoke("always-fails")
        await conductor.await_result(eid, timeout=60)

    with pytest.raises(ExecutionFailed, match="boom"):
        run(failing())

    async def cancelled():
        eid = await conductor.ainvoke("async-await-forever", {"log": str(tmp_path / "c.log")})
        while (await conductor.aget(eid)).status != "running":
            await asyncio.sleep(0.02)
        assert await conductor.acancel(eid, "Not needed") is True
        await conductor.await_result(eid, timeout=30)

    with pytest.raises(ExecutionCancelled, match="Not needed"):
        run(cancelled())


@pytest.mark.django_db(transaction=True)
def test_await_result_times_out_and_leaves_the_loop_free():
    eid = conductor.invoke("echo", delay=60)  # no worker: it stays pending
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    async def view():
        beat = asyncio.create_task(ticker())
        try:
            await conductor.await_result(eid, timeout=0.5)
        finally:
            beat.cancel()

    with pytest.raises(TimeoutError, match="did not finish within 0.5 s"):
        run(view())
    assert ticks >= 3  # the loop kept running other coroutines while awaiting


@pytest.mark.django_db(transaction=True)
def test_async_api_bad_input_is_a_clear_error_and_writes_nothing():
    with pytest.raises(TaskNotFound):
        run(conductor.ainvoke("no-such-task"))
    with pytest.raises(TypeError, match="set"):
        run(conductor.ainvoke("echo", {"bad": {1, 2}}))
    assert not Execution.objects.exists()
    with pytest.raises(Execution.DoesNotExist):
        run(conductor.await_result("not-an-id"))
    with pytest.raises(ValueError):
        run(conductor.await_result("00000000-0000-0000-0000-000000000000", timeout=-1))
    assert run(conductor.acancel("00000000-0000-0000-0000-000000000000")) is False


@pytest.mark.django_db(transaction=True)
def test_await_result_wakes_on_notify_on_postgres(start_worker, is_postgres, monkeypatch):
    if not is_postgres:
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    monkeypatch.setattr(asyncapi, "RECHECK", 120.0)  # only the NOTIFY can wake it in time
    start_worker()
    eid = conductor.invoke("async-nap-step", {"n": 1, "seconds": 0.5})
    poll(lambda: Execution.objects.get(pk=eid).status == "running", message="running")

    async def view():
        return await conductor.await_result(eid, timeout=60)

    assert run(view()) == 1

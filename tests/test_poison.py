"""Poison handlers and results: each fails only its own execution, with a clear
``last_error``, never stays ``running``, never loops, and never holds up the others
(issue 23). A real ``conductor_worker`` subprocess, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
import uuid

import pytest
from django.db import DataError

import conductor_django as conductor
from conductor_django.models import Execution
from conductor_django.runtime.completer import Completer
from conductor_django.state import execution as state_execution
from conductor_django.testing import drain
from tests.testapp.poison_tasks import ASYNC_OUTCOMES, EXPECTED

from .conftest import poll

BACKOFF = {
    "poison-backoff-str": "TypeError: backoff of task 'poison-backoff-str' for attempt 1 "
                          "must be seconds",
    "poison-backoff-nan": "ValueError: backoff of task 'poison-backoff-nan' for attempt 1 "
                          "must be a number of seconds, got NaN",
    "poison-backoff-raises": "ZeroDivisionError: division by zero",
}


def _finished(ids) -> bool:
    return not Execution.objects.filter(pk__in=ids).exclude(status__in=Execution.FINAL).exists()


def test_poison_handlers_fail_only_their_execution_on_a_real_worker(start_worker):
    poisoned = {kind: conductor.invoke("poison", {"kind": kind}) for kind in EXPECTED}
    backoff = {name: conductor.invoke(name) for name in BACKOFF}
    controls = [conductor.invoke("poison-control", n) for n in range(5)]
    worker = start_worker("--concurrency", "4", "--poll-interval", "0.1")
    every = [*poisoned.values(), *backoff.values(), *controls]
    poll(lambda: _finished(every), timeout=60, message="every execution to finish")

    rows = {str(r.pk): r for r in Execution.objects.filter(pk__in=every)}
    for kind, eid in poisoned.items():
        status, fragment = EXPECTED[kind]
        row = rows[eid]
        assert (kind, row.status) == (kind, status), row.last_error
        assert fragment in row.last_error, (kind, row.last_error)
        assert row.attempts == 1, (kind, row.attempts)  # no loop, no second attempt
    for name, eid in backoff.items():
        row = rows[eid]
        assert row.status == "failed" and row.attempts == 1, (name, row.status, row.attempts)
        assert row.last_error.startswith("RuntimeError: first failure (not retried: "), \
            row.last_error
        assert BACKOFF[name] in row.last_error, row.last_error
    assert [rows[c].result for c in controls] == [{"ok": n} for n in range(5)]

    # the worker is still serving: a new execution completes at once
    began = time.monotonic()
    eid = conductor.invoke("poison-control", "after")
    poll(lambda: conductor.get(eid).status == "completed", timeout=5,
         message="the control execution after the poison ones")
    assert time.monotonic() - began < 5
    assert worker.proc.poll() is None, worker.output()[-3000:]


@pytest.mark.django_db
@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_poison_handler_in_drain(kind):
    """The same outcomes through ``testing.drain`` (the caller's thread and transaction)."""
    eid = conductor.invoke("poison", {"kind": kind})
    control = conductor.invoke("poison-control", 1)
    drain(timeout=30)
    row = conductor.get(eid)
    status, fragment = EXPECTED[kind]
    assert row.status == status and fragment in row.last_error, (row.status, row.last_error)
    assert conductor.get(control).status == "completed"


def test_any_base_exception_of_an_async_handler_fails_only_its_execution(start_worker):
    """SystemExit, KeyboardInterrupt, GeneratorExit or a BaseException of its own, raised by
    an ``async def`` handler or a step it awaits (plain, async, atomic, gathered): the
    attempt fails with a clear ``last_error`` and the worker's event loop goes on running
    async and plain executions."""
    poisoned = {kind: conductor.invoke("poison-async", {"kind": kind})
                for kind in ASYNC_OUTCOMES}
    worker = start_worker("--concurrency", "2", "--poll-interval", "0.1")
    poll(lambda: _finished(poisoned.values()), timeout=60,
         message="every poisoned async execution to finish")
    rows = {str(r.pk): r for r in Execution.objects.filter(pk__in=poisoned.values())}
    for kind, eid in poisoned.items():
        row = rows[eid]
        assert (kind, row.status, row.last_error) == (kind, "failed", ASYNC_OUTCOMES[kind][1])
        assert row.attempts == 1, (kind, row.attempts)
    later = [conductor.invoke("poison-async-control", n) for n in range(3)]
    later += [conductor.invoke("poison-control", n) for n in range(3)]
    poll(lambda: _finished(later), timeout=20, message="the executions after the poison ones")
    assert [conductor.get(eid).result for eid in later] == [{"ok": n} for n in (0, 1, 2) * 2]
    assert worker.proc.poll() is None, worker.output()[-3000:]


@pytest.mark.django_db
@pytest.mark.parametrize("kind", sorted(ASYNC_OUTCOMES))
def test_any_base_exception_of_an_async_handler_in_drain(kind):
    """The same through ``testing.drain`` (on asgiref's event loop)."""
    eid = conductor.invoke("poison-async", {"kind": kind})
    control = conductor.invoke("poison-async-control", 1)
    drain(timeout=30)
    row = conductor.get(eid)
    assert (row.status, row.last_error) == ("failed", ASYNC_OUTCOMES[kind][1])
    assert conductor.get(control).status == "completed"


@pytest.mark.django_db
def test_a_keyboard_interrupt_of_a_handler_is_retried_like_any_failure():
    eid = conductor.invoke("poison-interrupt-retried")
    drain(timeout=30)
    row = conductor.get(eid)
    assert (row.status, row.attempts, row.last_error) == ("failed", 2, "KeyboardInterrupt")


@pytest.mark.django_db(transaction=True)
def test_a_result_the_database_refuses_is_isolated_from_its_batch(monkeypatch):
    """complete_many fails for one row: the others are written, that one fails clearly."""
    ids = [conductor.invoke("poison-control", n) for n in range(3)]
    worker_id = uuid.uuid4()
    claimed = Execution.objects.claim(worker_id, None, 10, "default")
    assert sorted(c.id for c in claimed) == sorted(ids)
    real = state_execution.writes.complete_many

    def refusing(connection, table, items, *args, **kwargs):
        if any(result == "refused" for _, _, result in items):
            raise DataError("invalid input syntax for type json")
        return real(connection, table, items, *args, **kwargs)

    monkeypatch.setattr(state_execution.writes, "complete_many", refusing)
    batch = [(c.id, c.lease, "refused" if c.id == ids[1] else {"n": c.id}) for c in claimed]
    assert Completer(worker_id, "default", dead_after=30)._write(batch) == 3
    rows = {str(r.pk): r for r in Execution.objects.filter(pk__in=ids)}
    assert rows[ids[1]].status == "failed"
    assert rows[ids[1]].last_error == ("Could not store the result: DataError: invalid "
                                       "input syntax for type json")
    for eid in (ids[0], ids[2]):
        assert (rows[eid].status, rows[eid].result) == ("completed", {"n": eid})

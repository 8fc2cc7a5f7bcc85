"""Property: whatever payload, names, options and handler outcome, ``invoke`` gives a
clear error or a stored execution - nothing half-written, the caller's transaction
usable - and the worker ends the execution and still completes a control one (issue 23).

Bounded for a small machine: a few dozen examples, each one transaction on the test
database (SQLite or PostgreSQL), run by ``testing.drain``.
"""

from __future__ import annotations

import json
import math
from datetime import timedelta

import pytest
from django.db import transaction
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

import conductor_django as conductor
from conductor_django import TaskNotFound
from conductor_django.models import Execution, Step
from conductor_django.testing import drain
from tests.testapp.poison_tasks import OUTCOMES

pytestmark = pytest.mark.django_db

BOUNDED = settings(max_examples=40, deadline=None, derandomize=True,
                   suppress_health_check=[HealthCheck.function_scoped_fixture,
                                          HealthCheck.too_slow, HealthCheck.data_too_large])

# text with what databases refuse: NUL, lone surrogates, long strings
texts = st.one_of(
    st.text(max_size=12),
    st.text(alphabet=st.sampled_from(["a", "\x00", "\ud800", "\udfff", "é", "\U0001f600"]),
            max_size=6),
    st.integers(min_value=95, max_value=260).map(lambda n: "k" * n),
)
numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), numbers, texts),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(texts, inner, max_size=3)),
    max_leaves=12,
)
deep = st.integers(min_value=95, max_value=2_000).map(lambda n: _nest(n))
durations = st.one_of(st.none(), numbers,
                      st.sampled_from([timedelta.max, timedelta(days=-1), "1"]))


def _nest(levels):
    value: list = []
    for _ in range(levels):
        value = [value]
    return value


options = st.fixed_dictionaries({}, optional={
    "priority": numbers,
    "delay": durations,
    "dedupe_key": st.one_of(st.none(), texts),
    "queue": st.one_of(st.none(), texts),
    "throttle": durations,
    "debounce": durations,
})


@BOUNDED
@given(name=st.one_of(st.just("echo"), texts), payload=st.one_of(json_values, deep),
       opts=options)
def test_invoke_gives_a_clear_error_or_a_stored_execution(name, payload, opts):
    before = Execution.objects.count()
    with transaction.atomic():
        try:
            eid = conductor.invoke(name, payload, **opts)
        except (TaskNotFound, ValueError, TypeError) as exc:
            assert str(exc)  # a message, naming what was wrong
            assert Execution.objects.count() == before  # nothing half-written
        else:
            row = conductor.get(eid)
            assert row.task_name == name and row.payload == _normal(payload)
        # the caller's transaction is usable either way
        assert conductor.get(conductor.invoke("echo", {"after": 1})).payload == {"after": 1}
        transaction.set_rollback(True)


def _normal(value):
    """What JSON storage gives back (tuples as lists)."""
    return json.loads(json.dumps(value))


outcomes = st.one_of(
    st.sampled_from(sorted(OUTCOMES)).map(lambda kind: ("kind", kind)),
    json_values.map(lambda value: ("result", value)),
    st.tuples(texts, json_values).map(lambda pair: ("step", pair)),
)


@BOUNDED
@given(outcome=outcomes)
def test_any_handler_outcome_ends_its_execution_and_the_worker_goes_on(outcome):
    kind, value = outcome
    with transaction.atomic():
        if kind == "kind":
            eid = conductor.invoke("poison", {"kind": value})
        else:
            eid = conductor.invoke("poison-generated", {"kind": kind})
            GENERATED[eid] = value
        control = conductor.invoke("poison-control", "control")
        drain(timeout=30)
        row = conductor.get(eid)
        assert row.status in Execution.FINAL, (outcome, row.status)
        assert row.attempts == 1
        if row.status == "failed":
            assert row.last_error  # a clear error, stored
        else:
            assert Step.objects.filter(execution_id=eid).count() <= 1
        assert conductor.get(control).status == "completed"
        transaction.set_rollback(True)
    GENERATED.pop(eid, None)


GENERATED: dict[str, object] = {}


@conductor.task(name="poison-generated", max_attempts=1)
def generated(event, ctx):
    value = GENERATED[event.execution_id]
    if event.payload["kind"] == "step":
        name, result = value
        return ctx.step(name, lambda: result)
    return value


def test_the_strategies_reach_the_refused_values():
    """The generators are not vacuous: they produce what the rules refuse."""
    assert math.isnan(find(numbers, lambda n: isinstance(n, float) and math.isnan(n)))
    assert "\x00" in find(texts, lambda t: "\x00" in t)
    assert find(texts, lambda t: any("\ud800" <= c <= "\udfff" for c in t))
    assert len(find(texts, lambda t: len(t) > 255)) > 255
    assert find(numbers, lambda n: isinstance(n, int) and n >= 2**31) >= 2**31

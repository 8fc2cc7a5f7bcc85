"""OpenTelemetry traces (docs/observability.md): the invoker's trace context is stored with
the execution; each attempt is a span under it, each step a span under the attempt."""

from __future__ import annotations

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)

import conductor_django as conductor  # noqa: E402
from conductor_django import tracing  # noqa: E402
from conductor_django.models import Execution  # noqa: E402
from conductor_django.testing import drain  # noqa: E402
from tests.conftest import poll  # noqa: E402


@pytest.fixture
def exporter(monkeypatch):
    """conductor's spans go to an in-memory exporter (OpenTelemetry's global provider can
    be set once per process, so the test sets ``tracing.provider``)."""
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    monkeypatch.setattr(tracing, "provider", provider)
    yield spans
    provider.shutdown()


def _attempts(spans):
    return sorted((s for s in spans if s.name.startswith("conductor.run ")),
                  key=lambda s: s.attributes["conductor.attempt"])


def _steps_of(spans, attempt):
    return [s for s in spans if s.name.startswith("conductor.step ")
            and s.parent is not None and s.parent.span_id == attempt.context.span_id]


@pytest.mark.django_db(transaction=True)
def test_each_attempt_is_a_span_under_the_callers_trace_with_its_steps(exporter):
    caller = tracing.provider.get_tracer("the-web-app")
    with caller.start_as_current_span("POST /orders") as request:
        eid = conductor.invoke("steps-then-fail", {"key": "t1"})
    stored = Execution.objects.get(pk=eid).trace_context
    assert stored["traceparent"].split("-")[1] == format(request.get_span_context().trace_id,
                                                        "032x")
    drain()
    assert Execution.objects.get(pk=eid).status == "completed"

    spans = exporter.get_finished_spans()
    attempts = _attempts(spans)
    assert [a.attributes["conductor.attempt"] for a in attempts] == [1, 2, 3]
    trace_id = request.get_span_context().trace_id
    for attempt in attempts:
        assert attempt.context.trace_id == trace_id  # joins the caller's trace
        assert attempt.parent.span_id == request.get_span_context().span_id
        assert attempt.attributes["conductor.execution_id"] == eid
        assert attempt.attributes["conductor.task"] == "steps-then-fail"
    assert [a.attributes["conductor.outcome"] for a in attempts] == [
        "retrying", "retrying", "completed"]
    assert not attempts[0].status.is_ok and attempts[2].status.is_ok

    steps = [[(s.attributes["conductor.step"], s.attributes["conductor.step.memoized"])
              for s in _steps_of(spans, a)] for a in attempts]
    # step a runs once and is memoized after; step b fails twice, then runs
    assert steps == [[("a", False), ("b", False)], [("a", True), ("b", False)],
                     [("a", True), ("b", False)]]
    assert all(s.context.trace_id == trace_id for s in spans if s.name != "POST /orders")


@pytest.mark.django_db(transaction=True)
def test_one_attempt_one_span_and_a_timeout_event(exporter):
    with tracing.provider.get_tracer("t").start_as_current_span("caller") as caller:
        eid = conductor.invoke("timeout-task", {"key": "t2"})
    drain()
    assert Execution.objects.get(pk=eid).status == "failed"
    attempts = _attempts(exporter.get_finished_spans())
    assert len(attempts) == 2
    for attempt in attempts:
        assert attempt.context.trace_id == caller.get_span_context().trace_id
        assert [e.name for e in attempt.events] == ["conductor.timeout"]
        assert "Timed out" in attempt.events[0].attributes["conductor.reason"]


@pytest.mark.django_db(transaction=True)
def test_a_durable_sleep_ends_the_attempt_span_with_a_suspended_event(exporter):
    eid = conductor.invoke("nap", {"key": "t3", "seconds": 0.2})  # no caller span
    assert Execution.objects.get(pk=eid).trace_context is None

    def finished():
        with tracing.provider.get_tracer("t").start_as_current_span("the test, draining"):
            drain()  # the attempt does not become a child of the span around the worker
        return Execution.objects.get(pk=eid).status == "completed"

    poll(finished, timeout=20, interval=0.1, message="the nap resumed and completed")
    attempts = [s for s in exporter.get_finished_spans() if s.name == "conductor.run nap"]
    assert [a.attributes["conductor.outcome"] for a in attempts] == ["suspended", "completed"]
    assert [e.name for e in attempts[0].events] == ["conductor.suspended"]
    steps = [s for s in exporter.get_finished_spans() if s.name.startswith("conductor.step ")]
    assert [(s.attributes["conductor.step"], s.attributes["conductor.step.memoized"])
            for s in steps] == [("before", False), ("before", True), ("after", False)]
    assert attempts[0].parent is None and attempts[1].parent is None  # root spans


@pytest.mark.django_db(transaction=True)
def test_without_a_tracer_provider_nothing_is_captured_or_read():
    assert not tracing.enabled()  # the API and SDK are installed, no provider is set
    eid = conductor.invoke("echo", {"n": 1})
    assert Execution.objects.get(pk=eid).trace_context is None
    drain()
    assert Execution.objects.get(pk=eid).status == "completed"

"""OpenTelemetry traces (extra ``[otel]``): the only module that imports ``opentelemetry``.

* ``carrier()``: the caller's trace context at ``invoke()`` (W3C ``traceparent``), stored
  with the execution (``Execution.trace_context``).
* ``attempt(...)``: one span per attempt of an execution, a child of the stored context,
  current on the handler's thread while the handler runs.
* ``step(...)``: one child span per ``ctx.step`` (memoized or not).

Without ``opentelemetry`` installed every function returns at its first line. With the
API installed but no SDK ``TracerProvider`` configured, ``enabled()`` is false and no
span is made (the attempt does not read the stored context either).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from typing import Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.trace import ProxyTracerProvider, SpanKind, Status, StatusCode
except ImportError:  # pragma: no cover - the [otel] extra is not installed
    trace = None  # type: ignore[assignment]

#: ``None``: OpenTelemetry's global tracer provider. Set to a ``TracerProvider`` to send
#: conductor's spans elsewhere (the tests use an in-memory exporter this way).
provider: Any = None

TRACER_NAME = "conductor_django"
INSTALLED = trace is not None


#: provider -> conductor's tracer of that provider (the global one is set once per process)
_tracers: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def enabled() -> bool:
    """Spans are recorded: the API is installed and a real tracer provider is set."""
    if trace is None:
        return False
    current = provider if provider is not None else trace.get_tracer_provider()
    return not isinstance(current, ProxyTracerProvider | trace.NoOpTracerProvider)


def carrier() -> dict[str, str] | None:
    """The current trace context as W3C headers, or ``None`` outside a sampled span."""
    if trace is None or not trace.get_current_span().get_span_context().is_valid:
        return None
    headers: dict[str, str] = {}
    propagate.inject(headers)
    return headers or None


def _tracer() -> Any:
    current = provider if provider is not None else trace.get_tracer_provider()
    tracer = _tracers.get(current)
    if tracer is None:
        tracer = _tracers[current] = current.get_tracer(TRACER_NAME)
    return tracer


class Attempt:
    """The span of one attempt; ``end(outcome)`` closes it (see ``runtime.telemetry``)."""

    def __init__(self, span: Any, token: Any) -> None:
        self.span = span
        self._token = token

    def event(self, name: str, attributes: Mapping[str, Any] | None = None) -> None:
        self.span.add_event(name, dict(attributes or {}))

    def detach(self) -> None:
        """The handler's thread leaves the attempt's context (idempotent)."""
        if self._token is not None:
            otel_context.detach(self._token)
            self._token = None

    def end(self, outcome: str, error: str | None = None) -> None:
        self.detach()
        self.span.set_attribute("conductor.outcome", str(outcome))
        if error:
            self.span.set_status(Status(StatusCode.ERROR, error))
        self.span.end()


def start_attempt(name: str, parent: Mapping[str, str] | None,
                  attributes: Mapping[str, Any]) -> Attempt | None:
    """Start the span of an attempt under ``parent`` (a stored ``carrier()``) and make it
    current on this thread; ``None`` when tracing is off."""
    if not enabled():
        return None
    # no stored context: a root span (not a child of whatever runs the worker loop)
    under = (propagate.extract(dict(parent)) if isinstance(parent, Mapping) and parent
             else otel_context.Context())
    span = _tracer().start_span(name, context=under, kind=SpanKind.CONSUMER,
                                attributes=dict(attributes))
    token = otel_context.attach(trace.set_span_in_context(span))
    return Attempt(span, token)


def step(name: str, attributes: Mapping[str, Any]) -> Any:
    """A context manager: the span of one step, a child of the current attempt's."""
    if not enabled():
        return nullcontext()
    return _step(name, attributes)


@contextmanager
def _step(name: str, attributes: Mapping[str, Any]) -> Iterator[Any]:
    with _tracer().start_as_current_span(name, attributes=dict(attributes)) as span:
        yield span

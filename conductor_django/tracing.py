"""OpenTelemetry traces (extra ``[otel]``): the only module that imports ``opentelemetry``.

* ``carrier()``: the caller's trace context at ``invoke()`` (W3C ``traceparent`` and
  ``tracestate``), stored with the execution (``Execution.trace_context``). Baggage
  (client-supplied data of the invoking request) is left out unless the project opts in
  (``CONDUCTOR["TRACE_BAGGAGE"]``, passed as ``baggage=True``).
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


#: The W3C trace context headers; ``baggage`` is kept only when the project opts in.
TRACE_HEADERS = ("traceparent", "tracestate")
BAGGAGE_HEADER = "baggage"
#: Longest header value kept from a stored context (W3C: tracestate <= 512 bytes,
#: baggage <= 8192 bytes).
HEADER_LENGTH = 8192


def carrier(baggage: bool = False) -> dict[str, str] | None:
    """The current trace context as W3C headers, or ``None`` outside a sampled span."""
    if trace is None or not trace.get_current_span().get_span_context().is_valid:
        return None
    headers: dict[str, str] = {}
    propagate.inject(headers)
    return headers_of(headers, baggage)


def headers_of(stored: Any, baggage: bool = False) -> dict[str, str] | None:
    """The trace context headers of ``stored`` (a carrier, or a row's ``trace_context``
    as read back): the known headers whose value is a str, nothing else."""
    if not isinstance(stored, Mapping):
        return None
    names = (*TRACE_HEADERS, BAGGAGE_HEADER) if baggage else TRACE_HEADERS
    kept = {name: stored[name] for name in names
            if isinstance(stored.get(name), str) and len(stored[name]) <= HEADER_LENGTH}
    return kept or None


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


def start_attempt(name: str, parent: Any, attributes: Mapping[str, Any],
                  baggage: bool = False) -> Attempt | None:
    """Start the span of an attempt under ``parent`` (a stored ``carrier()``) and make it
    current on this thread; ``None`` when tracing is off. A stored context that is not
    one (a hand-edited row: a header that is not a str, junk a propagator refuses) is
    ignored: the attempt gets a root span and runs."""
    if not enabled():
        return None
    headers = headers_of(parent, baggage)
    under = otel_context.Context()  # no context: a root span, not a child of the loop's
    if headers:
        try:
            under = propagate.extract(headers)
        except Exception:  # noqa: BLE001 - a propagator may fail on any junk
            under = otel_context.Context()
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

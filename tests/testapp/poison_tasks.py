"""Handlers that do everything a handler should not (tests/test_poison*.py).

``poison`` does what ``event.payload["kind"]`` says; each kind must fail only its own
execution, with a clear ``last_error``, and leave the worker serving the others.
"""

import math

from conductor_django import Cancelled, task


class StrRaises(Exception):  # noqa: N818 - named for what it does
    def __str__(self):
        raise RuntimeError("no message for you")


class CustomBase(BaseException):  # noqa: N818
    pass


def _deep(levels):
    value: list = []
    for _ in range(levels):
        value = [value]
    return value


OUTCOMES = {
    "nul-result": lambda ctx: "a\x00b",
    "surrogate-result": lambda ctx: {"text": "\ud800"},
    "deep-result": lambda ctx: _deep(10_000),
    "nan-result": lambda ctx: math.nan,
    "object-result": lambda ctx: object(),
    "str-raises": lambda ctx: _raise(StrRaises()),
    "nul-exception": lambda ctx: _raise(ValueError("bad\x00byte")),
    "surrogate-exception": lambda ctx: _raise(ValueError("bad \ud800")),
    "nul-step-name": lambda ctx: ctx.step("a\x00b", lambda: 1),
    "long-step-name": lambda ctx: ctx.step("s" * 256, lambda: 1),
    "surrogate-step-name": lambda ctx: ctx.step("\udc80", lambda: 1),
    "nul-step-result": lambda ctx: ctx.step("s", lambda: "a\x00b"),
    "surrogate-step-result": lambda ctx: ctx.step("s", lambda: ["\ud800"]),
    "cancelled-int": lambda ctx: _raise(Cancelled(123)),
    "sleep-nan": lambda ctx: ctx.sleep("z", math.nan),
    "sleep-inf": lambda ctx: ctx.sleep("z", math.inf),
    "system-exit": lambda ctx: _raise(SystemExit(3)),
    "base-exception": lambda ctx: _raise(CustomBase("mine")),
}

#: The ``last_error`` each kind ends with (a fragment of it), and its final status.
EXPECTED = {
    "nul-result": ("failed", "NUL character"),
    "surrogate-result": ("failed", "lone surrogate"),
    "deep-result": ("failed", "nests deeper than"),
    "nan-result": ("failed", "not JSON-serializable"),
    "object-result": ("failed", "not JSON-serializable: object"),
    "str-raises": ("failed", "StrRaises: <unprintable message: str() raised RuntimeError>"),
    "nul-exception": ("failed", "ValueError: bad\\x00byte"),
    "surrogate-exception": ("failed", "ValueError: bad \\ud800"),
    "nul-step-name": ("failed", "step name contains a NUL character"),
    "long-step-name": ("failed", "step name must be a non-empty str of at most 255"),
    "surrogate-step-name": ("failed", "step name contains a lone surrogate"),
    "nul-step-result": ("failed", "result of step 's' contains a NUL character"),
    "surrogate-step-result": ("failed", "result of step 's' at [0] contains a lone surrogate"),
    "cancelled-int": ("cancelled", "123"),
    "sleep-nan": ("failed", "sleep duration must be a number of seconds, got NaN"),
    "sleep-inf": ("failed", "sleep duration must be at most"),
    "system-exit": ("failed", "SystemExit: 3"),
    "base-exception": ("failed", "CustomBase: mine"),
}


def _raise(exc):
    raise exc


@task(name="poison", max_attempts=1)
def poison(event, ctx):
    return OUTCOMES[event.payload["kind"]](ctx)


@task(name="poison-control", max_attempts=1)
def control(event, ctx):
    return {"ok": event.payload}


@task(name="poison-backoff-str", max_attempts=3, backoff=lambda attempt: "soon")
def backoff_str(event, ctx):
    raise RuntimeError("first failure")


@task(name="poison-backoff-nan", max_attempts=3, backoff=lambda attempt: math.nan)
def backoff_nan(event, ctx):
    raise RuntimeError("first failure")


@task(name="poison-backoff-raises", max_attempts=3, backoff=lambda attempt: 1 / 0)
def backoff_raises(event, ctx):
    raise RuntimeError("first failure")

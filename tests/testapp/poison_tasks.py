"""Handlers that do everything a handler should not (tests/test_poison*.py).

``poison`` does what ``event.payload["kind"]`` says; each kind must fail only its own
execution, with a clear ``last_error``, and leave the worker serving the others.
"""

import asyncio
import math
import sys

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
    "keyboard-interrupt": lambda ctx: _raise(KeyboardInterrupt()),
    "generator-exit": lambda ctx: _raise(GeneratorExit("closing")),
    "step-keyboard-interrupt": lambda ctx: ctx.step("s", lambda: _raise(KeyboardInterrupt())),
    "step-system-exit": lambda ctx: ctx.step("s", lambda: sys.exit(4)),
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
    "keyboard-interrupt": ("failed", "KeyboardInterrupt"),
    "generator-exit": ("failed", "GeneratorExit: closing"),
    "step-keyboard-interrupt": ("failed", "KeyboardInterrupt"),
    "step-system-exit": ("failed", "SystemExit: 4"),
}


async def _araise(exc):
    await asyncio.sleep(0)
    raise exc


async def _gathered(ctx):
    return await asyncio.gather(ctx.step("a", lambda: _araise(SystemExit(6))),
                                ctx.step("b", lambda: asyncio.sleep(0, 1)))


#: What ``poison-async`` does: every ``BaseException`` an ``async def`` handler (or a step
#: it awaits) can raise, with the ``last_error`` it ends with (failed).
ASYNC_OUTCOMES = {
    "system-exit": (lambda ctx: _araise(SystemExit(3)), "SystemExit: 3"),
    "keyboard-interrupt": (lambda ctx: _araise(KeyboardInterrupt()), "KeyboardInterrupt"),
    "generator-exit": (lambda ctx: _araise(GeneratorExit("closing")), "GeneratorExit: closing"),
    "base-exception": (lambda ctx: _araise(CustomBase("mine")), "CustomBase: mine"),
    "step-system-exit": (lambda ctx: ctx.step("s", lambda: sys.exit(4)), "SystemExit: 4"),
    "step-keyboard-interrupt": (
        lambda ctx: ctx.step("s", lambda: _araise(KeyboardInterrupt())), "KeyboardInterrupt"),
    "atomic-step-system-exit": (
        lambda ctx: ctx.step("s", lambda: sys.exit(5), atomic=True), "SystemExit: 5"),
    "gathered-system-exit": (_gathered, "SystemExit: 6"),
}


def _raise(exc):
    raise exc


@task(name="poison", max_attempts=1)
def poison(event, ctx):
    return OUTCOMES[event.payload["kind"]](ctx)


@task(name="poison-async", max_attempts=1)
async def poison_async(event, ctx):
    return await ASYNC_OUTCOMES[event.payload["kind"]][0](ctx)


@task(name="poison-async-control", max_attempts=1)
async def async_control(event, ctx):
    await asyncio.sleep(0)
    return {"ok": event.payload}


@task(name="poison-interrupt-retried", max_attempts=2, backoff=lambda attempt: 0)
def interrupt_retried(event, ctx):
    raise KeyboardInterrupt


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

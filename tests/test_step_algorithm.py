"""``ctx.step`` is one algorithm (``runtime/steps.py``) with two drivers: the thread-run
``Context``'s and the ``AsyncContext``'s. Both perform the same effects in the same
order, hand every value back and throw every error back into the plan; the async side
reaches no private member of ``Context`` (the step's memory is the ``StepBook``)."""

import asyncio
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from conductor_django.runtime import steps
from conductor_django.runtime.aio_context import AsyncContext


def _plan(log):
    """A plan of each kind of effect; it records what came back, errors included."""
    got = yield steps.Db(lambda: log.append("boundary") or (False, None),
                         local=lambda: False)
    log.append(("boundary ->", got))
    value = yield steps.Call(lambda: log.append("fn") or 41)
    try:
        yield steps.Db(lambda: 1 / 0, settle=True)
    except ZeroDivisionError:
        log.append("the plan saw the error")
    stored = yield steps.Db(lambda: log.append("save") or value + 1, settle=True)
    return stored


def _failing_plan(log):
    try:
        yield steps.Call(lambda: (_ for _ in ()).throw(KeyError("boom")))
    finally:
        log.append("span closed")


def _async_driver():
    async def db(work):
        return work()

    stub = SimpleNamespace(_runtime=SimpleNamespace(using="default"))
    return AsyncContext(stub, db, inline=True)  # inline: a plain fn runs through ``db``


def test_both_drivers_perform_the_same_effects_in_the_same_order():
    sync_log, async_log = [], []
    assert steps.run(_plan(sync_log)) == 42
    assert asyncio.run(_async_driver()._drive(_plan(async_log))) == 42
    assert sync_log == async_log == [
        "boundary", ("boundary ->", (False, None)), "fn", "the plan saw the error", "save"]


def test_both_drivers_raise_an_error_the_plan_does_not_handle_after_its_span():
    sync_log, async_log = [], []
    with pytest.raises(KeyError, match="boom"):
        steps.run(_failing_plan(sync_log))
    with pytest.raises(KeyError, match="boom"):
        asyncio.run(_async_driver()._drive(_failing_plan(async_log)))
    assert sync_log == async_log == ["span closed"]


def test_a_step_function_raising_stopiteration_raises_it_unchanged():
    def stop():
        raise StopIteration("done")

    def plan():
        yield steps.Call(stop)

    with pytest.raises(StopIteration):  # not PEP 479's RuntimeError
        steps.run(plan())


def test_the_async_context_reaches_no_private_member_of_context():
    source = Path(steps.__file__).with_name("aio_context.py").read_text()
    assert not re.findall(r"\b(?:ctx|sync)\._(?!runtime\b)\w+", source)
    assert "steps.plan(self.sync" in source  # it drives the one plan

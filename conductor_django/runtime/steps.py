"""``ctx.step``, written once: the algorithm (``plan``) and its two drivers, one for the
thread-run ``Context`` (``run``) and one for the ``AsyncContext`` of an ``async def``
handler (``AsyncContext._drive``, in ``aio_context.py``).

The plan makes every decision of a step, in order: the boundary before it (lease,
cancel, timeout, shutdown, window: ``Context.checkpoint``; the steps loaded once; the
name marked reached, for ``ctx.patched``; progress that is due flushed), the memoized
result if there is one, else ``fn`` run, its result refused if the attempt was aborted
meanwhile (``fn`` may have stopped half-way: the retry runs it again), checked as JSON,
stored fenced by the lease (retried across a database fault: ``fn`` ran), and memoized.
An ``atomic`` step runs ``fn`` and its record in one transaction instead. The telemetry
span wraps the step.

What the plan cannot do itself it yields as an effect, and the driver performs it and
sends its value back (or throws its exception in, so the span sees it):

* ``Db``: work on conductor's database (the boundary, the save, an atomic step). The
  sync driver does it on the handler's thread; the async driver on a database thread
  of the loop, awaiting a write to its end even if the handler's task is interrupted
  meanwhile (``settle``), or on the loop itself when the boundary needs no database
  (``local``: the lease surely holds, the steps are loaded and nothing is due).
* ``Call``: the step's function. The sync driver calls it; the async driver awaits an
  ``async def`` function on the loop and runs a plain one in a thread.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.utils import timezone

from ..definitions.values import STEP_NAME_LENGTH, check_json_text, check_text
from ..exceptions import LeaseLost
from ..models import Step
from ..store.transactions import write_transaction
from . import LOST, telemetry
from .atomic import only_database
from .retry import retry_write

if TYPE_CHECKING:
    from .context import Context


@dataclass(frozen=True, slots=True)
class Db:
    """Work on conductor's database; returns its value."""

    work: Callable[[], Any]
    settle: bool = False  # a write: once begun, it is awaited to its end
    local: Callable[[], bool] | None = None  # whether it may run without a database thread


@dataclass(frozen=True, slots=True)
class Call:
    """The step's function; returns its value."""

    fn: Callable[[], Any]


Effect = Db | Call
Plan = Generator[Effect, Any, Any]

#: Types whose values JSON stores and reads back unchanged, type included (exact types:
#: a subclass, e.g. an ``IntEnum``, reads back as its base type).
SAME_AFTER_JSON = frozenset({type(None), bool, int, float, str})


def check_name(name: str) -> None:
    check_text(name, "step name", STEP_NAME_LENGTH)


def lease_surely_holds(ctx: Context) -> bool:
    """Whether a boundary of ``ctx`` needs no database to check the lease (``Runtime``)."""
    runtime = ctx._runtime
    return not runtime.inline and runtime.lease_fresh()


class StepBook:
    """The steps of one attempt of one execution (``Context._book``): loaded once, the
    names this attempt reached (``ctx.patched``), and the parts a step is made of."""

    def __init__(self, ctx: Context, may_exist: bool) -> None:
        self.ctx = ctx
        self.loaded: dict[str, Any] | None = None if may_exist else {}
        self.seen: set[str] = set()

    def load(self) -> dict[str, Any]:
        if self.loaded is None:
            ctx = self.ctx
            db = ctx._runtime.using
            self.loaded = retry_write(lambda: Step.objects.load(ctx.execution_id, db), db,
                                      "loading steps")
        return self.loaded

    def enter(self, name: str) -> tuple[bool, Any]:
        """The boundary before the step ``name``: ``(True, its stored result)`` when it is
        memoized, else ``(False, None)`` with the progress that is due flushed."""
        self.ctx.checkpoint()
        stored = self.load()
        self.seen.add(name)
        if name in stored:
            return True, stored[name]
        self.ctx._progress.flush(due_only=True)
        return False, None

    def is_local(self, name: str) -> bool:
        """Whether ``enter(name)`` needs no database now: the lease surely holds, the
        steps are loaded, and ``name`` is memoized or no progress is due."""
        return lease_surely_holds(self.ctx) and self.loaded is not None and (
            name in self.loaded or self.ctx._progress.idle())

    def result(self, name: str, value: Any) -> tuple[Any, str]:
        """``fn`` returned ``value``: not memoized if the attempt was aborted meanwhile
        (``fn`` may have returned early); ``(the value as it reads back, its JSON)``."""
        self.ctx.signal.raise_if_aborted()
        text = check_json_text(value, f"result of step {name!r}")
        if type(value) in SAME_AFTER_JSON:  # reads back as itself: no need to parse it
            return value, text
        return json.loads(text), text  # replays return exactly what was stored

    def save(self, name: str, value: Any, started: Any, text: str | None) -> Any:
        """Store the step, fenced by the lease (on this thread's connection)."""
        ctx = self.ctx
        runtime = ctx._runtime
        try:
            return Step.objects.remember(ctx.execution_id, name, value, started, runtime.using,
                                         text, worker_id=runtime.worker_id, lease=ctx.lease)
        except LeaseLost:
            ctx.signal.abort(LOST, "the execution was recovered from this worker")
            raise

    def store(self, name: str, value: Any, started: Any, text: str | None) -> Any:
        """``save``, retried across a database fault: ``fn`` ran, its result is kept."""
        ctx = self.ctx
        return retry_write(lambda: self.save(name, value, started, text), ctx._runtime.using,
                           f"saving step {name!r} of {ctx.execution_id}")

    def atomic(self, name: str, fn: Callable[[], Any], started: Any) -> Any:
        """Run ``fn`` and save its result in one transaction (``step(atomic=True)``)."""
        db = self.ctx._runtime.using
        with write_transaction(db), only_database(db, f"atomic step {name!r}"):
            value, text = self.result(name, fn())
            return self.save(name, value, started, text)

    def memoize(self, name: str, stored: Any) -> None:
        self.load()[name] = stored


def plan(ctx: Context, name: str, fn: Callable[[], Any], atomic: bool) -> Plan:
    """The step ``name`` of ``ctx`` (the thread-side context), as a generator of effects
    whose return value is the step's result."""
    book = ctx._book
    found, value = yield Db(lambda: book.enter(name), local=lambda: book.is_local(name))
    if found:
        with telemetry.step(ctx, name, memoized=True):
            return value
    with telemetry.step(ctx, name, memoized=False):  # the step's span, if tracing
        started = timezone.now()
        if atomic:
            stored = yield Db(lambda: book.atomic(name, fn, started), settle=True)
        else:
            value, text = book.result(name, (yield Call(fn)))
            stored = yield Db(lambda: book.store(name, value, started, text), settle=True)
    book.memoize(name, stored)
    return stored


def run(steps: Plan) -> Any:
    """Drive ``steps`` on this thread (the thread-run handler's ``ctx.step``)."""
    effect = next(steps)
    while True:
        try:
            value = effect.work() if isinstance(effect, Db) else effect.fn()
        except StopIteration:  # thrown into a generator it would become a RuntimeError
            steps.close()
            raise
        except BaseException as exc:  # noqa: BLE001 - the plan's span sees it, then it re-raises
            effect = steps.throw(exc)
            continue
        try:
            effect = steps.send(value)
        except StopIteration as done:
            return done.value

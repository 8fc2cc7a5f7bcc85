"""The module-level API: ``invoke``, ``invoke_many``, ``get``, ``wait``, ``send_signal``
(``cancel`` lives in ``cancellation``).

Everything a call writes is validated first: bad input raises before any row is
written, so the caller's transaction stays usable.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, connections, router
from django.utils import timezone

from . import conf, tracing
from .definitions.registry import Task, get_task
from .definitions.values import (
    FLOW_KEY_LENGTH,
    KEY_LENGTH,
    QUEUE_LENGTH,
    as_uuid,
    check_aware,
    check_int,
    check_json_text,
    check_text,
    to_seconds,
)
from .exceptions import ExecutionCancelled, ExecutionFailed
from .models import Execution, FlowSlot, Signal
from .state.birth import Birth, birth
from .store import inserts, wakeup
from .store.inserts import Invocation
from .store.transactions import retry_locked, write_transaction

OPTIONS = ("payload", "dedupe_key", "priority", "run_at", "delay", "queue", "throttle", "debounce",
           "key")
_OPTION_SET = frozenset(OPTIONS)
#: ``invoke_many`` items with these keys only share every other option's checked value.
_PAYLOAD_ONLY = frozenset({"payload"})


@dataclass(slots=True)
class NewExecution:
    """A validated execution, not yet written."""

    task: Task
    payload: Any
    dedupe_key: str | None
    priority: int
    run_at: datetime
    queue: str
    key: str | None = None  # the flow-control key (task key_concurrency, rate_limit)
    # flow control: seconds (see insert_throttled, insert_debounced)
    throttle: float | None = None
    debounce: float | None = None
    payload_text: str | None = None  # the payload as JSON, once checked
    trace_context: dict[str, str] | None = None  # the invoker's span (tracing.carrier)

    def with_payload(self, payload: Any) -> NewExecution:
        """The same invocation with another payload, checked as ``prepare`` checks it."""
        return NewExecution(
            task=self.task, payload=payload, dedupe_key=self.dedupe_key,
            priority=self.priority, run_at=self.run_at, queue=self.queue, key=self.key,
            throttle=self.throttle, debounce=self.debounce,
            payload_text=check_json_text(payload), trace_context=self.trace_context)

    def payload_json(self) -> str:
        if self.payload_text is None:
            self.payload_text = json.dumps(self.payload, allow_nan=False)
        return self.payload_text

    def birth(self, **extra: Any) -> Birth:
        """Its initial columns (``state.birth``); ``extra``: parent, schedule, event."""
        return birth(self.task, self.payload, queue=self.queue, priority=self.priority,
                     run_at=self.run_at, dedupe_key=self.dedupe_key, key=self.key,
                     trace_context=self.trace_context, **extra)

    def build(self, **extra: Any) -> Execution:
        return self.birth(**extra).row(Execution)

    def shares_birth(self, other: NewExecution) -> bool:
        """Whether it differs from ``other`` by its payload only (``with_payload``)."""
        return (self.task is other.task and self.queue is other.queue
                and self.run_at is other.run_at and self.priority == other.priority
                and self.key is other.key and self.trace_context is other.trace_context
                and self.dedupe_key is other.dedupe_key)


def prepare(
    task: str | Task,
    payload: Any = None,
    *,
    dedupe_key: str | None = None,
    priority: int = 0,
    run_at: datetime | None = None,
    delay: float | timedelta | None = None,
    queue: str | None = None,
    throttle: float | timedelta | None = None,
    debounce: float | timedelta | None = None,
    key: str | None = None,
    now: datetime | None = None,
    direct: bool = True,
) -> NewExecution:
    """Validate one invocation; raises ``TaskNotFound``, ``ValueError`` or ``TypeError``."""
    t = get_task(task)
    if direct and not t.invocable:
        raise ValueError(f"task {t.name!r} is not invocable (it was defined with invocable=False)")
    payload_text = check_json_text(payload)
    if dedupe_key is not None:
        check_text(dedupe_key, "dedupe_key", KEY_LENGTH)
    if key is not None:
        check_text(key, "key", FLOW_KEY_LENGTH)
    check_int(priority, "priority")  # an ``integer`` column
    if queue is not None:
        check_text(queue, "queue", QUEUE_LENGTH)
    now = now or timezone.now()
    if run_at is not None and delay is not None:
        raise ValueError("pass run_at or delay, not both")
    if run_at is not None:
        when = check_aware(run_at)
    else:
        when = now + timedelta(seconds=to_seconds(delay, "delay") or 0.0)
    # flow control
    throttle_s, debounce_s = _flow_seconds(throttle, debounce, run_at, delay)
    if debounce_s is not None:
        when = now + timedelta(seconds=debounce_s)
    return NewExecution(
        task=t,
        payload=payload,
        dedupe_key=dedupe_key,
        priority=priority,
        run_at=when,
        queue=queue or t.get_queue(),
        key=key,
        throttle=throttle_s,
        debounce=debounce_s,
        payload_text=payload_text,
        trace_context=tracing.carrier(conf.get("TRACE_BAGGAGE") is True),
    )


def _flow_seconds(
    throttle: Any, debounce: Any, run_at: Any, delay: Any
) -> tuple[float | None, float | None]:
    throttle_s = to_seconds(throttle, "throttle")
    debounce_s = to_seconds(debounce, "debounce")
    if throttle_s is not None and debounce_s is not None:
        raise ValueError("pass throttle or debounce, not both")
    if debounce_s is not None and (run_at is not None or delay is not None):
        raise ValueError("debounce sets the run time itself: do not pass run_at or delay with it")
    for name, value in (("throttle", throttle_s), ("debounce", debounce_s)):
        if value is not None and value <= 0:
            raise ValueError(f"{name} must be a positive number of seconds, got {value:g}")
    return throttle_s, debounce_s


def insert_any(new: NewExecution, using: str) -> str:
    """Write one execution through its throttle or debounce, or plainly (``insert``)."""
    if new.throttle is not None:
        return insert_throttled(new, new.throttle, using)
    if new.debounce is not None:
        return insert_debounced(new, new.debounce, using)
    return insert(new, using)


def insert(new: NewExecution, using: str, **extra: Any) -> str:
    """Write one execution (one INSERT); with a ``dedupe_key``, return a running twin's id."""
    if new.dedupe_key is None and set(extra) <= set(inserts.EXTRA_COLUMNS):
        return insert_plain([new], using, **extra)[0]
    if new.dedupe_key is None:
        row = new.build(**extra)
        row.save(using=using, force_insert=True)
        return str(row.pk)
    for _ in range(10):
        row = new.build(**extra)
        try:
            with write_transaction(using):  # a savepoint inside the caller's transaction
                row.save(using=using, force_insert=True)
            return str(row.pk)
        except IntegrityError:
            existing = (
                Execution.objects.using(using)
                .filter(task_name=new.task.name, dedupe_key=new.dedupe_key,
                        status__in=Execution.UNFINISHED)
                .values_list("pk", flat=True)
                .first()
            )
            if existing is not None:
                return str(existing)
    raise IntegrityError(f"could not insert or find execution with dedupe_key {new.dedupe_key!r}")


def insert_plain(news: list[NewExecution], using: str, **extra: Any) -> list[str]:
    """Write executions without a dedupe key in one statement (``store.inserts.insert_rows``)."""
    connection = connections[using]
    now = timezone.now()
    ids = [uuid.uuid4() for _ in news]
    inserts.insert_rows(connection, Execution._meta.db_table, inserts.execution_rows(
        connection, now, _invocations(ids, news, extra), **extra))
    return [str(eid) for eid in ids]


def _invocations(ids: list[uuid.UUID], news: list[NewExecution],
                 extra: dict[str, Any]) -> Iterator[Invocation]:
    """The bulk insert's rows: each one's birth (``state.birth``), computed once for a run
    of rows that differ only by their payload (``invoke_many``'s common case)."""
    last: NewExecution | None = None
    born: Birth | None = None
    for eid, new in zip(ids, news, strict=True):
        if born is None or last is None or not new.shares_birth(last):
            born = new.birth(**extra)
        last = new
        yield born.invocation(eid, None if new.payload is None else new.payload_json())


def invoke(
    task: str | Task,
    payload: Any = None,
    *,
    dedupe_key: str | None = None,
    priority: int = 0,
    run_at: datetime | None = None,
    delay: float | timedelta | None = None,
    queue: str | None = None,
    throttle: float | timedelta | None = None,
    debounce: float | timedelta | None = None,
    key: str | None = None,
) -> str:
    """Start an execution of ``task``; returns its id (a UUID string).

    ``key``: the flow-control key (e.g. a tenant) that ``key_concurrency``, a per-key
    ``rate_limit`` and the fair claim across keys go by."""
    new = prepare(task, payload, dedupe_key=dedupe_key, priority=priority, run_at=run_at,
                  delay=delay, queue=queue, throttle=throttle, debounce=debounce, key=key)
    db = router.db_for_write(Execution)
    execution_id = retry_locked(lambda: insert_any(new, db), db)
    wakeup.announce_new(db, new.queue)  # SQLite: wake local workers on commit
    return execution_id


def invoke_many(task: str | Task, items: list[dict[str, Any]]) -> list[str]:
    """Start one execution per item (each a dict of ``invoke`` options), in one transaction."""
    t = get_task(task)
    if isinstance(items, dict | str | bytes) or not hasattr(items, "__iter__"):
        raise TypeError("invoke_many needs a list of dicts of options")
    now = timezone.now()
    prepared = []
    default: NewExecution | None = None  # an item of default options, checked once
    for n, item in enumerate(items):
        if not isinstance(item, dict):
            raise TypeError(f"invoke_many item {n} must be a dict, not {type(item).__name__}")
        if not item.keys() <= _OPTION_SET:
            unknown = sorted(set(item) - _OPTION_SET)
            raise ValueError(f"invoke_many item {n} has unknown keys {unknown}; "
                             f"valid keys are {list(OPTIONS)}")
        try:
            if item.keys() <= _PAYLOAD_ONLY:  # the common case: only the payload differs
                if default is None:
                    default = prepare(t, now=now)
                prepared.append(default.with_payload(item.get("payload")))
            else:
                prepared.append(prepare(t, now=now, **item))
        except (ValueError, TypeError) as exc:
            raise type(exc)(f"invoke_many item {n}: {exc}") from None
    using = router.db_for_write(Execution)

    def insert_all() -> list[str]:
        ids: list[str | None] = [None] * len(prepared)
        with write_transaction(using):
            plain = [n for n, p in enumerate(prepared) if _is_plain(p)]
            news = [prepared[n] for n in plain]
            for n, eid in zip(plain, insert_plain(news, using), strict=True):
                ids[n] = eid
            for n, p in enumerate(prepared):
                if not _is_plain(p):
                    ids[n] = insert_any(p, using)
        return [i for i in ids if i is not None]

    ids = retry_locked(insert_all, using)
    queues = {p.queue for p in prepared}
    if ids:  # SQLite: wake local workers on commit (every queue when there are several)
        wakeup.announce_new(using, queues.pop() if len(queues) == 1 else "")
    return ids


def _is_plain(new: NewExecution) -> bool:
    return new.dedupe_key is None and new.throttle is None and new.debounce is None


def get(execution_id: Any) -> Execution:
    """The execution's row; ``Execution.DoesNotExist`` if there is none."""
    eid = as_uuid(execution_id)
    if eid is None:
        raise Execution.DoesNotExist(f"No execution with id {execution_id!r}")
    return Execution.objects.get(pk=eid)


def wait(execution_id: Any, timeout: float | None = 30) -> Any:
    """Wait for the execution to finish; return its result or raise why it did not."""
    timeout = to_seconds(timeout, "timeout")
    deadline = None if timeout is None else time.monotonic() + timeout
    pause = 0.01
    while True:
        row = get(execution_id)
        if row.status in Execution.FINAL:
            return outcome(row)
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"execution {row.pk} did not finish within {timeout} s "
                               f"(status {row.status})")
        remaining = None if deadline is None else deadline - time.monotonic()
        time.sleep(pause if remaining is None else max(0.0, min(pause, remaining)))
        pause = min(pause * 1.5, 0.25)


def outcome(row: Execution) -> Any:
    """The result of a finished execution, or the ``ExecutionFailed`` /
    ``ExecutionCancelled`` it ended with."""
    if row.status == Execution.Status.CANCELLED:
        raise ExecutionCancelled(row.last_error or "Cancelled", str(row.pk))
    if row.status == Execution.Status.FAILED:
        raise ExecutionFailed(row.last_error or "Failed", str(row.pk))
    return row.result


def send_signal(execution_id: Any, name: str, payload: Any = None, *,
                sent_by: str | None = None) -> bool:
    """Send the signal ``name`` to an execution (``ctx.wait_for_signal``); see
    ``SignalQuerySet.send``. ``True`` when stored, ``False`` when the execution is
    finished or unknown; bad input raises before anything is written."""
    return Signal.objects.send(execution_id, name, payload, sent_by=sent_by)


# --- throttle and debounce (task flow control: FlowSlot rows) --------------------
#
# ``invoke(..., throttle=seconds)`` and ``invoke(..., debounce=seconds)``.
#
# Both are keyed by task and dedupe key (no key is a key of its own). Each key has one
# ``FlowSlot`` row pointing at its last execution; concurrent invocations of one key
# serialize on that row (``SELECT ... FOR UPDATE`` on PostgreSQL; the database write
# lock on SQLite) until the invoking transaction ends, and the first invocation of a
# key races only on the slot's unique constraint, whose loser retries. So the rules
# hold across processes:
#
# * **Throttle**: at most one execution per task and key per period. The first
#   invocation creates the execution and opens a period of ``seconds``; invocations
#   within the period return that execution's id and write nothing. The executions
#   also keep the dedupe key, so an unfinished one still wins after the period.
# * **Debounce**: the first invocation creates an execution due in ``seconds``; every
#   further one, while that execution has not started, replaces its payload and its
#   flow-control ``key`` (the execution runs as the last call describes it) and pushes
#   its ``run_at`` to now + ``seconds`` and returns the same id. It runs once, after the
#   calls stop. A call that arrives once it has started queues a new execution. The
#   key lives in the slot, not in the execution's ``dedupe_key``, so that such a call is
#   not deduplicated into the running one.

ROUNDS = 10


def _slot(kind: str, new: NewExecution, using: str):
    return FlowSlot.objects.using(using).filter(
        kind=kind, task_name=new.task.name, key=new.dedupe_key or ""
    )


def _store(kind: str, new: NewExecution, slot_id: int | None, eid: str, until, using: str):
    if slot_id is None:
        FlowSlot.objects.using(using).create(
            kind=kind, task_name=new.task.name, key=new.dedupe_key or "",
            execution_id=eid, until=until,
        )
    else:
        FlowSlot.objects.using(using).filter(pk=slot_id).update(execution_id=eid, until=until)


def insert_throttled(new: NewExecution, seconds: float, using: str) -> str:
    """Create an execution unless one of this task and key was created in the period."""
    kind = FlowSlot.Kind.THROTTLE
    for _ in range(ROUNDS):
        try:
            with write_transaction(using):
                slot = _slot(kind, new, using).select_for_update().values("pk", "execution_id",
                                                                            "until").first()
                now = timezone.now()
                if slot is not None and slot["until"] > now:
                    return str(slot["execution_id"])
                eid = insert(new, using)
                _store(kind, new, slot and slot["pk"], eid, now + timedelta(seconds=seconds),
                       using)
                return eid
        except IntegrityError:
            continue  # another invocation created this key's slot first; use it
    raise IntegrityError(f"throttle of {new.task.name!r}: could not settle the slot")


def insert_debounced(new: NewExecution, seconds: float, using: str) -> str:
    """Push the key's not yet started execution to now + ``seconds``, or create one."""
    kind = FlowSlot.Kind.DEBOUNCE
    row = dataclasses.replace(new, dedupe_key=None)
    for _ in range(ROUNDS):
        try:
            with write_transaction(using):
                slot = _slot(kind, new, using).select_for_update().values("pk", "execution_id",
                                                                            "until").first()
                run_at = timezone.now() + timedelta(seconds=seconds)
                if slot is not None:
                    pushed = Execution.objects.using(using).filter(
                        pk=slot["execution_id"], status=Execution.Status.PENDING, attempts=0
                    ).update(payload=new.payload, key=new.key, run_at=run_at)
                    if pushed:
                        _store(kind, new, slot["pk"], slot["execution_id"], run_at, using)
                        return str(slot["execution_id"])
                eid = insert(dataclasses.replace(row, run_at=run_at), using)
                _store(kind, new, slot and slot["pk"], eid, run_at, using)
                return eid
        except IntegrityError:
            continue
    raise IntegrityError(f"debounce of {new.task.name!r}: could not settle the slot")

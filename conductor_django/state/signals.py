"""Signals and progress: their transitions (``ctx.wait_for_signal``, ``send_signal``,
``ctx.progress``).

A wait for the signal ``name`` (``runtime.durable.wait_for_signal``) is three writes,
each fenced by the lease of the running execution:

1. ``await_signal``: the execution's ``waiting_for`` becomes ``{"signal", "until",
   "choices"}``, once per wait: its deadline counts from the first time the handler
   waited, however often it is resumed, retried or recovered since;
2. ``SignalQuerySet.consume``: in one transaction, the oldest unconsumed signal of that
   name (whose payload is one of ``choices``, if any) is marked consumed, the step
   ``name`` memoizes its payload and ``waiting_for`` is cleared; past the deadline, the
   step memoizes the timeout instead. Nothing to consume and time left: the runner
   releases the execution ``suspended`` until the deadline (``release(wakeable=True)``).

One signal answers one wait, and the deadline wins (docs/signals.md, "Which signal
answers"). ``consume`` takes only a signal sent by the deadline, and deletes the other
unconsumed signals of that name when it takes one (they were not used). ``send``
refuses (``False``, nothing stored) a signal whose wait was decided already (the step
of its name is memoized: a signal, or the timeout), whose wait's deadline has passed
(even before a worker recorded the timeout), or that a signal already stored would
answer. A retry from the wait's step discards that step, so the re-run waits for a new
decision; a fork copies no signals.

``SignalQuerySet.send`` stores a signal and wakes its execution in one transaction,
the execution row locked first: a suspended one becomes runnable now (on PostgreSQL the
NOTIFY trigger tells the workers at once), a running one gets the "woken while
running" mark (``run_at`` just past ``locked_at``, as a finishing child marks its
parent), so that the suspend that follows makes it runnable at once. A wake-up is a
hint: an execution woken for nothing suspends again.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from django.db import models, router, transaction
from django.db.models import Case, DateTimeField, F, Value, When
from django.utils import timezone

from ..definitions.values import (
    as_uuid,
    check_json_text,
    check_signal_name,
    check_text,
    short_repr,
)
from ..exceptions import LeaseLost
from ..store.transactions import retry_locked, write_transaction
from .status import FINAL, Status

S = Status
SENT_BY_LENGTH = 150
FINISHED = "the execution has finished (or does not exist)"
WOKEN_WHILE_RUNNING = timedelta(microseconds=1)  # as in state.execution


class SignalTransitions:
    """The execution's side of signals and progress; mixed into ``ExecutionQuerySet``."""

    model: Any

    def await_signal(self, eid: str, worker_id: uuid.UUID, lease: int, name: str,
                     seconds: float | None, choices: list[str] | None, using: str,
                     ) -> dict[str, Any]:
        """The wait for ``name`` in progress (``waiting_for``), recorded now if it is new.

        Raises ``LeaseLost`` (writing nothing) when this worker no longer holds ``eid``.
        """
        held = self.model._default_manager.held(eid, worker_id, lease, using)
        current = held.values_list("waiting_for", flat=True).first()
        if isinstance(current, dict) and current.get("signal") == name:
            return current
        until = None if seconds is None else timezone.now() + timedelta(seconds=seconds)
        spec = {"signal": name, "until": None if until is None else until.isoformat(),
                "choices": choices}
        if not held.update(waiting_for=spec):
            raise LeaseLost(eid)
        return spec

    def record_progress(self, eid: str, worker_id: uuid.UUID, lease: int,
                        value: dict[str, Any], using: str) -> int:
        """Store ``ctx.progress``; 0 when this worker no longer holds ``eid``."""
        return self.model._default_manager.held(eid, worker_id, lease, using).update(
            progress=value)


class SignalQuerySet(models.QuerySet):
    def _executions(self, using: str) -> Any:
        execution = self.model._meta.get_field("execution").related_model
        return execution._default_manager.using(using)

    def send(self, execution_id: Any, name: str, payload: Any = None, *,
             sent_by: str | None = None, using: str | None = None) -> bool:
        """Store a signal for an unfinished execution and wake it; ``False`` when it is
        not used (``deliver`` says why). Bad input raises before anything is written:
        ``ValueError`` for a bad name, or a payload outside the ``choices`` of the wait
        in progress for that name; ``TypeError`` for a payload that is not JSON."""
        return not self.deliver(execution_id, name, payload, sent_by=sent_by, using=using)

    def deliver(self, execution_id: Any, name: str, payload: Any = None, *,
                sent_by: str | None = None, using: str | None = None) -> str:
        """As ``send``: ``""`` when the signal was stored, else why it was not (the
        execution is finished or unknown, the wait was decided, its deadline passed, or
        a signal already stored answers it)."""
        check_signal_name(name)
        check_json_text(payload, "signal payload")  # JSON, storable, bounded in depth
        if sent_by is not None and not isinstance(sent_by, str):
            raise TypeError(f"sent_by must be a str (e.g. a username) or None, got {sent_by!r}")
        if sent_by:
            check_text(sent_by, "sent_by")
        eid = as_uuid(execution_id)
        if eid is None:
            return FINISHED
        db = using or router.db_for_write(self.model)
        now = timezone.now()  # before the transaction: PostgreSQL's NOTIFY trigger compares
        return retry_locked(lambda: self._send(eid, name, payload, sent_by or "", now, db), db)

    def _send(self, eid: uuid.UUID, name: str, payload: Any, sent_by: str, now: datetime,
              db: str) -> str:
        executions = self._executions(db)
        with write_transaction(db):
            row = (executions.select_for_update().filter(pk=eid)
                   .values("status", "waiting_for").first())
            if row is None or row["status"] in FINAL:
                return FINISHED
            waiting = row["waiting_for"]
            if not (isinstance(waiting, dict) and waiting.get("signal") == name):
                waiting = None  # no wait for this name in progress (yet)
            if waiting and waiting.get("choices") and payload not in waiting["choices"]:
                raise ValueError(f"signal {name!r}: payload {short_repr(payload)} is not one of "
                                 f"the choices {waiting['choices']!r} execution {eid} waits for")
            unused = self._unused(eid, name, waiting, now, db)
            if unused:
                return unused
            self.using(db).create(execution_id=eid, name=name, payload=payload,
                                  sent_by=sent_by[:SENT_BY_LENGTH], sent_at=now)
            executions.filter(pk=eid, status__in=(S.SUSPENDED, S.RUNNING)).update(
                run_at=Case(
                    When(status=S.RUNNING, then=F("locked_at") + WOKEN_WHILE_RUNNING),
                    default=Value(now),
                    output_field=DateTimeField(),
                ))
        return ""

    def _unused(self, eid: uuid.UUID, name: str, waiting: dict[str, Any] | None,
                now: datetime, db: str) -> str:
        """Why a signal ``name`` sent now would not be used (``""``: it would be)."""
        if waiting and waiting.get("until") and now >= datetime.fromisoformat(waiting["until"]):
            return f"the wait for {name!r} timed out at {waiting['until']}"
        steps = self.model._meta.apps.get_model(self.model._meta.app_label, "Step")
        if steps._default_manager.using(db).filter(execution_id=eid, name=name).exists():
            return f"the wait for {name!r} was already decided"
        choices = (waiting or {}).get("choices")
        stored = self.using(db).filter(execution_id=eid, name=name, consumed_at__isnull=True)
        if any(not choices or p in choices for p in stored.values_list("payload", flat=True)):
            return f"a signal {name!r} sent earlier answers the wait"
        return ""

    def consume(self, eid: str, worker_id: uuid.UUID, lease: int, spec: dict[str, Any],
                using: str) -> dict[str, Any] | None:
        """The outcome of the wait ``spec`` (``await_signal``), memoized in the step of its
        name: ``{"signal", "payload", "sent_by", "sent_at"}`` when a signal was consumed,
        ``{"signal", "timed_out"}`` past the deadline; ``None``: keep waiting.

        Raises ``LeaseLost`` (writing nothing) when this worker no longer holds ``eid``.
        """
        executions = self._executions(using)
        name, choices = spec["signal"], spec.get("choices")
        now = timezone.now()
        with write_transaction(using):
            if not executions.lock_held(eid, worker_id, lease, using):
                raise LeaseLost(eid)
            until = datetime.fromisoformat(spec["until"]) if spec.get("until") else None
            pending = self.using(using).filter(execution_id=eid, name=name,
                                               consumed_at__isnull=True).order_by("sent_at", "id")
            found = next((s for s in pending.only("pk", "payload", "sent_by", "sent_at")
                          if (not choices or s.payload in choices)
                          and (until is None or s.sent_at < until)), None)
            if found is not None:
                self.using(using).filter(pk=found.pk).update(consumed_at=now)
                value: dict[str, Any] = {"signal": name, "payload": found.payload,
                                         "sent_by": found.sent_by,
                                         "sent_at": found.sent_at.isoformat()}
            elif until is not None and now >= until:
                value = {"signal": name, "timed_out": spec["until"]}
            else:
                return None
            steps = self.model._meta.apps.get_model(self.model._meta.app_label, "Step")
            stored = steps._default_manager.remember(eid, name, value, now, using,
                                                     worker_id=worker_id, lease=lease)
            if stored != value:  # memoized meanwhile: keep that, consume nothing
                transaction.set_rollback(True, using=using)
                return stored
            # One signal answers one wait: the others of its name were not used.
            (pending if found is None else pending.exclude(pk=found.pk)).delete()
            executions.filter(pk=eid).update(waiting_for=None)
        return value


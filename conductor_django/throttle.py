"""``invoke(..., throttle=seconds)`` and ``invoke(..., debounce=seconds)``.

Both are keyed by task and dedupe key (no key is a key of its own). Each key has one
``FlowSlot`` row pointing at its last execution; concurrent invocations of one key
serialize on that row (``SELECT ... FOR UPDATE`` on PostgreSQL; the database write
lock on SQLite) until the invoking transaction ends, and the first invocation of a
key races only on the slot's unique constraint, whose loser retries. So the rules
hold across processes:

* **Throttle**: at most one execution per task and key per period. The first
  invocation creates the execution and opens a period of ``seconds``; invocations
  within the period return that execution's id and write nothing. The executions
  also keep the dedupe key, so an unfinished one still wins after the period.
* **Debounce**: the first invocation creates an execution due in ``seconds``; every
  further one, while that execution has not started, replaces its payload and pushes
  its ``run_at`` to now + ``seconds`` and returns the same id. It runs once, after the
  calls stop. A call that arrives once it has started queues a new execution. The
  key lives in the slot, not in the execution's ``dedupe_key``, so that such a call is
  not deduplicated into the running one.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import TYPE_CHECKING

from django.db import IntegrityError
from django.utils import timezone

from .models import Execution, FlowSlot
from .store.transactions import write_transaction

if TYPE_CHECKING:
    from .api import NewExecution

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
    from .api import insert

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
    from .api import insert

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
                    ).update(payload=new.payload, run_at=run_at)
                    if pushed:
                        _store(kind, new, slot["pk"], slot["execution_id"], run_at, using)
                        return str(slot["execution_id"])
                eid = insert(dataclasses.replace(row, run_at=run_at), using)
                _store(kind, new, slot and slot["pk"], eid, run_at, using)
                return eid
        except IntegrityError:
            continue
    raise IntegrityError(f"debounce of {new.task.name!r}: could not settle the slot")

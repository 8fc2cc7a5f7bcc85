"""The other rows the runtime writes: memoized steps and live workers."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from django.db import connections, models
from django.utils import timezone

from ..exceptions import LeaseLost
from ..store import writes


class StepQuerySet(models.QuerySet):
    def load(self, eid: str, using: str) -> dict[str, Any]:
        """The stored results of an execution's steps, by name."""
        return dict(self.using(using).filter(execution_id=eid).values_list("name", "result"))

    def remember(self, eid: str, name: str, result: Any, started_at: datetime, using: str,
                 text: str | None = None, *, worker_id: uuid.UUID, lease: int) -> Any:
        """Store a step's result, fenced by the lease; if the name was stored meanwhile
        by this holder, return the stored one. ``text`` is the result as JSON when the
        caller has it already. Raises ``LeaseLost`` (storing nothing) when the lease is
        gone. One statement (``store.writes.insert_step``)."""
        execution = self.model._meta.get_field("execution").related_model
        text = None if result is None else (text or writes.dumps(result))
        count = writes.insert_step(
            connections[using], execution._meta.db_table, self.model._meta.db_table, eid,
            name, text, started_at, timezone.now(), worker_id, lease)
        if count == 1:
            return result
        if not execution._default_manager.holds(eid, worker_id, lease, using):
            raise LeaseLost(eid)
        return self.using(using).get(execution_id=eid, name=name).result


class WorkerQuerySet(models.QuerySet):
    def register(self, worker: Any, using: str) -> None:
        """Insert the worker's row, its heartbeat now (also when it registers again after
        being presumed dead: an old heartbeat would get it presumed dead at once)."""
        worker.last_heartbeat = timezone.now()
        worker.save(using=using, force_insert=True)

    def heartbeat(self, worker: Any, using: str) -> bool:
        """Refresh the heartbeat; ``False`` if the row is gone: the worker was presumed
        dead and its executions may have been recovered (the caller re-registers it)."""
        return bool(self.using(using).filter(pk=worker.pk)
                    .update(last_heartbeat=timezone.now()))

    def unregister(self, worker_id: uuid.UUID, using: str) -> None:
        self.using(using).filter(pk=worker_id).delete()

"""The django-q2 engine's transitions: a dispatcher holds executions while their ids are
in the broker (``conductor_django.engines.django_q``). Mixed into ``ExecutionQuerySet``.

The dispatcher claims with ``claim``, so priorities, queues and every other claim rule
hold; a qcluster process then takes the row over with ``handover``, fenced on the
holder being a dispatcher.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from django.db.models import F
from django.utils import timezone

from ..exceptions import DEFAULT_REASON
from .claimed import Claimed, as_id, as_id_or_none
from .status import Status

S = Status


class DispatchTransitions:
    model: Any

    def _running(self, using: str, **filters: Any) -> Any:
        return self.model._default_manager.using(using).filter(status=S.RUNNING, **filters)

    def handover(self, eid: str, worker_id: uuid.UUID,
                 using: str) -> tuple[Claimed, str | None] | None:
        """Take over ``eid`` from the dispatcher that holds it; None if no dispatcher does.

        Returns the claimed execution and, if its cancellation was requested meanwhile,
        the reason. A duplicate or stale broker message finds the row held by a runner
        (or no longer running) and changes nothing.
        """
        try:
            ident = as_id(eid)
        except (ValueError, TypeError, AttributeError):
            return None
        worker_model = self.model._meta.apps.get_model(self.model._meta.app_label, "Worker")
        dispatchers = worker_model._default_manager.using(using).filter(
            role=worker_model.Role.DISPATCHER).values("pk")
        moved = self._running(using, pk=ident, locked_by__in=dispatchers).update(
            locked_by=worker_id, locked_at=timezone.now(), lease=F("lease") + 1)
        if not moved:
            return None
        row = self._running(using, pk=ident, locked_by=worker_id).values(
            "task_name", "queue", "payload", "attempts", "max_attempts", "priority",
            "event_name", "schedule_name", "parent_id", "cancelled", "last_error", "lease",
        ).first()
        if row is None:
            return None
        claimed = Claimed(
            id=ident,
            task_name=row["task_name"],
            queue=row["queue"],
            payload=row["payload"],
            attempts=row["attempts"],
            max_attempts=row["max_attempts"],
            priority=row["priority"],
            fresh=False,
            event_name=row["event_name"],
            schedule_name=row["schedule_name"],
            parent_id=as_id_or_none(row["parent_id"]),
            lease=row["lease"],
        )
        return claimed, (row["last_error"] or DEFAULT_REASON) if row["cancelled"] else None

    def held_count(self, worker_id: uuid.UUID, using: str) -> int:
        """How many executions this dispatcher holds (sent, not yet taken over)."""
        return self._running(using, locked_by=worker_id).count()

    def finish_cancelled_held(self, worker_id: uuid.UUID, using: str) -> int:
        """Held executions whose cancellation was requested end ``cancelled`` unrun."""
        return self._running(using, locked_by=worker_id, cancelled=True).update(
            status=S.CANCELLED, finished_at=timezone.now(), locked_by=None, locked_at=None)

    def stale_held(self, worker_id: uuid.UUID, older_than: datetime, limit: int,
                   using: str) -> list[str]:
        """Held executions sent before ``older_than`` and not taken over: to be sent
        again. Their ``locked_at`` (the time they were sent) is moved to now."""
        rows = self._running(using, locked_by=worker_id, locked_at__lt=older_than)
        ids = list(rows.order_by("-priority", "locked_at").values_list("pk", flat=True)[:limit])
        if not ids:
            return []
        self._running(using, pk__in=ids, locked_by=worker_id).update(locked_at=timezone.now())
        return [str(i) for i in ids]

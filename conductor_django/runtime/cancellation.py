"""The whole cancellation path, and its delivery half.

1. **Request** (``Execution.objects.cancel``, in ``state/operator.py``): a pending or
   suspended execution is marked ``failed`` at once with the reason as ``last_error``
   (``cancelled`` stays False) and never runs. A running execution gets
   ``cancelled=True`` and the reason in ``last_error`` in the same statement, and on
   PostgreSQL a NOTIFY carrying the id and the reason (``store/wakeup.py``,
   ``request_cancel``; a datagram on a SQLite file), so that its worker hears of it at once
   and the handler's ``Cancelled`` says exactly why. Then every unfinished descendant
   is cancelled the same way, with the same reason (``descendants``).
2. **Delivery** (here: ``poll_cancellations``, and ``listener.Listener``): the worker
   sets ``ctx.signal`` of the running handler, from the wake-up (PostgreSQL's NOTIFY, a
   SQLite file's socket) or from a poll every ``CANCEL_POLL_INTERVAL`` seconds
   elsewhere (and while shutting down).
3. **Stop** (``Context.checkpoint``): the next ``ctx.step`` or ``ctx.checkpoint``
   raises ``Cancelled`` before running anything.
4. **Final write** (``finish_cancelled`` and the ``CASE`` in every other final write
   of ``state/execution.py``): a row with ``cancelled=True`` always ends ``cancelled``
   with its reason kept, whatever the handler did afterwards, and is never retried.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from ..exceptions import DEFAULT_REASON
from ..models import Execution

if TYPE_CHECKING:
    from .context import Context


def deliver(inflight: dict[str, Context], execution_id: str, reason: str | None = None) -> None:
    """Abort the running handler of ``execution_id`` if this worker holds it."""
    ctx = inflight.get(execution_id)
    if ctx is not None:
        ctx.signal.abort("cancelled", reason or DEFAULT_REASON)


def poll_cancellations(worker_id: uuid.UUID, inflight: dict[str, Context], using: str) -> None:
    """Deliver every cancel request for executions this worker is running."""
    if not inflight:
        return
    for eid, reason in Execution.objects.cancel_requests(worker_id, using):
        deliver(inflight, eid, reason)

"""Database sessions of a worker that a frozen worker cannot turn into a blockage.

A worker frozen (SIGSTOP, a paused VM) inside one of its transactions keeps that
transaction's row locks, and the live workers that recover its executions would wait
for them. The threads of a worker therefore ``enroll``: on PostgreSQL each of their
sessions ends a transaction left idle for longer than ``WORKER_DEAD_AFTER``
(``idle_in_transaction_session_timeout``), so by the time the frozen worker is presumed
dead its locks are gone. Connections opened later by an enrolled thread (after a
database fault) get the same setting. Other threads, such as a test's or a web
request's, are left alone. SQLite has a single writer and nothing to set.

Behind a transaction pooler (``store.pooling``) a session setting would land on
whichever server connection ran that statement, and stay there for other clients:
nothing is set, and the pooler's own limit does this job (PgBouncer's
``idle_transaction_timeout``).
"""

from __future__ import annotations

import threading
from typing import Any

from django.db import connections
from django.db.backends.signals import connection_created
from django.dispatch import receiver

from ..store.pooling import pooled
from ..store.vendor import dialect

_local = threading.local()


def enroll(using: str, idle_seconds: float) -> None:
    """This thread's sessions on ``using`` end transactions idle for ``idle_seconds``."""
    if getattr(_local, "guard", None) == (using, idle_seconds):
        return
    _local.guard = (using, idle_seconds)
    connection = connections[using]
    if connection.connection is not None and not pooled(connection):
        dialect(connection).guard_worker_session(connection, idle_seconds)


@receiver(connection_created, dispatch_uid="conductor_django.runtime.sessions")
def _guard_new_connection(sender: Any, connection: Any, **kwargs: Any) -> None:
    guard = getattr(_local, "guard", None)
    if guard is not None and guard[0] == connection.alias and not pooled(connection):
        dialect(connection).guard_worker_session(connection, guard[1])

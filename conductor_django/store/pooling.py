"""PostgreSQL behind a transaction pooler (PgBouncer ``pool_mode = transaction``, and
the poolers of most hosted PostgreSQL offers).

Such a pooler hands each transaction to any of its server connections, so nothing may
outlive a transaction: no ``LISTEN`` (notifications reach whichever client holds that
server connection next, usually none), no session ``SET``, no server-side prepared
statement, no session advisory lock, no ``WITH HOLD`` cursor.

``pooled(connection)`` tells such a database by the setting Django itself asks of it,
``DATABASES[alias]["DISABLE_SERVER_SIDE_CURSORS"] = True``. On a pooled database
conductor_django prepares nothing (``store.prepared``), sets nothing on the session
(``runtime.sessions``), and listens only through ``CONDUCTOR["LISTEN_DATABASE"]``: the
alias of a direct (or session-pooled) connection to the same database, used for the
worker's listener and for awaiting results. Without it the worker polls.
"""

from __future__ import annotations

from typing import Any

from django.db import connections

from .. import conf
from .vendor import PostgreSQL, dialect


def pooled(connection: Any) -> bool:
    """Whether ``connection`` (PostgreSQL) goes through a transaction pooler."""
    return (isinstance(dialect(connection), PostgreSQL)
            and bool(connection.settings_dict.get("DISABLE_SERVER_SIDE_CURSORS")))


def listen_alias(using: str) -> str | None:
    """The ``DATABASES`` alias on which to LISTEN for notifications about ``using``:
    ``CONDUCTOR["LISTEN_DATABASE"]`` when set, else ``using`` itself unless it is pooled
    (``None``: there is no connection that can listen; poll)."""
    named = conf.get("LISTEN_DATABASE")
    if named:
        return str(named)
    return None if pooled(connections[using]) else using

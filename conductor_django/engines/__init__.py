"""Engines: who runs the executions that ``conductor_worker`` claims (``CONDUCTOR["ENGINE"]``).

* ``"database"`` (default): ``conductor_worker`` runs them in its own handler threads.
* ``"django_q"``: ``conductor_worker`` dispatches them: it claims them as usual and
  sends their ids through django-q2's broker; ``manage.py qcluster`` processes take them
  over and run them (``conductor_django.engines.django_q``).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .django_q import Dispatcher


def make_dispatcher(
    engine: str, *, worker_id: uuid.UUID, using: str, window: int, batch_size: int
) -> Dispatcher | None:
    """The dispatcher of ``engine``, or None when the worker runs executions itself."""
    if engine == "django_q":
        from .django_q import Dispatcher

        return Dispatcher(worker_id=worker_id, using=using, window=window,
                          batch_size=batch_size)
    return None

"""Engines: who runs the executions that ``conductor_worker`` claims (``CONDUCTOR["ENGINE"]``).

* ``"database"`` (default): ``conductor_worker`` runs them in its own handler threads.
* ``"django_q"``: ``conductor_worker`` dispatches them: it claims them as usual and
  sends their ids through django-q2's broker; ``manage.py qcluster`` processes take them
  over and run them (``conductor_django.engines.django_q``).

The engine's dispatcher is loaded by its dotted path, as Django loads backends, so the
runtime never imports an engine (nor its optional third-party package).
"""

from __future__ import annotations

import uuid
from typing import Any, Protocol

from django.utils.module_loading import import_string

#: ``CONDUCTOR["ENGINE"]`` -> the dispatcher class of that engine.
DISPATCHERS = {"django_q": "conductor_django.engines.django_q.Dispatcher"}


class Dispatcher(Protocol):
    """What the worker loop needs of an engine's dispatcher."""

    role: str

    def dispatch(self, queues: list[str]) -> list[Any]: ...

    def periodic(self) -> None: ...

    def held(self) -> int: ...


def make_dispatcher(
    engine: str, *, worker_id: uuid.UUID, using: str, window: int, batch_size: int
) -> Any:
    """The dispatcher of ``engine``, or None when the worker runs executions itself."""
    path = DISPATCHERS.get(engine)
    if path is None:
        return None
    return import_string(path)(worker_id=worker_id, using=using, window=window,
                               batch_size=batch_size)

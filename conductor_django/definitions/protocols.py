"""What a handler is called with: the ``Event`` (the context is the runtime's)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: A task's function: ``handler(event, ctx)``, or ``handler(events, ctx)`` for a batch
#: task (``ctx`` is a ``conductor_django.runtime.context.Context`` or ``BatchContext``).
Handler = Callable[..., Any]


@dataclass(frozen=True, slots=True)
class Event:
    """The event a handler runs for: ``name``, JSON ``payload`` and ``execution_id``."""

    name: str
    payload: Any
    execution_id: str

"""State shared between a worker and the handlers it runs."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .context import Context


@dataclass
class Runtime:
    """The worker as handlers see it: its id, database, shutdown flag, running contexts."""

    worker_id: uuid.UUID
    using: str = "default"
    inline: bool = False  # handlers run on the worker's own thread (testing.drain)
    stopping: threading.Event = field(default_factory=threading.Event)
    inflight: dict[str, Context] = field(default_factory=dict)
    #: Writes a handler's result; the threaded worker batches these (``Completer``).
    complete: Callable[[str, Any], bool] | None = None

    def write_result(self, execution_id: str, result: Any) -> bool:
        """Record a returned result; ``False`` if the lock was lost (written at once)."""
        if self.complete is not None:
            return self.complete(execution_id, result)
        from . import queries

        return bool(queries.complete(execution_id, self.worker_id, result, self.using))

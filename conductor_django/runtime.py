"""State shared between a worker and the handlers it runs."""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

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

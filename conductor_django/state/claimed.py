"""What the runner needs of a claimed execution."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Claimed:
    id: str
    task_name: str
    queue: str
    payload: Any
    attempts: int
    max_attempts: int
    priority: int
    fresh: bool  # first start ever: no step can exist yet
    event_name: str
    schedule_name: str | None
    parent_id: str | None
    lease: int = 0  # the fencing token of this claim: every later write names it
    key: str | None = None  # the flow-control key (``invoke(key=...)``)

    # --- what a batch (``runtime.batch.ClaimedBatch``) has too: ``runtime.unit.ExecutionUnit``

    @property
    def ids(self) -> list[str]:
        return [self.id]

    @property
    def items(self) -> list[Claimed]:
        return [self]

    @property
    def size(self) -> int:
        return 1


def as_id(value: Any) -> str:
    return str(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)))


def as_id_or_none(value: Any) -> str | None:
    return None if value is None else as_id(value)

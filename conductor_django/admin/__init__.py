"""The admin as the operations console: executions, steps, schedules, workers, dashboard.

Every state change goes through the state machine (``Execution.cancel``, ``.retry``,
``.run_again``); the actions narrow the selection to the executions where the change
is legal, ask for confirmation, need their permission (a staff user without it gets
403 and nothing changes) and report how many were done and skipped. Nothing from a
payload, result or error is rendered unescaped. The list stays fast on millions of
rows: see ``pagination`` and ``stats`` and docs/admin.md.

Importing this package registers the model admins (``executions``, ``schedules``,
``workers``, ``controls``).
"""

from .controls import ControlAdmin
from .executions import ExecutionAdmin
from .schedules import ScheduleAdmin, ScheduleForm
from .workers import WorkerAdmin

__all__ = ["ControlAdmin", "ExecutionAdmin", "ScheduleAdmin", "ScheduleForm", "WorkerAdmin"]

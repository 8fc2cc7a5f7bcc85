"""The definitions layer: what a user declares, as plain values.

``Task`` and ``@task``, ``Cron``, ``Batch``, ``RateLimit``, ``Retention``, ``Window``,
the ``Event`` a handler receives, and the checks of every option. Nothing here touches the database
or imports the models or anything above them (checked by tests/test_architecture.py).
"""

from .cron import Cron
from .options import Batch, RateLimit, Retention
from .protocols import Event
from .registry import task
from .tasks import Task
from .window import Window

__all__ = ["Batch", "Cron", "Event", "RateLimit", "Retention", "Task", "Window", "task"]

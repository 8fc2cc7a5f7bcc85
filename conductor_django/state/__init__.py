"""The state machine: every transition of an execution (and of the rows around it).

``ExecutionQuerySet`` (``Execution.objects``: the worker's, the operator's and the
django-q2 dispatcher's transitions), ``StepQuerySet`` (``Step.objects``) and
``WorkerQuerySet`` (``Worker.objects``), ``SignalQuerySet`` (``Signal.objects``);
``models.py`` imports them at the top.
Nothing here names a model class: every method works on ``self.model``.
"""

from .attempts import AttemptQuerySet
from .claimed import Claimed
from .execution import ExecutionQuerySet
from .rows import StepQuerySet, WorkerQuerySet
from .signals import SignalQuerySet
from .status import FINAL, RUNNABLE, UNFINISHED, Status

__all__ = ["FINAL", "RUNNABLE", "UNFINISHED", "AttemptQuerySet", "Claimed", "ExecutionQuerySet",
           "SignalQuerySet", "Status", "StepQuerySet", "WorkerQuerySet"]

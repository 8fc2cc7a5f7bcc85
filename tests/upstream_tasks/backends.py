"""``ConductorBackend`` in the two roles Django's tests give their reference backends.

Django's suite checks the tasks framework through ``DummyBackend`` (enqueued tasks are
kept, never run) and ``ImmediateBackend`` (a task runs inside ``enqueue``). These are
``ConductorBackend`` itself, with the least that each role needs on top: ``Stored``
lists and clears what was enqueued (the database's rows, as ``DummyBackend.results`` and
``clear()`` do for its list); ``Draining`` runs what was enqueued with
``conductor_django.testing.drain()`` before ``enqueue`` returns, as a worker would.
"""

from conductor_django.backends import ConductorBackend
from conductor_django.models import Execution
from conductor_django.testing import drain


class Stored(ConductorBackend):
    """Enqueued tasks stay enqueued (no worker runs in these tests)."""

    def _executions(self):
        return Execution.objects.filter(payload__backend=self.alias).order_by("created_at")

    @property
    def results(self):
        return [self.get_result(str(pk)) for pk in self._executions().values_list("pk",
                                                                                  flat=True)]

    def clear(self):
        self._executions().delete()


class Draining(ConductorBackend):
    """A worker runs each task before ``enqueue`` returns (``testing.drain``)."""

    def enqueue(self, task, args, kwargs):
        result = super().enqueue(task, args, kwargs)
        drain()
        result.refresh()
        return result

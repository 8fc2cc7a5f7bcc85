"""A backend for Django's tasks framework that runs tasks on conductor.

```python
TASKS = {"default": {"BACKEND": "conductor_django.backends.ConductorBackend"}}
```

It serves ``django.tasks`` on Django 6 and the ``django_tasks`` backport on Django 5.2
(``pip install conductor-django[tasks]``).

How a Django task maps to conductor:

* The execution's ``task_name`` is the task function's module path
  (``shop.tasks.send_receipt``); its ``payload`` is ``{"args": [...], "kwargs": {...},
  "backend": alias}`` (JSON); ``queue``, ``priority`` and ``run_at`` come from the
  task's ``queue_name``, ``priority`` and ``run_after``. ``TaskResult.id`` is the
  execution id.
* Every worker resolves that name to a conductor task on first use (a registry
  resolver imports the module path and checks that it is a Django task), so the
  function's module needs no registration and no import by the worker.
* A Django task function has no ``ctx``: the only step boundary is before it starts.
  Cancelling a running one ends it ``cancelled`` when it returns (its result is kept).
* Each attempt records its worker as the step ``django_tasks.attempt-N`` (this gives
  ``worker_ids``, ``attempts`` and ``last_attempted_at``) and, when the function
  raises (``SystemExit`` and ``KeyboardInterrupt`` included) or returns a value JSON
  cannot hold (Django's ``TypeError``), the exception class and traceback as
  ``django_tasks.error-N`` (``errors``).
* Signals as Django's reference backends send them, with the backend's class as
  ``sender``: ``task_enqueued`` from ``enqueue``; ``task_started`` from the worker
  before the function runs; ``task_finished`` when it has returned or raised on its
  last attempt (inside the exception handler, so Django logs the error), just before
  the outcome is written.
* ``async def`` task functions run to their end on the worker's handler thread.
* ``get_result`` returns the task as enqueued (its ``priority``, ``queue_name`` and
  ``run_after``).
* Django tasks are not retried by default (``OPTIONS={"MAX_ATTEMPTS": 1}``), as
  Django's own backends; a worker crash then ends the execution ``failed``.

Statuses: ``pending``/``suspended`` -> ``READY``, ``running`` -> ``RUNNING``,
``completed`` -> ``SUCCESSFUL``, ``failed`` and ``cancelled`` -> ``FAILED`` (Django has
no cancelled status; the error of a cancelled execution is
``conductor_django.exceptions.Cancelled`` with the reason as its traceback text).
"""

from __future__ import annotations

import dataclasses
import json
import traceback
from datetime import datetime
from typing import Any

from django.db import router
from django.utils import timezone
from django.utils.module_loading import import_string

try:  # Django 6
    from django.tasks import TaskContext, TaskResult, TaskResultStatus
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import Task as DjangoTask
    from django.tasks.base import TaskError
    from django.tasks.exceptions import InvalidTask as InvalidTaskError
    from django.tasks.exceptions import TaskResultDoesNotExist
    from django.tasks.signals import task_enqueued, task_finished, task_started
    from django.utils.json import normalize_json
except ImportError:  # Django 5.2: the backport
    from django_tasks import TaskContext, TaskResult, TaskResultStatus
    from django_tasks.backends.base import BaseTaskBackend
    from django_tasks.base import Task as DjangoTask
    from django_tasks.base import TaskError
    from django_tasks.exceptions import InvalidTaskError, TaskResultDoesNotExist
    from django_tasks.signals import task_enqueued, task_finished, task_started
    from django_tasks.utils import normalize_json

from . import api
from .definitions.registry import Task, get_task, register
from .definitions.values import as_uuid, check_json
from .exceptions import AttemptTimedOut, Cancelled, LeaseLost, Released, Suspended
from .models import Execution, Step

#: What a Django task function may raise that is not its outcome: conductor's own signals
#: (a cancel, a timeout, a lost lease, a shutdown), handled by the worker.
NOT_AN_ERROR = (Cancelled, AttemptTimedOut, LeaseLost, Released, Suspended)

ATTEMPT_STEP = "django_tasks.attempt-"
ERROR_STEP = "django_tasks.error-"

STATUSES: dict[str, TaskResultStatus] = {
    Execution.Status.PENDING: TaskResultStatus.READY,
    Execution.Status.SUSPENDED: TaskResultStatus.READY,
    Execution.Status.RUNNING: TaskResultStatus.RUNNING,
    Execution.Status.COMPLETED: TaskResultStatus.SUCCESSFUL,
    Execution.Status.FAILED: TaskResultStatus.FAILED,
    Execution.Status.CANCELLED: TaskResultStatus.FAILED,
}


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ConductorTask(DjangoTask):
    """A Django task with conductor's own option, given to Django's decorator::

        @task(max_attempts=5)
        def send_invoice(order_id): ...

    ``max_attempts`` (int >= 1) overrides the backend's ``MAX_ATTEMPTS`` for this task.
    """

    max_attempts: int | None = None


class ConductorBackend(BaseTaskBackend):
    """Enqueues Django tasks as conductor executions, run by ``conductor_worker``.

    ``OPTIONS``: ``MAX_ATTEMPTS`` (default 1: no retries, as Django's own backends).
    ``QUEUES`` as for any backend (default ``["default"]``; an empty list allows any).
    Tasks take the option of ``ConductorTask`` (``max_attempts``).
    """

    task_class = ConductorTask
    supports_defer = True
    supports_priority = True
    supports_get_result = True
    supports_async_task = True

    def __init__(self, alias: str, params: dict) -> None:
        super().__init__(alias, params)
        max_attempts = self.options.get("MAX_ATTEMPTS", 1)
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ValueError(f"TASKS[{alias!r}]['OPTIONS']['MAX_ATTEMPTS'] must be an int >= 1, "
                             f"got {max_attempts!r}")
        self.max_attempts = max_attempts

    def validate_task(self, task: DjangoTask) -> None:
        super().validate_task(task)
        max_attempts = getattr(task, "max_attempts", None)
        if max_attempts is not None and (isinstance(max_attempts, bool) or not isinstance(
                max_attempts, int) or max_attempts < 1):
            raise InvalidTaskError(f"max_attempts must be an int >= 1, got {max_attempts!r}")

    def enqueue(self, task: DjangoTask, args: Any, kwargs: Any) -> TaskResult:
        self.validate_task(task)
        payload = {"args": _json(args, "args"), "kwargs": _json(kwargs, "kwargs"),
                   "backend": self.alias}
        if task.run_after is not None:  # kept as enqueued: a retry moves the row's run_at
            payload["run_after"] = task.run_after.isoformat()
        max_attempts = getattr(task, "max_attempts", None) or self.max_attempts
        ctask = dataclasses.replace(conductor_task(task), max_attempts=max_attempts)
        new = api.prepare(ctask, payload, priority=task.priority, run_at=task.run_after,
                          queue=task.queue_name, direct=False)
        using = router.db_for_write(Execution)
        eid = api.insert(new, using)
        result = to_result(Execution.objects.using(using).get(pk=eid), task, with_steps=False)
        task_enqueued.send(type(self), task_result=result)
        return result

    def get_result(self, result_id: str) -> TaskResult:
        eid = as_uuid(result_id) if isinstance(result_id, str) else None
        row = None if eid is None else Execution.objects.filter(pk=eid).first()
        task = None if row is None else _django_task(row.task_name)
        if row is None or task is None:
            raise TaskResultDoesNotExist(result_id)
        return to_result(row, task)


# --- the conductor side ------------------------------------------------------------------


class DjangoTaskHandler:
    """The handler of the conductor task that runs one Django task function."""

    def __init__(self, module_path: str, func: Any) -> None:
        self.module_path = module_path
        self.__module__ = func.__module__
        self.__qualname__ = func.__qualname__
        self.__name__ = func.__name__

    def __call__(self, event: Any, ctx: Any) -> Any:
        task = _django_task(self.module_path)
        if task is None:
            raise LookupError(f"{self.module_path} is no longer a Django task")
        payload = event.payload or {}
        args, kwargs = payload.get("args", []), payload.get("kwargs", {})
        worker_id = str(ctx._runtime.worker_id)
        ctx.step(f"{ATTEMPT_STEP}{ctx.attempt}", lambda: {"worker": worker_id})
        row = Execution.objects.using(ctx._runtime.using).get(pk=ctx.execution_id)
        result = to_result(row, task)
        sender = type(result.task.get_backend())
        task_started.send(sender=sender, task_result=result)
        try:
            if task.takes_context:
                value = task.call(TaskContext(task_result=result), *args, **kwargs)
            else:
                value = task.call(*args, **kwargs)  # an async function runs to its end here
            value = normalize_json(value)  # Django's TypeError for a value JSON cannot hold
            check_json(value, f"return value of task {self.module_path}")
        except NOT_AN_ERROR:
            raise
        except BaseException as exc:  # SystemExit and KeyboardInterrupt are its errors too
            error = {
                "exception_class_path": f"{type(exc).__module__}.{type(exc).__qualname__}",
                "traceback": "".join(traceback.format_exception(exc)),
            }
            ctx._book.save(f"{ERROR_STEP}{ctx.attempt}", error, timezone.now(), None)
            if ctx.attempt >= row.max_attempts:  # no retry follows: the result is final
                errors = [*result.errors, TaskError(**error)]
                task_finished.send(sender=sender, task_result=_finished(
                    result, TaskResultStatus.FAILED, errors=errors))
            raise
        task_finished.send(sender=sender, task_result=_finished(
            result, TaskResultStatus.SUCCESSFUL, value=value))
        return value


def conductor_task(task: DjangoTask) -> Task:
    """The conductor task (registered on first use) that runs the Django task ``task``."""
    try:
        return get_task(task.module_path)
    except LookupError:
        pass
    if _django_task(task.module_path) is None:
        raise InvalidTaskError(f"{task.module_path} must be importable by its module path")
    return register(_build(task.module_path, task))


def resolve(name: str) -> Task | None:
    """Registry resolver: a conductor task for the Django task at module path ``name``."""
    task = _django_task(name)
    return None if task is None else _build(name, task)


def _build(name: str, task: DjangoTask) -> Task:
    return Task(func=DjangoTaskHandler(name, task.func), name=name, invocable=False,
                max_attempts=1)


def _django_task(name: str) -> DjangoTask | None:
    """The Django task object at module path ``name``, or None."""
    try:
        obj = import_string(name)
    except (ImportError, ValueError):  # not a module path
        return None
    if not isinstance(obj, DjangoTask) or obj.module_path != name:
        return None
    return obj


# --- results -----------------------------------------------------------------------------


def to_result(row: Execution, task: DjangoTask, *, with_steps: bool = True) -> TaskResult:
    """The ``TaskResult`` of execution ``row`` (statuses mapped as the module says)."""
    payload = row.payload if isinstance(row.payload, dict) else {}
    alias = payload.get("backend") or task.backend
    task = _as_enqueued(task, row, alias)
    steps: list[tuple[str, Any, datetime]] = [] if not with_steps else list(
        Step.objects.using(row._state.db or "default")
        .filter(execution_id=row.pk, name__startswith="django_tasks.")
        .order_by("created_at", "id")
        .values_list("name", "result", "created_at")
    )
    attempts = [(r, at) for name, r, at in steps if name.startswith(ATTEMPT_STEP)]
    errors = [
        TaskError(exception_class_path=r["exception_class_path"], traceback=r["traceback"])
        for name, r, _ in steps if name.startswith(ERROR_STEP)
    ]
    status = STATUSES[row.status]
    if row.status == Execution.Status.CANCELLED:
        errors.append(TaskError(exception_class_path="conductor_django.exceptions.Cancelled",
                                traceback=row.last_error))
    elif row.status == Execution.Status.FAILED and len(errors) < max(row.attempts, 1):
        # The last attempt ended without an exception of the function: a timeout, a lost
        # worker, or a cancellation before it started.
        errors.append(TaskError(
            exception_class_path="conductor_django.exceptions.ExecutionFailed",
            traceback=row.last_error,
        ))
    result = TaskResult(
        task=task,
        id=str(row.pk),
        status=status,
        enqueued_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        last_attempted_at=attempts[-1][1] if attempts else row.started_at,
        args=payload.get("args", []),
        kwargs=payload.get("kwargs", {}),
        backend=alias,
        errors=errors,
        worker_ids=[(r or {}).get("worker", "") for r, _ in attempts],
    )
    if status == TaskResultStatus.SUCCESSFUL:
        object.__setattr__(result, "_return_value", row.result)
    return result


def _as_enqueued(task: DjangoTask, row: Execution, alias: str) -> DjangoTask:
    """The task as it was enqueued (``.using(priority=7).enqueue()``), not the function's
    defaults; those, on the enqueued backend, if the settings no longer allow it."""
    payload = row.payload if isinstance(row.payload, dict) else {}
    run_after = payload.get("run_after")
    try:
        return dataclasses.replace(
            task, backend=alias, priority=row.priority, queue_name=row.queue,
            run_after=datetime.fromisoformat(run_after) if isinstance(run_after, str) else None)
    except (InvalidTaskError, ValueError):  # QUEUES or the priority range changed since
        return task if alias == task.backend else task.using(backend=alias)


def _finished(result: TaskResult, status: TaskResultStatus, *, value: Any = None,
              errors: list[TaskError] | None = None) -> TaskResult:
    """``result`` as the worker finishes it (what ``task_finished`` receivers get): the
    outcome is written right after they return."""
    done = dataclasses.replace(result, status=status, finished_at=timezone.now(),
                               errors=result.errors if errors is None else errors)
    if status == TaskResultStatus.SUCCESSFUL:
        object.__setattr__(done, "_return_value", value)
    return done


def _json(value: Any, what: str) -> Any:
    """``value`` as JSON stores it; Django's ``TypeError`` ("Unsupported type: ...") for a
    value it cannot hold, conductor's for one the database cannot (NaN, a NUL)."""
    value = normalize_json(value)
    check_json(value, f"{what} of the task")
    return json.loads(json.dumps(value))

"""Task definitions: the ``task`` decorator and the registry of tasks by name."""

from __future__ import annotations

import importlib
import logging
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast, overload

from django.core.exceptions import ImproperlyConfigured

from .cron import check_timezone, validate
from .exceptions import TaskNotFound
from .flow import Batch, check_batch, check_concurrency, check_window
from .retention import Retention
from .utils import check_json, to_seconds
from .window import Window

if TYPE_CHECKING:
    from .context import Context, Event

Handler = Callable[["Event", "Context"], Any]

logger = logging.getLogger("conductor_django")

MODEL_ACTIONS = ("create", "update", "delete")


# --- cron schedules of a task (see conductor_django.scheduler) ---------------------------


@dataclass(frozen=True)
class Cron:
    """A static cron schedule of a task: ``task(cron=[Cron("0 9 * * *", name="morning")])``.

    ``expr`` is a croniter expression (five fields, or six with seconds last), read in
    ``timezone`` (default ``settings.TIME_ZONE``). ``name`` is the schedule's name and
    the handler's ``event.name`` (default: the expression); ``payload`` its
    ``event.payload``. Invalid values raise ``ValueError``/``TypeError`` at once.
    """

    expr: str
    name: str | None = None
    payload: Any = None
    timezone: str | None = None

    def __post_init__(self) -> None:
        validate(self.expr)
        if len(self.expr) > 200:
            raise ValueError(f"cron expression {self.expr!r} is longer than 200 characters")
        if self.name is not None and (not isinstance(self.name, str) or not self.name
                                      or len(self.name) > 200):
            raise ValueError(f"Cron name must be a non-empty str of at most 200 characters, "
                             f"got {self.name!r}")
        check_json(self.payload, "Cron payload")
        check_timezone(self.timezone)
        if self.timezone and len(self.timezone) > 64:
            raise ValueError(f"timezone {self.timezone!r} is longer than 64 characters")

    @property
    def schedule_name(self) -> str:
        return self.name or self.expr


def as_crons(cron: str | Cron | Sequence[str | Cron] | None, task_name: str) -> tuple[Cron, ...]:
    """Normalize ``task(cron=...)``; ``ValueError`` on bad expressions or repeated names."""
    if cron is None:
        return ()
    items = [cron] if isinstance(cron, str | Cron) else list(cron)
    crons = tuple(c if isinstance(c, Cron) else Cron(c) for c in items)
    names = [c.schedule_name for c in crons]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"task {task_name!r} has several cron schedules named {repeated}; "
                         "give each Cron its own name")
    return crons


@dataclass(frozen=True, eq=False)
class Task:
    """A registered task. Calling it calls the plain function."""

    func: Handler
    name: str
    queue: str | None = None
    max_attempts: int = 3
    backoff: Sequence[float] | Callable[[int], float] | None = None
    timeout: float | None = None
    invocable: bool = True
    # flow control (see conductor_django.flow)
    concurrency: int | None = None
    window: Window | None = None
    batch: Batch | None = None
    # events and model triggers (events.py), retention (retention.py)
    events: tuple[str, ...] = ()
    on_model: tuple[str, str] | None = None
    fields: tuple[str, ...] | None = None
    retention: Retention | None = None
    cron: tuple[Cron, ...] = ()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)

    def invoke(self, payload: Any = None, **options: Any) -> str:
        """Start an execution of this task; see ``conductor_django.invoke``."""
        from .api import invoke

        return invoke(self, payload, **options)

    @property
    def __name__(self) -> str:  # keeps the decorated function introspectable
        return self.func.__name__

    def get_queue(self) -> str:
        from . import conf

        return self.queue or conf.get("DEFAULT_QUEUE")

    def retry_delay(self, attempt: int) -> float:
        """Seconds to wait before retrying after failed attempt number ``attempt``."""
        from . import conf

        backoff = self.backoff if self.backoff is not None else conf.get("RETRY_BACKOFF")
        if callable(backoff):
            return float(backoff(attempt))
        backoff = list(backoff) or [0]
        return float(backoff[min(attempt, len(backoff)) - 1])


_registry: dict[str, Task] = {}
#: Called after every change of the registry (events.py reconnects model triggers).
on_change: list[Callable[[], None]] = []


def _changed() -> None:
    for callback in on_change:
        callback()


def _location(func: Callable[..., Any]) -> str:
    return f"{func.__module__}.{func.__qualname__}"


def register(t: Task) -> Task:
    existing = _registry.get(t.name)
    if existing is not None and _location(existing.func) != _location(t.func):
        raise ImproperlyConfigured(
            f"Two tasks are named {t.name!r}: {_location(existing.func)} and {_location(t.func)}"
        )
    _registry[t.name] = t
    _changed()
    return t


def unregister(name: str) -> None:
    if _registry.pop(name, None) is not None:
        _changed()


def get_task(name_or_task: str | Task) -> Task:
    if isinstance(name_or_task, Task):
        return name_or_task
    try:
        return _registry[name_or_task]
    except (KeyError, TypeError):
        found = _resolve(name_or_task)
        if found is not None:
            return found
        raise TaskNotFound(f"No task named {name_or_task!r} is registered") from None


# --- resolvers: tasks registered on first use (e.g. Django Tasks functions) -------------

Resolver = Callable[[str], "Task | None"]
_resolvers: list[Resolver] = []


def add_resolver(resolver: Resolver) -> None:
    """Ask ``resolver(name)`` for tasks not registered yet; it returns a ``Task`` or None.

    ``conductor_django.backends`` uses this so that a worker runs Django Tasks functions
    whose module it has not imported (the execution's task name is the module path).
    """
    if resolver not in _resolvers:
        _resolvers.append(resolver)


def _resolve(name: object) -> Task | None:
    if not isinstance(name, str):
        return None
    for resolver in _resolvers:
        found = resolver(name)
        if found is not None:
            return register(found)
    return None


def all_tasks() -> dict[str, Task]:
    return dict(_registry)


@overload
def task(func: Handler, /) -> Task: ...
@overload
def task(
    *,
    name: str | None = ...,
    queue: str | None = ...,
    max_attempts: int = ...,
    backoff: Sequence[float] | Callable[[int], float] | None = ...,
    timeout: float | timedelta | None = ...,
    invocable: bool = ...,
    concurrency: int | None = ...,
    window: tuple[str, str] | Window | None = ...,
    batch: Batch | None = ...,
    events: Sequence[str] = ...,
    on_model: tuple[str, str] | None = ...,
    fields: Sequence[str] | None = ...,
    retention: Retention | None = ...,
    cron: str | Cron | Sequence[str | Cron] | None = ...,
) -> Callable[[Handler], Task]: ...


def task(func: Handler | None = None, /, **kwargs: Any) -> Task | Callable[[Handler], Task]:
    """Register a function as a task; usable as ``@task`` or ``@task(...)``."""

    def decorate(f: Handler) -> Task:
        return register(build_task(f, **kwargs))

    return decorate(func) if func is not None else decorate


def build_task(
    func: Handler,
    *,
    name: str | None = None,
    queue: str | None = None,
    max_attempts: int = 3,
    backoff: Sequence[float] | Callable[[int], float] | None = None,
    timeout: float | timedelta | None = None,
    invocable: bool = True,
    concurrency: int | None = None,
    window: tuple[str, str] | Window | None = None,
    batch: Batch | None = None,
    events: Sequence[str] = (),
    on_model: tuple[str, str] | None = None,
    fields: Sequence[str] | None = None,
    retention: Retention | None = None,
    cron: str | Cron | Sequence[str | Cron] | None = None,
) -> Task:
    if not callable(func):
        raise TypeError(f"task() needs a function, got {func!r}")
    task_name = name if name is not None else _location(func)
    if not isinstance(task_name, str) or not task_name:
        raise ValueError(f"task name must be a non-empty str, got {task_name!r}")
    if queue is not None and (not isinstance(queue, str) or not queue):
        raise ValueError(f"queue of task {task_name!r} must be a non-empty str")
    if not isinstance(max_attempts, int) or max_attempts < 1:
        raise ValueError(f"max_attempts of task {task_name!r} must be an int >= 1")
    if backoff is not None and not callable(backoff):
        # to_seconds gives None only for None, which the type of ``backoff`` leaves out
        backoff = tuple(cast(float, to_seconds(b, "backoff")) for b in backoff)
    # flow control
    concurrency = check_concurrency(concurrency, task_name)
    window = check_window(window, task_name)
    batch = check_batch(batch, task_name, concurrency)
    return Task(
        func=func,
        name=task_name,
        queue=queue,
        max_attempts=max_attempts,
        backoff=backoff,
        timeout=to_seconds(timeout, "timeout"),
        invocable=bool(invocable),
        concurrency=concurrency,
        window=window,
        batch=batch,
        events=_check_events(task_name, events),
        on_model=_check_on_model(task_name, on_model),
        fields=_check_fields(task_name, on_model, fields),
        retention=_check_retention(task_name, retention),
        cron=as_crons(cron, task_name),
    )


# --- events, model triggers, retention: argument checks ---------------------------------


def _names(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple | set | frozenset):
        raise TypeError(f"{what} must be a list of str, not {type(value).__name__}")
    for item in value:
        if not isinstance(item, str) or not item or len(item) > 200:
            raise ValueError(f"{what} must hold non-empty str of at most 200 characters, "
                             f"got {item!r}")
    return tuple(dict.fromkeys(value))


def _check_events(task_name: str, events: Any) -> tuple[str, ...]:
    return _names(events, f"events of task {task_name!r}")


def _check_on_model(task_name: str, on_model: Any) -> tuple[str, str] | None:
    if on_model is None:
        return None
    if (not isinstance(on_model, list | tuple) or len(on_model) != 2
            or not all(isinstance(part, str) for part in on_model)):
        raise TypeError(f"on_model of task {task_name!r} must be a pair "
                        f"('app_label.Model', action), got {on_model!r}")
    label, action = on_model
    if label.count(".") != 1 or not all(label.split(".")):
        raise ValueError(f"on_model of task {task_name!r} must name a model as "
                         f"'app_label.Model', got {label!r}")
    if action not in MODEL_ACTIONS:
        raise ValueError(f"on_model action of task {task_name!r} must be one of "
                         f"{', '.join(MODEL_ACTIONS)}, got {action!r}")
    return (label, action)


def _check_fields(task_name: str, on_model: Any, fields: Any) -> tuple[str, ...] | None:
    if fields is None:
        return None
    if on_model is None:
        raise ValueError(f"fields of task {task_name!r} need on_model")
    return _names(fields, f"fields of task {task_name!r}")


def _check_retention(task_name: str, retention: Any) -> Retention | None:
    if retention is not None and not isinstance(retention, Retention):
        raise TypeError(f"retention of task {task_name!r} must be a Retention, "
                        f"not {type(retention).__name__}")
    return retention


#: Task modules that failed to import: module -> traceback (system check E007).
import_errors: dict[str, str] = {}


def autodiscover() -> None:
    """Import every installed app's ``tasks`` module and ``CONDUCTOR["TASK_MODULES"]``.

    A module that fails to import does not stop Django from starting: the error is
    logged and reported by the system check ``conductor_django.E007``, which
    ``manage.py check``, ``migrate``, ``runserver`` and ``conductor_worker`` run.
    """
    from django.apps import apps
    from django.utils.module_loading import module_has_submodule

    from . import conf

    modules = [f"{config.name}.tasks" for config in apps.get_app_configs()
               if module_has_submodule(config.module, "tasks")]
    extra = conf.get("TASK_MODULES")
    modules += [m for m in extra if isinstance(m, str)] if isinstance(extra, list | tuple) else []
    for module in modules:
        before = set(_registry)
        try:
            importlib.import_module(module)
        except Exception:  # noqa: BLE001 - reported by the system check instead
            import_errors[module] = traceback.format_exc()
            logger.error("could not import task module %s", module, exc_info=True)
            for name in set(_registry) - before:  # a half-imported module registers nothing
                if _registry[name].func.__module__ == module:
                    unregister(name)
        else:
            import_errors.pop(module, None)

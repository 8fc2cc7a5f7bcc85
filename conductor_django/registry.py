"""Task definitions: the ``task`` decorator and the registry of tasks by name."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, overload

from django.core.exceptions import ImproperlyConfigured

from .cron import check_timezone, validate
from .exceptions import TaskNotFound
from .utils import check_json, to_seconds

if TYPE_CHECKING:
    from .context import Context, Event

Handler = Callable[["Event", "Context"], Any]


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


def _location(func: Callable[..., Any]) -> str:
    return f"{func.__module__}.{func.__qualname__}"


def register(t: Task) -> Task:
    existing = _registry.get(t.name)
    if existing is not None and _location(existing.func) != _location(t.func):
        raise ImproperlyConfigured(
            f"Two tasks are named {t.name!r}: {_location(existing.func)} and {_location(t.func)}"
        )
    _registry[t.name] = t
    return t


def unregister(name: str) -> None:
    _registry.pop(name, None)


def get_task(name_or_task: str | Task) -> Task:
    if isinstance(name_or_task, Task):
        return name_or_task
    try:
        return _registry[name_or_task]
    except (KeyError, TypeError):
        raise TaskNotFound(f"No task named {name_or_task!r} is registered") from None


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
        backoff = tuple(to_seconds(b, "backoff") for b in backoff)
    return Task(
        func=func,
        name=task_name,
        queue=queue,
        max_attempts=max_attempts,
        backoff=backoff,
        timeout=to_seconds(timeout, "timeout"),
        invocable=bool(invocable),
        cron=as_crons(cron, task_name),
    )


def autodiscover() -> None:
    """Import every installed app's ``tasks`` module and ``CONDUCTOR["TASK_MODULES"]``."""
    from django.utils.module_loading import autodiscover_modules

    from . import conf

    autodiscover_modules("tasks")
    for module in conf.get("TASK_MODULES"):
        importlib.import_module(module)

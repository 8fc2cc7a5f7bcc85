"""Task definitions: the ``task`` decorator and the registry of tasks by name."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, overload

from django.core.exceptions import ImproperlyConfigured

from .exceptions import TaskNotFound
from .flow import Batch, check_batch, check_concurrency, check_window
from .utils import to_seconds
from .window import Window

if TYPE_CHECKING:
    from .context import Context, Event

Handler = Callable[["Event", "Context"], Any]


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
    )


def autodiscover() -> None:
    """Import every installed app's ``tasks`` module and ``CONDUCTOR["TASK_MODULES"]``."""
    from django.utils.module_loading import autodiscover_modules

    from . import conf

    autodiscover_modules("tasks")
    for module in conf.get("TASK_MODULES"):
        importlib.import_module(module)

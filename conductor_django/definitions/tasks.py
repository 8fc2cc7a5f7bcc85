"""A task definition: ``Task`` (a value: what ``@task(...)`` declared) and ``build_task``,
which validates every option. Registering lives in ``definitions.registry``."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from typing import Any, cast

from django.core.exceptions import AppRegistryNotReady

from .. import conf
from .cron import Cron, as_crons
from .options import (
    Batch,
    RateLimit,
    Retention,
    _check_events,
    _check_fields,
    _check_on_model,
    _check_retention,
    check_batch,
    check_concurrency,
    check_key_concurrency,
    check_rate_limit,
    check_window,
)
from .protocols import Handler
from .values import (
    INT32_MAX,
    NAME_LENGTH,
    QUEUE_LENGTH,
    check_int,
    check_text,
    to_seconds,
)
from .window import Window

#: How ``Task.invoke`` starts an execution: ``conductor_django.api.invoke``, given by
#: ``set_starter`` when the app is ready (``apps.py``): definitions know no database.
_starter: Callable[..., str] | None = None


def set_starter(starter: Callable[..., str]) -> None:
    """Let ``Task.invoke`` start executions with ``starter(task, payload, **options)``."""
    global _starter
    _starter = starter


#: Most attempts a task may declare: half the column's range, so that the fresh budget
#: of a retry (attempts so far + ``max_attempts``) still fits.
MAX_ATTEMPTS = INT32_MAX // 2


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
    # flow control (see definitions.options)
    concurrency: int | None = None
    key_concurrency: int | None = None
    rate_limit: RateLimit | None = None
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
        if _starter is None:
            raise AppRegistryNotReady("Task.invoke needs the conductor_django app loaded "
                                      "(INSTALLED_APPS, django.setup())")
        return _starter(self, payload, **options)

    @property
    def __name__(self) -> str:  # keeps the decorated function introspectable
        return self.func.__name__

    @property
    def keyed(self) -> bool:
        """Whether claims of this task go key by key (``key_concurrency`` or
        ``rate_limit``): round-robin across keys, within the limits."""
        return self.key_concurrency is not None or self.rate_limit is not None

    @cached_property
    def is_async(self) -> bool:
        """Whether the handler is an ``async def`` function (run on the worker's event loop);
        read for every claimed execution, so computed once."""
        return inspect.iscoroutinefunction(self.func)

    def get_queue(self) -> str:
        return self.queue or conf.get("DEFAULT_QUEUE")

    def retry_delay(self, attempt: int) -> float:
        """Seconds to wait before retrying after failed attempt number ``attempt``."""
        backoff = self.backoff if self.backoff is not None else conf.get("RETRY_BACKOFF")
        if callable(backoff):
            value = backoff(attempt)
        else:
            backoff = list(backoff) or [0]
            value = backoff[min(attempt, len(backoff)) - 1]
        # a callable (or the setting) may give anything: NaN, a str, 1e20...
        seconds = to_seconds(value, f"backoff of task {self.name!r} for attempt {attempt}")
        return seconds if seconds is not None else 0.0


def _location(func: Callable[..., Any]) -> str:
    return f"{func.__module__}.{func.__qualname__}"


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
    key_concurrency: int | None = None,
    rate_limit: RateLimit | None = None,
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
    check_text(task_name, "task name", NAME_LENGTH)
    if queue is not None:
        check_text(queue, f"queue of task {task_name!r}", QUEUE_LENGTH)
    check_int(max_attempts, f"max_attempts of task {task_name!r}", 1, MAX_ATTEMPTS)
    if backoff is not None and not callable(backoff):
        if isinstance(backoff, str | bytes) or not hasattr(backoff, "__iter__"):
            raise TypeError(f"backoff of task {task_name!r} must be a list of seconds or a "
                            f"callable, not {type(backoff).__name__}")
        # to_seconds gives None only for None, which the type of ``backoff`` leaves out
        backoff = tuple(cast(float, to_seconds(b, f"backoff of task {task_name!r}"))
                        for b in backoff)
    # flow control
    concurrency = check_concurrency(concurrency, task_name)
    key_concurrency = check_key_concurrency(key_concurrency, task_name)
    rate_limit = check_rate_limit(rate_limit, task_name)
    window = check_window(window, task_name)
    batch = check_batch(batch, task_name, concurrency,
                        keyed=key_concurrency is not None or rate_limit is not None)
    if batch is not None and inspect.iscoroutinefunction(func):
        raise ValueError(f"batch task {task_name!r} needs a plain function: async handlers "
                         "run one execution at a time")
    return Task(
        func=func,
        name=task_name,
        queue=queue,
        max_attempts=max_attempts,
        backoff=backoff,
        timeout=to_seconds(timeout, f"timeout of task {task_name!r}"),
        invocable=bool(invocable),
        concurrency=concurrency,
        key_concurrency=key_concurrency,
        rate_limit=rate_limit,
        window=window,
        batch=batch,
        events=_check_events(task_name, events),
        on_model=_check_on_model(task_name, on_model),
        fields=_check_fields(task_name, on_model, fields),
        retention=_check_retention(task_name, retention),
        cron=as_crons(cron, task_name),
    )

"""The registered tasks, and what they mean for a claim.

``@task`` registers a ``Task`` here, ``autodiscover`` imports the task modules at
startup, resolvers register tasks on first use (Django Tasks functions), and
``claim_rules``/``batch_tasks`` derive from the registered tasks what one claim must
respect right now (skipped tasks, concurrency limits, batches).
"""

from __future__ import annotations

import difflib
import importlib
import logging
import traceback
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, overload

from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import module_has_submodule

from .. import conf
from ..exceptions import TaskNotFound
from .controls import Effective, Limits, effective
from .cron import Cron
from .options import Batch, RateLimit, Retention
from .protocols import Handler
from .tasks import Task, _location, build_task
from .window import Window

logger = logging.getLogger("conductor_django")

_registry: dict[str, Task] = {}
#: Called after every change of the registry (events.py reconnects model triggers).
on_change: list[Callable[[], None]] = []


#: Counts the registry's changes; ``_sorted`` holds ``sorted(_registry.items())`` as of
#: one count (every claim reads it).
_version = 0
_sorted: tuple[int, list[tuple[str, Task]]] = (-1, [])


def _changed() -> None:
    global _version
    _version += 1
    for callback in on_change:
        callback()


def _sorted_tasks() -> list[tuple[str, Task]]:
    global _sorted
    version, tasks = _sorted
    if version != _version:
        version = _version  # read first: a change while sorting makes the next call sort again
        tasks = sorted(_registry.items())
        _sorted = (version, tasks)
    return tasks


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


def get_task(name_or_task: str | Task, *, resolve: bool = False) -> Task:
    """The registered task of this name; ``TaskNotFound`` if there is none.

    Only registered names are looked up: a name from a caller (``invoke``, ``emit``,
    ``schedule``, the admin) never imports anything - task modules are imported by
    ``autodiscover`` only. ``resolve=True`` is the worker's: the task name of an
    execution row it claimed may also be resolved (``add_resolver``), e.g. a Django
    Tasks function enqueued through the backend, found by its module path.
    """
    if isinstance(name_or_task, Task):
        return name_or_task
    try:
        return _registry[name_or_task]
    except (KeyError, TypeError):
        found = _resolve(name_or_task) if resolve else None
        if found is not None:
            return found
        raise TaskNotFound(not_found_message(name_or_task)) from None


def not_found_message(name: Any) -> str:
    """``No task named 'x' is registered``, with the nearest registered name when one is
    close (a typo, ``send_email`` for ``send-email``)."""
    message = f"No task named {name!r} is registered"
    if isinstance(name, str):
        near = difflib.get_close_matches(name, list(_registry), n=1, cutoff=0.75)
        if near:
            message += f"; did you mean {near[0]!r}?"
    return message


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


#: ``handler_kinds()`` as of one count of the registry's changes (every claim reads it).
_kinds: tuple[int, tuple[tuple[str, ...], tuple[str, ...]]] = (-1, ((), ()))


def handler_kinds() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The names of the registered tasks with ``async def`` handlers, and of the others."""
    global _kinds
    version, kinds = _kinds
    if version != _version:
        version = _version  # read first, as in ``_sorted_tasks``
        tasks = _sorted_tasks()
        kinds = (tuple(name for name, t in tasks if t.is_async),
                 tuple(name for name, t in tasks if not t.is_async))
        _kinds = (version, kinds)
    return kinds


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
    key_concurrency: int | None = ...,
    rate_limit: RateLimit | None = ...,
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


#: Task modules that failed to import: module -> traceback (system check E007).
import_errors: dict[str, str] = {}


def autodiscover() -> None:
    """Import every installed app's ``tasks`` module and ``CONDUCTOR["TASK_MODULES"]``.

    A module that fails to import does not stop Django from starting: the error is
    logged and reported by the system check ``conductor_django.E007``, which
    ``manage.py check``, ``migrate``, ``runserver`` and ``conductor_worker`` run.
    """
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


def check_window_open(task_name: str) -> None:
    """At a step boundary: ``Released(run_at=<next opening>)`` if the task's window is
    closed (an unknown task has none)."""
    try:
        window = get_task(task_name).window
    except LookupError:
        return
    if window is not None:
        window.raise_if_closed()


# --- what the registered tasks mean for a claim (see store.claims) ----------------------


@dataclass(frozen=True, slots=True)
class ClaimRules:
    """What the plain claim must respect right now, derived from the registered tasks."""

    skip: tuple[str, ...] = ()  # never claimed one by one: batch tasks, closed windows
    limits: dict[str, int] = field(default_factory=dict)  # task name -> max running
    keyed: dict[str, KeyRule] = field(default_factory=dict)  # claimed key by key

    @property
    def plain(self) -> bool:
        return not self.skip and not self.limits and not self.keyed


@dataclass(frozen=True, slots=True)
class KeyRule:
    """The limits of a task claimed key by key (``Task.keyed``); ``None``: no limit.

    ``task_starts``/``key_starts``: at most that many first starts of the task (of one
    key) since ``since`` (``now`` minus the rate limit's window).
    """

    concurrency: int | None = None
    key_concurrency: int | None = None
    task_starts: int | None = None
    key_starts: int | None = None
    since: datetime | None = None


def key_rule(t: Task | Effective, now: datetime) -> KeyRule:
    rate = t.rate_limit
    return KeyRule(
        concurrency=t.concurrency,
        key_concurrency=t.key_concurrency,
        task_starts=rate.count if rate is not None and not rate.per_key else None,
        key_starts=rate.count if rate is not None and rate.per_key else None,
        since=now - timedelta(seconds=rate.seconds) if rate is not None else None,
    )


def claim_rules(now: datetime, overrides: Mapping[str, Limits] | None = None,
                paused: Collection[str] = ()) -> ClaimRules:
    """``overrides``: the limits an operator set per task (``set_limits``); ``paused``:
    the paused tasks (skipped like a closed window)."""
    skip: list[str] = []
    limits: dict[str, int] = {}
    keyed: dict[str, KeyRule] = {}
    for name, t in _sorted_tasks():
        if (t.batch is not None or (t.window is not None and not t.window.is_open(now))
                or name in paused):
            skip.append(name)
            continue
        rule = effective(t, overrides.get(name)) if overrides else t
        if rule.keyed:
            keyed[name] = key_rule(rule, now)
        elif rule.concurrency is not None:
            limits[name] = rule.concurrency
    if paused:  # paused tasks this process does not know (their rows may exist)
        skip += sorted(set(paused) - set(_registry))
    return ClaimRules(skip=tuple(skip), limits=limits, keyed=keyed)


def batch_tasks(now: datetime) -> dict[str, Batch]:
    """Batch tasks whose window (if any) is open at ``now``."""
    return {
        name: t.batch
        for name, t in _sorted_tasks()
        if t.batch is not None and (t.window is None or t.window.is_open(now))
    }

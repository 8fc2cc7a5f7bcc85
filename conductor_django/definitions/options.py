"""Flow-control options of ``task(...)`` and what they mean for the claim.

``concurrency``, ``key_concurrency``, ``rate_limit`` (``RateLimit``), ``window`` and
``batch`` are validated here when a task is defined,
with ``Retention`` and the checks of the events and model-trigger options.
``registry.claim_rules`` turns the registered tasks into what one claim needs (see
``store/claims/`` for how the limits are enforced).

This module is imported with the package, before Django's app registry is ready, so
it must not import models.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from .values import INT32_MAX, NAME_LENGTH, check_text, to_seconds
from .window import Window


@dataclass(frozen=True, slots=True)
class Batch:
    """``task(batch=Batch(size=10, timeout=5.0))``: the handler gets up to ``size`` events.

    A batch starts when ``size`` executions are runnable, or when the oldest runnable
    one has waited ``timeout`` seconds (whichever comes first).
    """

    size: int = 10
    timeout: float | timedelta = 5.0

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"Batch size must be an int >= 1, got {self.size!r}")
        seconds = to_seconds(self.timeout, "Batch timeout")
        object.__setattr__(self, "timeout", seconds)

    @property
    def timeout_seconds(self) -> float:
        return float(self.timeout)  # type: ignore[arg-type]  # normalized in __post_init__


def check_concurrency(value: Any, task_name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"concurrency of task {task_name!r} must be an int >= 1 or None, "
                         f"got {value!r}")
    return value


def check_key_concurrency(value: Any, task_name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= INT32_MAX:
        raise ValueError(f"key_concurrency of task {task_name!r} must be an int >= 1 or None, "
                         f"got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class RateLimit:
    """``task(rate_limit=RateLimit(count, per, per_key=False))``: at most ``count``
    executions of the task start in any window of ``per`` seconds (or timedelta),
    across all workers; with ``per_key=True``, at most ``count`` per key.

    An execution *starts* when its first attempt is claimed; a retry or a resume after a
    sleep, a child or a release is not a new start. Executions over the limit wait as
    ``pending`` and start as soon as the window allows.
    """

    count: int
    per: float | timedelta
    per_key: bool = False

    def __post_init__(self) -> None:
        if (isinstance(self.count, bool) or not isinstance(self.count, int)
                or not 1 <= self.count <= INT32_MAX):
            raise ValueError(f"RateLimit count must be an int >= 1, got {self.count!r}")
        seconds = to_seconds(self.per, "RateLimit per")
        if seconds is None or seconds <= 0:
            raise ValueError(f"RateLimit per must be a positive number of seconds, "
                             f"got {self.per!r}")
        object.__setattr__(self, "per", seconds)
        if not isinstance(self.per_key, bool):
            raise TypeError(f"RateLimit per_key must be a bool, got {self.per_key!r}")

    @property
    def seconds(self) -> float:
        return float(self.per)  # type: ignore[arg-type]  # normalized in __post_init__


def check_rate_limit(value: Any, task_name: str) -> RateLimit | None:
    if value is not None and not isinstance(value, RateLimit):
        raise TypeError(f"rate_limit of task {task_name!r} must be a RateLimit(count, per), "
                        f"got {value!r}")
    return value


def check_window(value: Any, task_name: str) -> Window | None:
    return None if value is None else Window.parse(value, task_name)


def check_batch(value: Any, task_name: str, concurrency: int | None,
                keyed: bool = False) -> Batch | None:
    if value is None:
        return None
    if not isinstance(value, Batch):
        raise TypeError(f"batch of task {task_name!r} must be a Batch(size, timeout), "
                        f"got {value!r}")
    if concurrency is not None:
        raise ValueError(f"task {task_name!r}: concurrency cannot be combined with batch "
                         "(a batch already runs as one unit)")
    if keyed:
        raise ValueError(f"task {task_name!r}: key_concurrency and rate_limit cannot be "
                         "combined with batch (a batch already runs as one unit)")
    return value


@dataclass(frozen=True, slots=True)
class Retention:
    """Keep ``completed`` executions and ``failed`` (and cancelled) ones this long.

    Each field is a ``timedelta`` or seconds; ``None`` keeps them forever.
    """

    completed: timedelta | None = None
    failed: timedelta | None = None

    def __post_init__(self) -> None:
        for name in ("completed", "failed"):
            seconds = to_seconds(getattr(self, name), f"Retention.{name}")
            object.__setattr__(self, name, None if seconds is None else timedelta(seconds=seconds))

    @classmethod
    def coerce(cls, value: Any) -> Retention | None:
        """A ``Retention`` from the ``RETENTION`` setting: ``None``, a ``Retention`` or a dict."""
        if value is None or isinstance(value, Retention):
            return value
        if isinstance(value, dict):
            unknown = sorted(set(value) - {"completed", "failed"})
            if unknown:
                raise ValueError(f"unknown retention keys {unknown}; valid: completed, failed")
            return cls(**value)
        raise TypeError(
            f"retention must be a Retention, a dict or None, not {type(value).__name__}"
        )


# --- events, model triggers, retention: argument checks ---------------------------------

MODEL_ACTIONS = ("create", "update", "delete")


def _names(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple | set | frozenset):
        raise TypeError(f"{what} must be a list of str, not {type(value).__name__}")
    for item in value:
        if not isinstance(item, str) or not item or len(item) > NAME_LENGTH:
            raise ValueError(f"{what} must hold non-empty str of at most {NAME_LENGTH} "
                             f"characters, got {item!r}")
        check_text(item, what)
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

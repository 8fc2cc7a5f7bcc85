"""The ``CONDUCTOR`` settings: defaults, one cached accessor, validation helpers."""

from __future__ import annotations

from functools import cache
from typing import Any

from django.conf import settings as django_settings
from django.core.signals import setting_changed
from django.dispatch import receiver

#: Every key of ``settings.CONDUCTOR`` with its default and the types it accepts.
DEFAULTS: dict[str, Any] = {
    "TASK_MODULES": [],
    "ENGINE": "database",
    "RETRY_BACKOFF": [15, 30, 60],
    "CANCEL_POLL_INTERVAL": 1.0,
    "POLL_INTERVAL": 1.0,
    "WORKER_DEAD_AFTER": 30.0,
    "HEARTBEAT_INTERVAL": 5.0,
    "RETENTION": None,
    "CONTEXT": None,
    "DEFAULT_QUEUE": "default",
    # retention and execution logs (retention.py, logs.py)
    "CLEANUP_INTERVAL": 3600.0,
    "CLEANUP_BATCH_SIZE": 1000,
    "LOG_LINES": 100,
    "LOG_LEVEL": "INFO",
    # the worker warns of another session's transaction open this long (s); None: never
    "LONG_TRANSACTION_WARNING": 300.0,
    # PostgreSQL: prepare the hot statements (prepared.py)
    "PREPARED_STATEMENTS": True,
    # PostgreSQL: the DATABASES alias of a direct connection for LISTEN (pooling.py)
    "LISTEN_DATABASE": None,
    # observability: the bearer token of the metrics endpoint (views.py); None: staff only
    "METRICS_TOKEN": None,
    # the queues named in metric labels and on the dashboard (metrics.py); the others
    # are counted under "other"
    "METRICS_MAX_QUEUES": 50,
    # tracing: also store and re-use the invoking request's OpenTelemetry baggage
    "TRACE_BAGGAGE": False,
}

def user_settings() -> dict[str, Any]:
    value = getattr(django_settings, "CONDUCTOR", None) or {}
    return value if isinstance(value, dict) else {}


@cache
def get_config() -> dict[str, Any]:
    """The merged settings (defaults overridden by ``settings.CONDUCTOR``)."""
    return {**DEFAULTS, **user_settings()}


def get(key: str) -> Any:
    return get_config()[key]


@receiver(setting_changed)
def _reset(*, setting: str, **kwargs: Any) -> None:
    if setting == "CONDUCTOR":
        get_config.cache_clear()

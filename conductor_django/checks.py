"""System checks of the ``CONDUCTOR`` setting (``manage.py check``)."""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.checks import Error, register

from .conf import DEFAULTS, ENGINES, TYPES

VALID = ", ".join(sorted(DEFAULTS))


@register()
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    value = getattr(settings, "CONDUCTOR", None)
    if value is None:
        return []
    if not isinstance(value, dict):
        return [Error(
            f"CONDUCTOR must be a dict, not {type(value).__name__}.",
            id="conductor_django.E003",
        )]
    errors = []
    for key in sorted(set(value) - set(DEFAULTS)):
        errors.append(Error(
            f"Unknown key {key!r} in CONDUCTOR.",
            hint=f"Valid keys: {VALID}.",
            id="conductor_django.E001",
        ))
    for key, types in TYPES.items():
        if key in value and (not isinstance(value[key], types) or isinstance(value[key], bool)
                             and bool not in types):
            names = " or ".join(t.__name__ for t in types)
            errors.append(Error(
                f"CONDUCTOR[{key!r}] must be {names}, not {type(value[key]).__name__}.",
                id="conductor_django.E002",
            ))
    numbers = ("CANCEL_POLL_INTERVAL", "POLL_INTERVAL", "WORKER_DEAD_AFTER", "HEARTBEAT_INTERVAL")
    for key in numbers:
        v = value.get(key)
        if isinstance(v, int | float) and not isinstance(v, bool) and v <= 0:
            errors.append(Error(f"CONDUCTOR[{key!r}] must be positive, got {v!r}.",
                                id="conductor_django.E002"))
    if isinstance(value.get("ENGINE"), str) and value["ENGINE"] not in ENGINES:
        errors.append(Error(
            f"CONDUCTOR['ENGINE'] is {value['ENGINE']!r}.",
            hint=f"Valid engines: {', '.join(ENGINES)}.",
            id="conductor_django.E004",
        ))
    # --- engines ---
    if value.get("ENGINE") == "django_q" and not apps.is_installed("django_q"):
        errors.append(Error(
            'CONDUCTOR["ENGINE"] is "django_q" but django_q is not installed.',
            hint='Add "django_q" to INSTALLED_APPS and configure Q_CLUSTER.',
            id="conductor_django.E005",
        ))
    return errors

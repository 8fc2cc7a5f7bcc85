from __future__ import annotations

from typing import TYPE_CHECKING

from django.apps import AppConfig

if TYPE_CHECKING:
    from .definitions.registry import Task


class ConductorConfig(AppConfig):
    name = "conductor_django"
    verbose_name = "Conductor"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import api, checks, events  # noqa: F401 - checks registers the system checks
        from .definitions.registry import add_resolver, autodiscover
        from .definitions.tasks import set_starter

        set_starter(api.invoke)  # Task.invoke (definitions know no database)
        autodiscover()
        events.sync()  # connect model triggers of the discovered tasks
        add_resolver(resolve_django_task)  # Django Tasks backend (conductor_django.backends)


def resolve_django_task(name: str) -> Task | None:
    """The conductor task of a Django Tasks function named by its module path, if any."""
    if "." not in name:
        return None
    try:
        from .backends import resolve
    except ImportError:  # neither django.tasks nor the django_tasks backport is installed
        return None
    return resolve(name)

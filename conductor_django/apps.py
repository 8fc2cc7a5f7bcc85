from django.apps import AppConfig


class ConductorConfig(AppConfig):
    name = "conductor_django"
    verbose_name = "Conductor"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks, events  # noqa: F401 - checks registers the system checks
        from .registry import autodiscover

        autodiscover()
        events.sync()  # connect model triggers of the discovered tasks

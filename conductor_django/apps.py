from django.apps import AppConfig


class ConductorConfig(AppConfig):
    name = "conductor_django"
    verbose_name = "Conductor"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401 - registers the system checks
        from .registry import autodiscover

        autodiscover()

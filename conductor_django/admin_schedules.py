"""The schedule admin: list, enable/disable, run now; edits go through the scheduler."""

from __future__ import annotations

from django.contrib import admin, messages
from django.http import HttpRequest
from django.utils.translation import ngettext

from .forms import ScheduleForm, fire_times_text
from .models import Schedule


@admin.register(Schedule)
class ScheduleAdmin(admin.ModelAdmin):
    """Cron schedules: list, enable/disable, run now; edits go through the scheduler."""

    form = ScheduleForm
    list_display = ("task_name", "name", "cron", "fire_times_display", "timezone_display",
                    "next_run_at", "last_run_at", "enabled", "static")
    list_filter = ("enabled", "static", "task_name")
    search_fields = ("task_name", "name")
    actions = ["enable_schedules", "disable_schedules", "run_now"]

    @admin.display(description="timezone", ordering="timezone")
    def timezone_display(self, obj: Schedule) -> str:
        return obj.timezone or "TIME_ZONE"

    @admin.display(description="next fire times")
    def fire_times_display(self, obj: Schedule) -> str:
        """The next three fire times of the expression, so its meaning is visible."""
        return fire_times_text(obj.cron, obj.timezone)

    def get_readonly_fields(self, request: HttpRequest, obj=None):
        if obj is None:
            return ("next_run_at", "last_run_at")
        fixed = ("task_name", "name", "fire_times_display", "static", "next_run_at",
                 "last_run_at")
        # A static schedule belongs to the code (task(cron=...)): only enabled is editable.
        return (*fixed, "cron", "payload", "timezone") if obj.static else fixed

    def save_model(self, request: HttpRequest, obj: Schedule, form, change: bool) -> None:
        from . import scheduler

        super().save_model(request, obj, form, change)
        if not change or {"cron", "payload", "timezone", "enabled"} & set(form.changed_data):
            scheduler.save_changes(obj)

    def delete_model(self, request: HttpRequest, obj: Schedule) -> None:
        from . import scheduler

        scheduler.unschedule(obj.task_name, obj.name)

    def delete_queryset(self, request: HttpRequest, queryset) -> None:
        for obj in queryset:
            self.delete_model(request, obj)

    def _report(self, request: HttpRequest, done: int, skipped: int, verb: str,
                why: str) -> None:
        message = ngettext("%(n)d schedule %(verb)s", "%(n)d schedules %(verb)s", done) % {
            "n": done, "verb": verb}
        if skipped:
            message += f"; {skipped} skipped ({why})."
        self.message_user(request, message, messages.SUCCESS if done else messages.WARNING)

    @admin.action(description="Enable selected schedules", permissions=["change"])
    def enable_schedules(self, request: HttpRequest, queryset) -> None:
        from . import scheduler

        done = sum(scheduler.set_enabled(obj, True) for obj in queryset)
        self._report(request, done, queryset.count() - done, "enabled", "already enabled")

    @admin.action(description="Disable selected schedules", permissions=["change"])
    def disable_schedules(self, request: HttpRequest, queryset) -> None:
        from . import scheduler

        done = sum(scheduler.set_enabled(obj, False) for obj in queryset)
        self._report(request, done, queryset.count() - done, "disabled", "already disabled")

    @admin.action(description="Run selected schedules now", permissions=["change"])
    def run_now(self, request: HttpRequest, queryset) -> None:
        from . import scheduler

        done = sum(scheduler.run_now(obj) is not None for obj in queryset)
        self._report(request, done, queryset.count() - done, "started",
                     "a run is going on, or the task is not registered")

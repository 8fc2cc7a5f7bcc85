"""Admin of executions, steps, schedules and workers, with the cancel action."""

from __future__ import annotations

import json

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils.html import format_html
from django.utils.translation import ngettext

from .cancellation import DEFAULT_REASON
from .forms import ScheduleForm
from .models import Execution, Schedule, Step, Worker


def pretty_json(value) -> str:
    return format_html("<pre>{}</pre>", json.dumps(value, indent=2, sort_keys=True))


class StepInline(admin.TabularInline):
    model = Step
    extra = 0
    can_delete = False
    fields = ("name", "started_at", "created_at", "duration_display", "result")
    readonly_fields = fields
    show_change_link = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="duration")
    def duration_display(self, obj: Step) -> str:
        return "" if obj.duration is None else f"{obj.duration:.3f} s"


@admin.register(Execution)
class ExecutionAdmin(admin.ModelAdmin):
    list_display = ("id", "status", "task_name", "queue", "attempts_display", "run_at",
                    "duration_display", "error_excerpt")
    list_filter = ("status", "task_name", "queue")
    search_fields = ("=id", "task_name", "dedupe_key")
    ordering = ("-created_at",)
    actions = ["cancel_selected"]
    inlines = [StepInline]
    readonly_fields = [
        *(f.name for f in Execution._meta.fields if f.name not in ("payload", "result")),
        "payload_display",
        "result_display",
    ]
    exclude = ("payload", "result")
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("conductor_django.cancel_execution")

    @admin.display(description="attempts")
    def attempts_display(self, obj: Execution) -> str:
        return f"{obj.attempts}/{obj.max_attempts}"

    @admin.display(description="duration")
    def duration_display(self, obj: Execution) -> str:
        return "" if obj.duration is None else f"{obj.duration:.2f} s"

    @admin.display(description="last error")
    def error_excerpt(self, obj: Execution) -> str:
        text = obj.last_error or ""
        return text if len(text) <= 80 else text[:79] + "…"

    @admin.display(description="payload")
    def payload_display(self, obj: Execution) -> str:
        return pretty_json(obj.payload)

    @admin.display(description="result")
    def result_display(self, obj: Execution) -> str:
        return pretty_json(obj.result)

    @admin.action(description="Cancel selected executions", permissions=["cancel"])
    def cancel_selected(self, request: HttpRequest, queryset):
        if not self.has_cancel_permission(request):
            raise PermissionDenied
        if request.POST.get("confirm") != "yes":
            context = {
                **self.admin_site.each_context(request),
                "title": "Cancel executions",
                "queryset": queryset,
                "opts": self.model._meta,
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                "default_reason": DEFAULT_REASON,
                "media": self.media,
            }
            return TemplateResponse(
                request, "admin/conductor_django/execution/cancel_confirmation.html", context
            )
        reason = (request.POST.get("reason") or "").strip() or DEFAULT_REASON
        done = skipped = 0
        for execution in queryset.filter(status__in=Execution.UNFINISHED):
            if execution.cancel(reason):
                done += 1
            else:
                skipped += 1
        skipped += queryset.exclude(status__in=Execution.UNFINISHED).count()
        self.message_user(
            request,
            ngettext("%(done)d execution cancelled", "%(done)d executions cancelled", done)
            % {"done": done}
            + f"; {skipped} already finished.",
            messages.SUCCESS if done else messages.WARNING,
        )
        return None


@admin.register(Schedule)
class ScheduleAdmin(admin.ModelAdmin):
    """Cron schedules: list, enable/disable, run now; edits go through the scheduler."""

    form = ScheduleForm
    list_display = ("task_name", "name", "cron", "timezone_display", "next_run_at",
                    "last_run_at", "enabled", "static")
    list_filter = ("enabled", "static", "task_name")
    search_fields = ("task_name", "name")
    actions = ["enable_schedules", "disable_schedules", "run_now"]

    @admin.display(description="timezone", ordering="timezone")
    def timezone_display(self, obj: Schedule) -> str:
        return obj.timezone or "TIME_ZONE"

    def get_readonly_fields(self, request: HttpRequest, obj=None):
        if obj is None:
            return ("next_run_at", "last_run_at")
        fixed = ("task_name", "name", "static", "next_run_at", "last_run_at")
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


@admin.register(Worker)
class WorkerAdmin(admin.ModelAdmin):
    list_display = ("id", "hostname", "pid", "queues", "concurrency", "started_at",
                    "last_heartbeat")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

"""Schedules in the admin: the form (validated like ``conductor.schedule``) and the list."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.translation import ngettext

from .. import scheduler
from ..definitions.cron import (
    check_timezone,
    next_fire_times,
    second_field_trap,
    validate,
    zone,
)
from ..definitions.registry import all_tasks
from ..models import Schedule
from .cells import one_line, stamp
from .safety import PayloadField, StorableLookups


def fire_times_text(cron: str, timezone: str | None) -> str:
    """``"2026-01-01 09:00:00, ... (Europe/Paris)"``: the next three fire times, local."""
    try:
        times = next_fire_times(cron, timezone)
        tz = zone(check_timezone(timezone))
    except ValueError as exc:
        return f"({exc})"
    return ", ".join(t.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S") for t in times) \
        + f" ({tz.key})"


class ScheduleForm(forms.ModelForm):
    class Meta:
        model = Schedule
        fields = ("task_name", "name", "cron", "payload", "timezone", "enabled")
        field_classes = {"payload": PayloadField}
        help_texts = {
            "cron": "croniter syntax: five fields (minute hour day month weekday), or "
                    "six with seconds last: \"0 9 * * 1-5\" is 09:00 on weekdays, "
                    "\"* * * * * */10\" every ten seconds. Its next three fire times are "
                    "shown on the schedule list and page.",
            "timezone": "An IANA name such as Europe/Paris; empty: the TIME_ZONE setting.",
        }

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if "task_name" in self.fields:
            names = sorted(all_tasks())
            current = self.initial.get("task_name")
            if current and current not in names:
                names.append(current)
            self.fields["task_name"] = forms.ChoiceField(
                choices=[("", "---------"), *((n, n) for n in names)], label="Task"
            )

    def clean_cron(self) -> str:
        cron = (self.cleaned_data.get("cron") or "").strip()
        try:
            validate(cron)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        return cron

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        cron = cleaned.get("cron")
        if cron and "cron" in self.fields and "timezone" not in self.errors:
            # Shown when the form comes back with an error in another field.
            bound = self["cron"]  # made during cleaning: it copied the field's help text
            bound.help_text = (f"Fires next at {fire_times_text(cron, cleaned.get('timezone'))}. "
                               + str(bound.help_text))
        return cleaned

    def clean_timezone(self) -> str:
        name = (self.cleaned_data.get("timezone") or "").strip()
        try:
            check_timezone(name)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        return name


@admin.register(Schedule)
class ScheduleAdmin(StorableLookups, admin.ModelAdmin):
    """Cron schedules: list, enable/disable, run now; edits go through the scheduler."""

    form = ScheduleForm
    list_display = ("task_name", "name", "cron_display", "fire_times_cell", "timezone_display",
                    "next_run_display", "last_run_display", "enabled", "static")
    list_filter = ("enabled", "static", "task_name")
    search_fields = ("task_name", "name")
    actions = ["enable_schedules", "disable_schedules", "run_now"]

    class Media:
        css = {"all": ["conductor_django/admin.css"]}
        js = ["conductor_django/live.js"]  # titles of the cells cut on narrow screens

    @admin.display(description="timezone", ordering="timezone")
    def timezone_display(self, obj: Schedule) -> str:
        if obj.timezone:
            return obj.timezone
        # empty: the TIME_ZONE setting, named (not the setting's name)
        return format_html('<span title="the TIME_ZONE setting">{} <span class="cdj-muted">'
                           "(default)</span></span>", settings.TIME_ZONE or "UTC")

    @admin.display(description="next run", ordering="next_run_at")
    def next_run_display(self, obj: Schedule) -> str:
        return stamp(obj.next_run_at, short=True)

    @admin.display(description="last run", ordering="last_run_at")
    def last_run_display(self, obj: Schedule) -> str:
        return stamp(obj.last_run_at, short=True)

    @admin.display(description="cron", ordering="cron")
    def cron_display(self, obj: Schedule) -> str:
        # the fire times on hover too: a narrow list leaves their column out
        return format_html('<code title="{}: {}">{}</code>', obj.cron,
                           self._fire_times(obj), obj.cron)

    def _fire_times(self, obj: Schedule) -> str:
        """``fire_times_text`` once per row of a list (two columns show it)."""
        if not hasattr(obj, "_cdj_fire_times"):
            obj._cdj_fire_times = fire_times_text(obj.cron, obj.timezone)  # type: ignore[attr-defined]
        return obj._cdj_fire_times  # type: ignore[attr-defined]

    @admin.display(description="next fire times")
    def fire_times_display(self, obj: Schedule) -> str:
        """The next three fire times of the expression, so its meaning is visible."""
        return fire_times_text(obj.cron, obj.timezone)

    @admin.display(description="next fire times")
    def fire_times_cell(self, obj: Schedule) -> str:
        return one_line(self._fire_times(obj))

    def get_readonly_fields(self, request: HttpRequest, obj=None):
        if obj is None:
            return ("next_run_at", "last_run_at")
        fixed = ("task_name", "name", "fire_times_display", "static", "next_run_at",
                 "last_run_at")
        # A static schedule belongs to the code (task(cron=...)): only enabled is editable.
        return (*fixed, "cron", "payload", "timezone") if obj.static else fixed

    def save_model(self, request: HttpRequest, obj: Schedule, form, change: bool) -> None:
        super().save_model(request, obj, form, change)
        trap = second_field_trap(obj.cron)
        if trap is not None and "cron" in form.changed_data:
            self.message_user(request, trap, messages.WARNING)
        if not change or {"cron", "payload", "timezone", "enabled"} & set(form.changed_data):
            scheduler.save_changes(obj)

    def delete_model(self, request: HttpRequest, obj: Schedule) -> None:
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
        done = sum(scheduler.set_enabled(obj, True) for obj in queryset)
        self._report(request, done, queryset.count() - done, "enabled", "already enabled")

    @admin.action(description="Disable selected schedules", permissions=["change"])
    def disable_schedules(self, request: HttpRequest, queryset) -> None:
        done = sum(scheduler.set_enabled(obj, False) for obj in queryset)
        self._report(request, done, queryset.count() - done, "disabled", "already disabled")

    @admin.action(description="Run selected schedules now", permissions=["change"])
    def run_now(self, request: HttpRequest, queryset) -> None:
        done = sum(scheduler.run_now(obj) is not None for obj in queryset)
        self._report(request, done, queryset.count() - done, "started",
                     "a run is going on, or the task is not registered")

"""Admin forms: a schedule's cron and timezone are validated like ``conductor.schedule``."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError

from .cron import check_timezone, next_fire_times, validate, zone
from .models import Schedule
from .registry import all_tasks


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

    def clean(self) -> dict:
        cleaned = super().clean()
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

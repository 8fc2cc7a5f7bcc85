"""Admin forms: a schedule's cron and timezone are validated like ``conductor.schedule``."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError

from .definitions.cron import check_timezone, validate
from .definitions.registry import all_tasks
from .models import Schedule


class ScheduleForm(forms.ModelForm):
    class Meta:
        model = Schedule
        fields = ("task_name", "name", "cron", "payload", "timezone", "enabled")
        help_texts = {
            "cron": "croniter syntax: five fields, or six with seconds last "
                    "(\"0 9 * * 1-5\", \"*/10 * * * * *\").",
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
            return validate(cron)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None

    def clean_timezone(self) -> str:
        name = (self.cleaned_data.get("timezone") or "").strip()
        try:
            check_timezone(name)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        return name

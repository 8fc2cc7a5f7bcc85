"""The log lines of an execution on its admin page (``ExecutionAdmin.inlines``)."""

from __future__ import annotations

from django.contrib import admin
from django.utils.html import format_html

from ..models import ExecutionLog
from .cells import stamp
from .display import ExecutionPartInline


class ExecutionLogInline(ExecutionPartInline):
    """Read-only: the last ``LOG_LINES`` lines, oldest first."""

    model = ExecutionLog
    verbose_name = "log line"
    fields = ("created_display", "attempt", "level_display", "logger", "message_display")
    readonly_fields = fields

    @admin.display(description="time")
    def created_display(self, obj: ExecutionLog) -> str:
        return stamp(obj.created_at, ms=True)  # as every time of the execution page

    @admin.display(description="level")
    def level_display(self, obj: ExecutionLog) -> str:
        return obj.levelname

    @admin.display(description="message")
    def message_display(self, obj: ExecutionLog) -> str:
        return format_html('<pre style="margin:0;white-space:pre-wrap">{}</pre>', obj.message)

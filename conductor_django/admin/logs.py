"""The log lines of an execution on its admin page (``ExecutionAdmin.inlines``)."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html

from ..models import ExecutionLog


class ExecutionLogInline(admin.TabularInline):
    """Read-only: the last ``LOG_LINES`` lines, oldest first."""

    model = ExecutionLog
    extra = 0
    can_delete = False
    verbose_name = "log line"
    fields = ("created_at", "attempt", "level_display", "logger", "message_display")
    readonly_fields = fields
    show_change_link = False

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj=None) -> bool:
        # whoever may see the execution may see its log lines
        return request.user.has_perm("conductor_django.view_execution") or \
            request.user.has_perm("conductor_django.change_execution")

    @admin.display(description="level")
    def level_display(self, obj: ExecutionLog) -> str:
        return obj.levelname

    @admin.display(description="message")
    def message_display(self, obj: ExecutionLog) -> str:
        return format_html('<pre style="margin:0;white-space:pre-wrap">{}</pre>', obj.message)

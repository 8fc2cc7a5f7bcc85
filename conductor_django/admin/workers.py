"""Live workers in the admin."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from ..models import Worker
from .cells import stamp
from .display import (
    heartbeat_age,
    running_count,
)
from .safety import StorableLookups


@admin.register(Worker)
class WorkerAdmin(StorableLookups, admin.ModelAdmin):
    list_display = ("id", "hostname", "pid", "queues_display", "concurrency",
                    "running_display", "heartbeat_age_display", "started_display")
    list_filter = ("hostname",)

    class Media:
        css = {"all": ["conductor_django/admin.css"]}
        js = ["conductor_django/live.js"]  # titles of the cells cut on narrow screens

    def get_queryset(self, request: HttpRequest):
        return super().get_queryset(request).annotate(running_count=running_count())

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    @admin.display(description="queues")
    def queues_display(self, obj: Worker) -> str:
        return ", ".join(obj.queues) if obj.queues else "(every queue)"

    @admin.display(description="running", ordering="running_count")
    def running_display(self, obj: Worker) -> str:
        url = reverse("admin:conductor_django_execution_changelist")
        return format_html('<a href="{}?status__exact=running&locked_by__exact={}">{}</a>',
                           url, obj.pk,
                           obj.running_count)  # type: ignore[attr-defined]  # see get_queryset

    @admin.display(description="started", ordering="started_at")
    def started_display(self, obj: Worker) -> str:
        return stamp(obj.started_at, short=True)

    @admin.display(description="heartbeat age", ordering="-last_heartbeat")
    def heartbeat_age_display(self, obj: Worker) -> str:
        return heartbeat_age(obj)

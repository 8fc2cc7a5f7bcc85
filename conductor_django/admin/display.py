"""Small renderers and queries shared by the admin pages."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.db.models import Count, IntegerField, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html

from .. import conf
from ..definitions.values import storable_text
from ..exceptions import DEFAULT_REASON
from ..models import Execution, Worker

S = Execution.Status
LIST_ON_CONFIRMATION = 100  # executions listed by name on a confirmation page
CHILDREN_SHOWN = 20
REASON_MAX_LENGTH = 1000


def pretty_json(value: Any) -> str:
    """Indented JSON in a ``<pre>``, escaped."""
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
    return format_html('<pre class="cdj-json">{}</pre>', text)


def status_badge(status: str) -> str:
    label = S(status).label if status in S.values else status
    return format_html('<span class="cdj-status cdj-status-{}">{}</span>', status, label)


def excerpt(text: str, length: int = 80) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= length else text[: length - 1] + "…"


def clean_reason(raw: str | None) -> str:
    """The cancel reason typed in the admin: one line, storable (a NUL is dropped)."""
    text = (raw or "").replace("\x00", " ")
    reason = storable_text(" ".join(text.split())[:REASON_MAX_LENGTH])
    return reason or DEFAULT_REASON


# --- workers (the dashboard lists them too) ---------------------------------------


def running_count() -> Coalesce:
    running = (
        Execution.objects.filter(status=S.RUNNING, locked_by=OuterRef("pk")).order_by()
        .values("locked_by").annotate(n=Count("*")).values("n")
    )
    return Coalesce(Subquery(running, output_field=IntegerField()), Value(0))


def heartbeat_age(worker: Worker) -> str:
    age = (timezone.now() - worker.last_heartbeat).total_seconds()
    dead_after = float(conf.get("WORKER_DEAD_AFTER"))
    if age > dead_after:
        return format_html('<span class="cdj-status cdj-status-failed">{} s (dead)</span>',
                           f"{age:.0f}")
    return f"{age:.1f} s"


def worker_rows() -> list[tuple[Worker, str]]:
    workers = Worker.objects.annotate(running_count=running_count()).order_by("-started_at")
    return [(w, heartbeat_age(w)) for w in workers[:50]]


# --- list filters: choices without scanning the table ---------------------------------


class ExecutionPartInline(admin.TabularInline):
    """A read-only inline of rows that belong to an execution (steps, signals, log lines):
    whoever may see the execution sees them; nobody adds, changes or deletes them here."""

    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return (request.user.has_perm("conductor_django.view_execution")
                or request.user.has_perm("conductor_django.change_execution"))

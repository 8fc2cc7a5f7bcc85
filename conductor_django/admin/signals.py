"""Signals and progress in the admin (``ctx.wait_for_signal``, ``ctx.progress``).

What ``ExecutionAdmin`` shows and does for them:

* a progress bar column and a "waiting for" column to the list, and the list filter
  "waiting for a signal";
* on the execution page, the progress bar and, while the execution waits for a signal,
  its name and deadline and a form to send it: one button per entry of ``choices``, or
  a JSON payload field, until the deadline passes. The form is a POST with CSRF to
  ``<id>/signal/``, needs the ``conductor_django.signal_execution`` and view
  permissions (403 without them) and records the admin user as ``sent_by``; a signal
  that is not used (``Signal.objects.deliver``) is reported with the reason;
* the signals received (``SignalInline``), with who sent them and when they were
  consumed.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from ..definitions.values import MAX_JSON_DEPTH
from ..models import Execution, Signal
from .cells import stamp
from .display import ExecutionPartInline, pretty_json

if TYPE_CHECKING:
    from .executions import ExecutionAdmin

SIGNAL_PERMISSION = "conductor_django.signal_execution"


def waiting(obj: Execution) -> dict[str, Any] | None:
    """What an unfinished execution waits for: ``{"name", "until", "choices", "expired"}``,
    or None. ``expired``: the deadline has passed (no signal is taken any more, the
    timeout is recorded when a worker resumes it)."""
    spec = obj.waiting_for
    if obj.is_finished or not isinstance(spec, dict) or not isinstance(spec.get("signal"), str):
        return None
    until = spec.get("until")
    try:
        deadline = datetime.fromisoformat(until) if isinstance(until, str) else None
    except ValueError:
        deadline = None
    if deadline is not None and deadline.tzinfo is None:
        deadline = None  # not written by conductor (an aware ISO datetime)
    choices = spec.get("choices")
    return {"name": spec["signal"],
            "choices": [c for c in choices if isinstance(c, str)]
            if isinstance(choices, list) else [],
            "until": deadline,
            "expired": deadline is not None and timezone.now() >= deadline}


def progress_bar(progress: Any) -> str:
    """``<progress>`` with "done/total message"; indeterminate without a total."""
    if not isinstance(progress, dict) or not isinstance(progress.get("done"), int | float):
        return "-"
    done, total = progress["done"], progress.get("total")
    message = progress.get("message") or ""
    if isinstance(total, int | float) and total > 0:
        label = f"{done:g}/{total:g}"
        bar = format_html('<progress class="cdj-progress" value="{}" max="{}">{}</progress>',
                          min(done, total), total, label)
    else:
        label = f"{done:g}"
        bar = format_html('<progress class="cdj-progress">{}</progress>', label)
    return format_html('<span class="cdj-progress-cell" title="{}">{} {} {}</span>', message,
                       bar, label, message)


class SignalInline(ExecutionPartInline):
    model = Signal
    fields = ("name", "payload_display", "sent_by", "sent_display", "consumed_display")
    readonly_fields = fields
    verbose_name = "signal received"
    verbose_name_plural = "signals received"

    @admin.display(description="sent at")
    def sent_display(self, obj: Signal) -> str:
        return stamp(obj.sent_at, ms=True)

    @admin.display(description="consumed at")
    def consumed_display(self, obj: Signal) -> str:
        return stamp(obj.consumed_at, ms=True)

    @admin.display(description="payload")
    def payload_display(self, obj: Signal) -> str:
        return pretty_json(obj.payload)


class WaitingForSignalFilter(admin.SimpleListFilter):
    title = "waiting for a signal"
    parameter_name = "waiting_for_signal"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple]:
        return [("yes", "Waiting for a signal")]

    def queryset(self, request: HttpRequest, queryset):
        if self.value() == "yes":
            return queryset.filter(status__in=Execution.UNFINISHED, waiting_for__isnull=False)
        return queryset


#: The list's columns and the execution page's fields of signals and progress.
SIGNAL_FIELDS = ("progress_display", "waiting_display")


def has_signal_permission(request: HttpRequest) -> bool:
    return request.user.has_perm(SIGNAL_PERMISSION)


@admin.display(description="progress")
def progress_display(model_admin: Any, obj: Execution) -> str:
    return progress_bar(obj.progress)


@admin.display(description="waiting for")
def waiting_display(model_admin: Any, obj: Execution) -> str:
    wait = waiting(obj)
    if wait is None:
        return "-"
    if wait["until"] is None:
        return format_html('signal <code>{}</code>', wait["name"])
    return format_html('signal <code>{}</code> {} {}', wait["name"],
                       "timed out at" if wait["expired"] else "until",
                       stamp(wait["until"], short=True))


def signal_context(request: HttpRequest, obj: Execution) -> dict[str, Any]:
    """What the execution page adds to its template's context: the signal awaited, the
    form to send it, the progress bar."""
    wait = waiting(obj)
    return {
        "signal_wait": wait,
        "signal_until": stamp(wait["until"], ms=True) if wait and wait["until"] else "",
        "can_signal": has_signal_permission(request),
        "signal_url": reverse("admin:conductor_django_execution_signal", args=[obj.pk]),
        "progress_bar": progress_bar(obj.progress) if obj.progress else "",
    }


def signal_view(model_admin: ExecutionAdmin, request: HttpRequest,
                object_id: str) -> HttpResponse:
    """``<id>/signal/`` (POST only, ``ExecutionAdmin.get_urls``): send the signal the
    execution waits for."""
    if not has_signal_permission(request):
        raise PermissionDenied
    obj = model_admin.get_object(request, object_id)
    if obj is None:
        raise Http404("No such execution")
    if not model_admin.has_view_permission(request, obj):
        raise PermissionDenied
    back = HttpResponseRedirect(reverse("admin:conductor_django_execution_change",
                                        args=[obj.pk]))
    name = request.POST.get("name", "")
    if "choice" in request.POST:
        payload: Any = request.POST["choice"]
    else:
        try:
            payload = json.loads(request.POST.get("payload") or "null")
        except RecursionError:
            model_admin.message_user(request, "Not sent: the payload nests deeper than "
                                     f"{MAX_JSON_DEPTH} levels.", messages.WARNING)
            return back
        except ValueError as exc:
            model_admin.message_user(request, f"Not sent: the payload is not JSON ({exc}).",
                                     messages.WARNING)
            return back
    try:
        unused = Signal.objects.deliver(obj.pk, name, payload,
                                        sent_by=request.user.get_username())
    except (TypeError, ValueError) as exc:
        model_admin.message_user(request, f"Not sent: {exc}", messages.WARNING)
        return back
    if unused:
        model_admin.message_user(request, f"Not sent: {unused}.", messages.WARNING)
    else:
        model_admin.message_user(request, f"Signal {name!r} sent: {json.dumps(payload)}",
                                 messages.SUCCESS)
    return back

"""The operator's controls in the admin: pause and resume queues and tasks, change a
task's limits live ("Pauses and limits", the list of ``Control``).

One page: what is paused (since when, for how long, by whom, what happens to its
schedules, with a Resume button), a form to pause a queue or a task, and every
registered task with its code's limits, the operator's overrides and what workers use,
with a form to change them and a "back to the code's value" button. Each POST is
CSRF-protected (``admin_view``) and needs its permission: ``pause_queue`` to pause and
resume, ``set_limits`` to change limits (a staff user without it: 403, nothing
changes); each change is one entry of the admin log. A bad value is a message, not a
500, and writes nothing. The verbs are ``conductor_django.operations``'.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone

from .. import operations
from ..definitions.controls import rate_text
from ..definitions.registry import all_tasks
from ..exceptions import TaskNotFound
from ..models import Control
from . import dead_letters
from .cells import seconds

PAUSE_PERMISSION = "conductor_django.pause_queue"
LIMITS_PERMISSION = "conductor_django.set_limits"
LIMIT_FIELDS = ("concurrency", "key_concurrency", "rate_limit")


def paused_rows() -> list[dict[str, Any]]:
    """What is paused, for the dashboard and this page: each with "for how long"."""
    now = timezone.now()
    return [{"pause": p, "for": seconds(max(0.0, (now - p.since).total_seconds()))}
            for p in operations.paused()]


def _limit(value: Any) -> str:
    return "-" if value is None else str(value)


@admin.register(Control)
class ControlAdmin(admin.ModelAdmin):
    """"Pauses and limits": one page of its own instead of the model's list."""

    class Media:
        css = {"all": ["conductor_django/admin.css"]}

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        user = request.user
        return any(user.has_perm(p) for p in (
            "conductor_django.view_control", "conductor_django.view_execution",
            PAUSE_PERMISSION, LIMITS_PERMISSION))

    def get_urls(self) -> list:
        view = self.admin_site.admin_view
        return [
            path("pause/", view(self.pause_view), name="conductor_django_control_pause"),
            path("resume/", view(self.resume_view), name="conductor_django_control_resume"),
            path("limits/", view(self.limits_view), name="conductor_django_control_limits"),
            path("failed-for-good/", view(self.dead_letters_view),
                 name="conductor_django_control_dead_letters"),
            *super().get_urls(),
        ]

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        tasks = []
        registered = all_tasks()
        for seen in operations.all_limits():
            name = seen.task
            tasks.append({
                "name": name,
                "batch": registered[name].batch is not None,
                "code": [_limit(seen.code.concurrency), _limit(seen.code.key_concurrency),
                         rate_text(seen.code.rate_limit) or "-"],
                "override": seen.override,
                "override_rate": rate_text(seen.override.rate_limit),
                "changed": not seen.override.empty,
                "effective": [_limit(seen.effective.concurrency),
                              _limit(seen.effective.key_concurrency),
                              rate_text(seen.effective.rate_limit) or "-"],
                "changed_at": seen.changed_at,
                "changed_by": seen.changed_by,
            })
        context = {
            **self.admin_site.each_context(request),
            "title": "Pauses and limits",
            "opts": self.model._meta,
            "paused": paused_rows(),
            "tasks": tasks,
            "queues": sorted({t.get_queue() for t in registered.values()}),
            "can_pause": request.user.has_perm(PAUSE_PERMISSION),
            "can_set_limits": request.user.has_perm(LIMITS_PERMISSION),
            "media": self.media,
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/conductor_django/controls.html", context)

    def dead_letters_view(self, request: HttpRequest) -> HttpResponse:
        return dead_letters.dead_letters_view(self, request)

    # --- the POSTs -------------------------------------------------------------------

    def _post(self, request: HttpRequest, permission: str) -> None:
        if request.method != "POST":
            raise PermissionDenied
        if not request.user.has_perm(permission):
            raise PermissionDenied

    def _back(self, request: HttpRequest) -> HttpResponseRedirect:
        target = request.POST.get("next", "")
        dashboard = reverse("admin:conductor_django_execution_dashboard")
        return HttpResponseRedirect(dashboard if target == "dashboard"
                                    else reverse("admin:conductor_django_control_changelist"))

    def _log(self, request: HttpRequest, scope: str, name: str, message: str) -> None:
        row = Control.objects.filter(scope=scope, name=name).first()
        if row is not None:
            self.log_change(request, row, message)

    def _target(self, request: HttpRequest) -> tuple[str, str]:
        scope = request.POST.get("scope", "")
        name = request.POST.get("name", "").strip()
        if scope not in ("queue", "task"):
            raise ValueError("Choose a queue or a task to pause")
        return scope, name

    def pause_view(self, request: HttpRequest) -> HttpResponse:
        self._post(request, PAUSE_PERMISSION)
        try:
            scope, name = self._target(request)
            schedules = request.POST.get("schedules", "queue")
            cancel = request.POST.get("cancel_running") == "on"
            changed = operations.pause(**{scope: name}, schedules=schedules,
                                       cancel_running=cancel,
                                       by=request.user.get_username()[:150])
        except (TypeError, ValueError, TaskNotFound) as exc:
            self.message_user(request, f"Not paused: {exc}", messages.ERROR)
            return self._back(request)
        what = f"{scope} {name}"
        extra = " and its running executions cancelled" if cancel else ""
        self._log(request, scope, name, f"Paused {what} (schedules: {schedules}){extra}")
        self.message_user(request, f"Paused {what}{extra}." if changed
                          else f"{what.capitalize()} was paused already.", messages.SUCCESS)
        return self._back(request)

    def resume_view(self, request: HttpRequest) -> HttpResponse:
        self._post(request, PAUSE_PERMISSION)
        try:
            scope, name = self._target(request)
            changed = operations.resume(**{scope: name})
        except (TypeError, ValueError) as exc:
            self.message_user(request, f"Not resumed: {exc}", messages.ERROR)
            return self._back(request)
        if changed:
            self._log(request, scope, name, f"Resumed {scope} {name}")
        self.message_user(request, f"Resumed {scope} {name}." if changed
                          else f"{scope.capitalize()} {name} was not paused.", messages.SUCCESS)
        return self._back(request)

    def limits_view(self, request: HttpRequest) -> HttpResponse:
        self._post(request, LIMITS_PERMISSION)
        name = request.POST.get("task", "")
        if request.POST.get("reset"):
            values: dict[str, Any] = dict.fromkeys(LIMIT_FIELDS)
        else:
            values = {f: (request.POST.get(f, "").strip() or None) for f in LIMIT_FIELDS}
        try:
            now = operations.set_limits(name, **values, by=request.user.get_username()[:150])
        except (TypeError, ValueError, TaskNotFound) as exc:
            self.message_user(request, f"Limits of {name} not changed: {exc}", messages.ERROR)
            return self._back(request)
        said = (f"concurrency {_limit(now.concurrency)}, key_concurrency "
                f"{_limit(now.key_concurrency)}, rate_limit {rate_text(now.rate_limit) or '-'}")
        what = ("back to the code's values" if request.POST.get("reset")
                else "changed")
        self._log(request, "task", name, f"Limits of {name} {what}: {said}")
        self.message_user(request, f"Limits of {name} {what}: {said}. Every worker uses them "
                          "within a few seconds.", messages.SUCCESS)
        return self._back(request)

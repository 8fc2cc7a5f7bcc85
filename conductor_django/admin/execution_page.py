"""The execution page as a live view (mixed into ``ExecutionAdmin``).

- Timestamps to the millisecond with the time zone's name (``cells.stamp``) instead of
  Django's minute-only format.
- The steps a page at a time (``steps.step_page``; ``?steps=N``) and a timeline of the
  attempts and of the steps shown (``timeline``), as inline SVG.
- ``<id>/live/``: a small JSON snapshot (status, whether a cancel is being honoured,
  progress, counts of steps and attempts, and a ``version`` that changes whenever the
  page would). A short script (``static/conductor_django/live.js``) polls it every few
  seconds while the execution is unfinished, redraws the page when the version
  changes, and stops once the execution is finished.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.urls import path, reverse
from django.utils import timezone

from ..models import Execution, Step
from ..state.attempts import history
from .cells import execution_status, stamp
from .steps import PAGE_PARAM, StepPage, step_page
from .timeline import timeline

#: The model's timestamps and what the page shows instead.
TIMESTAMPS = {name: f"{name}_stamp" for name in
              ("created_at", "run_at", "started_at", "finished_at", "locked_at")}
LIVE_INTERVAL_MS = 2000
_PAGE = "_cdj_step_page"


def snapshot(obj: Execution, step_count: int, attempts: int) -> dict[str, Any]:
    """What the live poll returns for an execution."""
    state = {
        "id": str(obj.pk),
        "status": obj.status,
        "finished": obj.is_finished,
        "cancelling": bool(obj.cancelled and obj.status == Execution.Status.RUNNING),
        "attempts": obj.attempts,
        "attempt_rows": attempts,
        "steps": step_count,
        "progress": obj.progress,
        "waiting_for": obj.waiting_for,
        "finished_at": obj.finished_at.isoformat() if obj.finished_at else None,
        "run_at": obj.run_at.isoformat() if obj.run_at else None,
    }
    state["version"] = json.dumps(state, sort_keys=True, default=str)
    return state


class ExecutionPageMixin:
    """See the module docstring."""

    admin_site: Any
    model: Any

    # --- timestamps --------------------------------------------------------------------

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> list:
        fieldsets = super().get_fieldsets(request, obj)  # type: ignore[misc]
        return [(name, {**options, "fields": [TIMESTAMPS.get(f, f) for f in
                                              options.get("fields", ())]})
                for name, options in fieldsets]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list:
        fields = list(super().get_readonly_fields(request, obj))  # type: ignore[misc]
        return [*fields, *(v for v in TIMESTAMPS.values() if v not in fields)]

    @admin.display(description="created")
    def created_at_stamp(self, obj: Execution) -> str:
        return stamp(obj.created_at, ms=True)

    @admin.display(description="run at")
    def run_at_stamp(self, obj: Execution) -> str:
        return stamp(obj.run_at, ms=True)

    @admin.display(description="started")
    def started_at_stamp(self, obj: Execution) -> str:
        return stamp(obj.started_at, ms=True)

    @admin.display(description="finished")
    def finished_at_stamp(self, obj: Execution) -> str:
        return stamp(obj.finished_at, ms=True)

    @admin.display(description="locked at")
    def locked_at_stamp(self, obj: Execution) -> str:
        return stamp(obj.locked_at, ms=True)

    # --- steps, a page at a time, and the timeline ---------------------------------------

    def get_formset_kwargs(self, request: HttpRequest, obj: Any, inline: Any,
                           prefix: str) -> dict[str, Any]:
        kwargs = super().get_formset_kwargs(request, obj, inline, prefix)  # type: ignore[misc]
        page: StepPage | None = getattr(request, _PAGE, None)
        if inline.model is Step and page is not None:
            kwargs["queryset"] = inline.get_queryset(request).filter(pk__in=page.ids)
        return kwargs

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: Any = None) -> Any:
        obj = self.get_object(request, object_id)  # type: ignore[attr-defined]
        extra: dict[str, Any] = {}
        if obj is not None:
            page = step_page(obj, request.GET.get(PAGE_PARAM))
            setattr(request, _PAGE, page)
            attempts = history(obj)
            extra = {
                "step_page": page,
                "step_page_param": PAGE_PARAM,
                "timeline": timeline(obj, attempts, page.steps, whole=page.is_whole),
                "live_url": reverse("admin:conductor_django_execution_live", args=[obj.pk]),
                "live_version": snapshot(obj, page.total, len(attempts))["version"],
                "live_interval": LIVE_INTERVAL_MS,
                "status_badge": execution_status(obj),
            }
        return super().change_view(request, object_id, form_url,  # type: ignore[misc]
                                   {**extra, **(extra_context or {})})

    # --- the live poll -------------------------------------------------------------------

    def get_urls(self) -> list:
        return [
            path("<path:object_id>/live/", self.admin_site.admin_view(self.live_view),
                 name="conductor_django_execution_live"),
            *super().get_urls(),  # type: ignore[misc]
        ]

    def live_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        if not self.has_view_permission(request):  # type: ignore[attr-defined]
            raise PermissionDenied
        obj = self.get_object(request, object_id)  # type: ignore[attr-defined]
        if obj is None:
            raise Http404("No such execution")
        steps = Step.objects.using(obj._state.db).filter(execution_id=obj.pk).count()
        state = snapshot(obj, steps, len(history(obj)))
        state["now"] = timezone.now().isoformat()
        response = JsonResponse(state)
        response["Cache-Control"] = "no-store"
        return response

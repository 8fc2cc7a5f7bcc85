"""The execution page as a live view (``ExecutionAdmin``'s change page).

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
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse
from django.utils import timezone

from ..models import Execution, Step
from ..state.attempts import history
from .cells import execution_status, stamp
from .steps import PAGE_PARAM, StepPage, step_page
from .timeline import timeline

if TYPE_CHECKING:
    from .executions import ExecutionAdmin

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


# --- timestamps (``ExecutionAdmin``'s fields, shown instead of the model's) -------------


@admin.display(description="created")
def created_at_stamp(model_admin: Any, obj: Execution) -> str:
    return stamp(obj.created_at, ms=True)


@admin.display(description="run at")
def run_at_stamp(model_admin: Any, obj: Execution) -> str:
    return stamp(obj.run_at, ms=True)


@admin.display(description="started")
def started_at_stamp(model_admin: Any, obj: Execution) -> str:
    return stamp(obj.started_at, ms=True)


@admin.display(description="finished")
def finished_at_stamp(model_admin: Any, obj: Execution) -> str:
    return stamp(obj.finished_at, ms=True)


@admin.display(description="locked at")
def locked_at_stamp(model_admin: Any, obj: Execution) -> str:
    return stamp(obj.locked_at, ms=True)


def stamped(fields: Sequence[str]) -> tuple[str, ...]:
    """``fields`` with each of the model's timestamps replaced by its stamp."""
    return tuple(TIMESTAMPS.get(f, f) for f in fields)


# --- steps, a page at a time, and the timeline ---------------------------------------------


def page_context(request: HttpRequest, obj: Execution) -> dict[str, Any]:
    """What the execution page adds to its template's context; remembers the page of
    steps shown for ``step_formset_kwargs``."""
    page = step_page(obj, request.GET.get(PAGE_PARAM))
    setattr(request, _PAGE, page)
    attempts = history(obj)
    return {
        "step_page": page,
        "step_page_param": PAGE_PARAM,
        "timeline": timeline(obj, attempts, page.steps, whole=page.is_whole),
        "live_url": reverse("admin:conductor_django_execution_live", args=[obj.pk]),
        "live_version": snapshot(obj, page.total, len(attempts))["version"],
        "live_interval": LIVE_INTERVAL_MS,
        "status_badge": execution_status(obj),
    }


def step_formset_kwargs(request: HttpRequest, inline: Any,
                        kwargs: dict[str, Any]) -> dict[str, Any]:
    """The step inline's formset shows the page of steps chosen by ``page_context``."""
    page: StepPage | None = getattr(request, _PAGE, None)
    if inline.model is Step and page is not None:
        kwargs["queryset"] = inline.get_queryset(request).filter(pk__in=page.ids)
    return kwargs


# --- the live poll ---------------------------------------------------------------------------


def live_view(model_admin: ExecutionAdmin, request: HttpRequest,
              object_id: str) -> HttpResponse:
    """``<id>/live/``: the JSON snapshot the page polls."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    obj = model_admin.get_object(request, object_id)
    if obj is None:
        raise Http404("No such execution")
    steps = Step.objects.using(obj._state.db).filter(execution_id=obj.pk).count()
    state = snapshot(obj, steps, len(history(obj)))
    state["now"] = timezone.now().isoformat()
    response = JsonResponse(state)
    response["Cache-Control"] = "no-store"
    return response

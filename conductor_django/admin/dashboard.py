"""The dashboard of ``ExecutionAdmin`` (``dashboard/``): what an operator checks first.

Per queue: what is pending now, scheduled for later, running and suspended, what
finished in the last day (cancelled before finishing apart from failed), and the queue lag
(age of the oldest runnable execution), ``QUEUES_PER_PAGE`` queues a page. What is
paused and for how long (``controls``), with a Resume button for who may. Per task:
runs in the last hour and day, failure rate, p50/p95 run time. The throughput of the
last hour, the workers with their load, the latest failures with their errors. The
page refreshes itself every ``REFRESH_SECONDS`` (``static/conductor_django/live.js``).
Each number is one query whose cost does not grow with the table (docs/admin.md shows
their plans).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse

from . import stats
from .cells import one_line, seconds, stamp
from .charts import throughput_chart
from .controls import PAUSE_PERMISSION, paused_rows
from .display import worker_rows

if TYPE_CHECKING:
    from .executions import ExecutionAdmin

REFRESH_SECONDS = 10
FAILURES_SHOWN = 10
#: Rows of the queue table per page (``?queues_page=N``); the totals count every queue.
QUEUES_PER_PAGE = 50
QUEUES_PAGE = "queues_page"


def load(running: int, concurrency: int) -> tuple[int, str]:
    """A worker's load: percent of its slots in use, and "3/8"."""
    if concurrency <= 0:
        return 0, f"{running}"
    return min(100, round(100 * running / concurrency)), f"{running}/{concurrency}"


def dashboard_view(model_admin: ExecutionAdmin, request: HttpRequest) -> HttpResponse:
    """``dashboard/``: see the module docstring."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    overview = stats.overview()
    changelist = reverse("admin:conductor_django_execution_changelist")
    workers = [(w, age, *load(w.running_count, w.concurrency))  # type: ignore[attr-defined]
               for w, age in worker_rows()]
    failures = [
        (f, reverse("admin:conductor_django_execution_change", args=[f.pk]),
         stamp(f.finished_at, short=True), one_line(f.last_error, css="cdj-error-cell"))
        for f in stats.recent_failures(FAILURES_SHOWN)
    ]
    paused = paused_rows()
    paused_queues = {r["pause"].name for r in paused if r["pause"].scope == "queue"}
    paused_tasks = {r["pause"].name for r in paused if r["pause"].scope == "task"}
    tasks = [(t, f"{100 * t.failure_rate:.1f} %", seconds(t.p50), seconds(t.p95),
              t.task_name in paused_tasks) for t in overview.tasks]
    page = Paginator(overview.queues, QUEUES_PER_PAGE).get_page(
        request.GET.get(QUEUES_PAGE))
    queues = [(q, seconds(q.lag) if q.lag is not None else "-", q.queue in paused_queues)
              for q in page]
    context = {
        **model_admin.admin_site.each_context(request),
        "title": "Conductor dashboard",
        "opts": model_admin.model._meta,
        "overview": overview,
        "queues": queues,
        "queues_page": page,
        "queues_page_param": QUEUES_PAGE,
        "tasks": tasks,
        "totals": _totals(overview.queues),
        "changelist_url": changelist,
        "chart": throughput_chart(stats.throughput(minutes=60)),
        "workers": workers,
        "failures": failures,
        "paused": paused,
        "controls_url": reverse("admin:conductor_django_control_changelist"),
        "can_pause": request.user.has_perm(PAUSE_PERMISSION),
        "workers_url": reverse("admin:conductor_django_worker_changelist"),
        "refresh_seconds": REFRESH_SECONDS,
        "updated": stamp(overview.now),
        "media": model_admin.media,
    }
    return TemplateResponse(request, "admin/conductor_django/dashboard.html", context)


def _totals(queues: list[stats.QueueRow]) -> dict[str, int]:
    names = ("pending", "scheduled", "running", "suspended", "completed", "failed",
             "cancelled_before_finishing", "cancelled")
    return {n: sum(getattr(q, n) for q in queues) for n in names}

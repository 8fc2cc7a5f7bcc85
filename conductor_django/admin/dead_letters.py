"""Dead letters: the executions of a task that failed for good, grouped by their error,
each group re-driven at once ("Failed for good", a page of "Pauses and limits").

*Failed for good*: ``status = failed`` and not ``cancel_requested`` - the executions
that used up their attempts or raised ``NonRetryableError`` (not those an operator
cancelled while they waited). A group is one error text; errors longer than
``PREFIX`` characters are grouped by their first ``PREFIX`` characters (a traceback's
head names the error; the rest would make every group its own).

Each group links to its executions on the list and to the bulk confirmation page of
``bulk`` (the same filters as a query string): **Retry all** (each resumes at the step
that failed, after its finished steps) or **Retry all from the start** (every step
discarded). The confirmation counts, states the filters and acts - inside the request
up to ``bulk.INLINE_LIMIT`` executions, else in the background task with its progress -
with the permission ``retry_execution``, recorded in the admin log.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.core.exceptions import PermissionDenied
from django.db.models import Count, Max
from django.db.models.functions import Substr
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse

from ..models import Execution
from .cells import stamp

#: Errors are grouped by at most this many of their first characters.
PREFIX = 200
#: Groups shown per task, the largest first.
GROUPS_SHOWN = 50
#: Tasks listed, the most failures first.
TASKS_SHOWN = 200

RETRY_PERMISSION = "conductor_django.retry_execution"


def failed_for_good() -> Any:
    return Execution.objects.filter(status=Execution.Status.FAILED, cancel_requested=False)


def group_filters(task_name: str, error: str | None) -> dict[str, str]:
    """The execution list's filters that select one group of ``task_name``."""
    filters = {"task_name": task_name, "status__exact": "failed", "cancel_requested": "False"}
    if error is None:
        filters["last_error__isnull"] = "True"
    elif len(error) < PREFIX:
        filters["last_error"] = error
    else:
        filters["last_error__startswith"] = error
    return filters


def groups(task_name: str) -> list[dict[str, Any]]:
    rows = (failed_for_good().filter(task_name=task_name)
            .annotate(head=Substr("last_error", 1, PREFIX))
            .values("head").annotate(n=Count("pk"), latest=Max("finished_at"))
            .order_by("-n", "head")[:GROUPS_SHOWN])
    return list(rows)


def dead_letters_view(model_admin: Any, request: HttpRequest) -> HttpResponse:
    if not request.user.has_perm("conductor_django.view_execution"):
        raise PermissionDenied
    tasks = list(failed_for_good().values("task_name").annotate(n=Count("pk"))
                 .order_by("-n", "task_name")[:TASKS_SHOWN])
    chosen = request.GET.get("task", "")
    if not chosen and tasks:
        chosen = tasks[0]["task_name"]
    changelist = reverse("admin:conductor_django_execution_changelist")
    bulk = reverse("admin:conductor_django_execution_bulk", args=["retry"])
    from_start = reverse("admin:conductor_django_execution_bulk", args=["retry-from-start"])
    may_retry = request.user.has_perm(RETRY_PERMISSION)
    shown = []
    for group in groups(chosen) if chosen else []:
        query = urlencode(group_filters(chosen, group["head"]))
        shown.append({
            "error": group["head"], "count": group["n"],
            "cut": group["head"] is not None and len(group["head"]) >= PREFIX,
            "latest": stamp(group["latest"], short=True),
            "list_url": f"{changelist}?{query}",
            "retry_url": f"{bulk}?{query}" if may_retry else "",
            "from_start_url": f"{from_start}?{query}" if may_retry else "",
        })
    context = {
        **model_admin.admin_site.each_context(request),
        "title": "Failed for good",
        "opts": model_admin.model._meta,
        "tasks": [{**t, "url": "?" + urlencode({"task": t["task_name"]})} for t in tasks],
        "chosen": chosen,
        "groups": shown,
        "prefix": PREFIX,
        "media": model_admin.media,
    }
    return TemplateResponse(request, "admin/conductor_django/dead_letters.html", context)

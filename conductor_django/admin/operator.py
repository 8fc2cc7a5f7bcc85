"""The operator's second chance in the admin (SPEC §14.5): views, action and fields of
``ExecutionAdmin``.

- Each finished step of the execution page offers "Retry from here" (a failed or
  cancelled execution: ``Execution.retry(from_step=...)``, permission
  ``retry_execution``) and "Fork from here" (``Execution.fork``, permission
  ``rerun_execution``); both open a confirmation page listing the steps that will be
  discarded or copied, and act on its POST (CSRF-protected). Both need the view
  permission too, since the page shows the execution.
- The bulk action "Retry from step…" asks for a step name, lists the selected
  executions that have it (and the steps each will discard), then retries them.
- The execution page shows the attempt history (``state.attempts.history``) and the
  fork links both ways; cancel confirmations say how many unfinished descendants will
  be cancelled with the execution.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from ..definitions.values import STEP_NAME_LENGTH, check_text
from ..models import Execution, Step
from ..state.attempts import history
from ..state.operator import RETRYABLE
from .cells import stamp
from .display import LIST_ON_CONFIRMATION

if TYPE_CHECKING:
    from .executions import ExecutionAdmin

RETRY_FROM_STEP = "retry_from_step_selected"


def _change_url(pk: Any) -> str:
    return reverse("admin:conductor_django_execution_change", args=[pk])


def _who(request: HttpRequest) -> str:
    return str(getattr(request.user, "get_username", lambda: "")() or "")


class RedriveStepColumn:
    """The "Retry from here" / "Fork from here" links of a step row, each only for a
    user who may use it (``offer_retry``, ``offer_fork``: set per permission set)."""

    offer_retry = False
    offer_fork = False

    def get_queryset(self, request: HttpRequest) -> Any:
        # Each row's links read its execution's status: one join, not a query per step.
        return super().get_queryset(request).select_related("execution")  # type: ignore[misc]

    @admin.display(description="re-drive")
    def redrive_links(self, obj: Step) -> str:
        execution = obj.execution
        links = []
        if self.offer_retry and execution.status in RETRYABLE:
            links.append(format_html(
                '<a class="cdj-retry-from" href="{}">Retry from here</a>',
                reverse("admin:conductor_django_execution_retry_from",
                        args=[execution.pk, obj.pk])))
        if self.offer_fork:
            links.append(format_html(
                '<a class="cdj-fork-from" href="{}">Fork from here</a>',
                reverse("admin:conductor_django_execution_fork_from",
                        args=[execution.pk, obj.pk])))
        if not links:
            return "-"
        return format_html_join(" · ", "{}", ((link,) for link in links))


# --- the execution page ------------------------------------------------------------------

#: The execution page's fields of the attempts and forks.
REDRIVE_FIELDS = ("attempt_history", "fork_links")


def redrive_inlines(request: HttpRequest, inlines: list) -> list:
    """``inlines`` with the steps' re-drive column, for a user who may use it."""
    retry = request.user.has_perm("conductor_django.retry_execution")
    fork = request.user.has_perm("conductor_django.rerun_execution")
    if not (retry or fork):
        return inlines
    return [_redrive_inline(i, retry, fork) if i.model is Step else i for i in inlines]


@admin.display(description="attempts")
def attempt_history(model_admin: Any, obj: Execution) -> str:
    views = history(obj)
    if not views:
        return "-"
    rows = format_html_join(
        "", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>"
        "<td><pre class=\"cdj-error\">{}</pre></td></tr>",
        ((v.number, v.how, v.outcome, v.worker or "-", stamp(v.started_at, ms=True),
          stamp(v.finished_at, ms=True), v.error) for v in views),
    )
    return format_html(
        '<table class="cdj-attempts"><thead><tr><th>#</th><th>how it ended</th>'
        "<th>outcome</th><th>worker</th><th>started</th><th>finished</th><th>error</th>"
        "</tr></thead><tbody>{}</tbody></table>", rows)


@admin.display(description="forks")
def fork_links(model_admin: Any, obj: Execution) -> str:
    parts = []
    if obj.forked_from_id is not None:
        parts.append(format_html('Forked from <a href="{}">{}</a>',
                                 _change_url(obj.forked_from_id), obj.forked_from_id))
    forks = list(obj.forks.order_by("created_at").values_list("pk", flat=True)[:20])
    if forks:
        parts.append(format_html("Forks: {}", format_html_join(
            ", ", '<a href="{}">{}</a>', ((_change_url(pk), pk) for pk in forks))))
    return format_html_join(" · ", "{}", ((p,) for p in parts)) if parts else "-"


def descendants_of(object_id: str) -> int:
    """How many unfinished descendants cancelling the execution ``object_id`` cancels
    too (the execution page's cancel confirmation says it)."""
    return len(Execution.objects.descendants(object_id)) if _is_uuid(object_id) else 0


def descendant_count(executions: Any) -> int:
    """How many unfinished descendants cancelling ``executions`` cancels too."""
    return sum(len(Execution.objects.descendants(pk))
               for pk in executions.values_list("pk", flat=True)[:LIST_ON_CONFIRMATION])


# --- retry from / fork from a step ---------------------------------------------------------


def _step(model_admin: ExecutionAdmin, request: HttpRequest, object_id: str, step_id: int,
          permission: str) -> tuple[Execution, Step]:
    if not request.user.has_perm(f"conductor_django.{permission}_execution"):
        raise PermissionDenied
    step = Step.objects.filter(pk=step_id, execution_id=object_id).first() \
        if _is_uuid(object_id) else None
    if step is None:
        raise Http404("No such step")
    # The page shows the execution (task, status, steps): seeing it needs the view
    # permission as well, as the execution page itself does.
    if not model_admin.has_view_permission(request, step.execution):
        raise PermissionDenied
    return step.execution, step


def _step_page(model_admin: ExecutionAdmin, request: HttpRequest, execution: Execution,
               step: Step, *, title: str, explanation: str, listed: list, legal: bool,
               button: str) -> TemplateResponse:
    context = {
        **model_admin.admin_site.each_context(request),
        "title": title, "opts": model_admin.model._meta, "original": execution,
        "step": step, "explanation": explanation, "listed": listed, "legal": legal,
        "button": button, "back_url": _change_url(execution.pk), "media": model_admin.media,
    }
    return TemplateResponse(
        request, "admin/conductor_django/execution/step_confirmation.html", context)


def retry_from_view(model_admin: ExecutionAdmin, request: HttpRequest, object_id: str,
                    step_id: int) -> HttpResponse:
    """``<id>/retry-from/<step id>/``: confirm, then retry from that step (POST)."""
    execution, step = _step(model_admin, request, object_id, step_id, "retry")
    if request.method == "POST":
        if execution.retry(from_step=step.name, by=_who(request)):
            model_admin.message_user(request, f"Execution retried from step {step.name!r}: "
                                     "the steps from there on were discarded.",
                                     messages.SUCCESS)
        else:
            model_admin.message_user(request, "Not retried: only a failed or cancelled "
                                     "execution can be retried.", messages.WARNING)
        return HttpResponseRedirect(_change_url(execution.pk))
    discarded = list(execution.steps.filter(pk__gte=step.pk).order_by("pk"))
    return _step_page(
        model_admin, request, execution, step, title=f"Retry from step {step.name}",
        explanation="The execution becomes pending again and runs from this step: "
        "these steps, recorded from it on, are discarded and will run again.",
        listed=discarded, legal=execution.status in RETRYABLE,
        button="Yes, retry from here")


def fork_from_view(model_admin: ExecutionAdmin, request: HttpRequest, object_id: str,
                   step_id: int) -> HttpResponse:
    """``<id>/fork-from/<step id>/``: confirm, then fork from that step (POST)."""
    execution, step = _step(model_admin, request, object_id, step_id, "rerun")
    if request.method == "POST":
        new = execution.fork(step.name, by=_who(request))
        model_admin.message_user(request, f"Forked as execution {new.pk}, running from "
                                 f"step {step.name!r}.", messages.SUCCESS)
        return HttpResponseRedirect(_change_url(new.pk))
    copied = list(execution.steps.filter(pk__lt=step.pk).order_by("pk"))
    return _step_page(
        model_admin, request, execution, step, title=f"Fork from step {step.name}",
        explanation="A new execution of the same task with the same payload starts "
        "from this step; these steps, recorded before it, are copied to it. This "
        "execution is left as it is.",
        listed=copied, legal=True, button="Yes, fork from here")


# --- the bulk action -----------------------------------------------------------------------


@admin.action(description="Retry from step…", permissions=["retry"])
def retry_from_step_selected(model_admin: ExecutionAdmin, request: HttpRequest,
                             queryset: Any) -> Any:
    name = (request.POST.get("step") or "").strip()
    if name:
        try:  # a name no step can have (NUL, lone surrogate, too long): no query
            check_text(name, "The step name", STEP_NAME_LENGTH)
        except ValueError as exc:
            model_admin.message_user(request, f"Not retried: {exc}", messages.WARNING)
            return None
    legal = queryset.filter(status__in=RETRYABLE)
    if name:
        legal = legal.filter(steps__name=name)
    if request.POST.get("confirm") == "yes" and name:
        total = queryset.count()
        done = sum(1 for e in legal.order_by().iterator()
                   if e.retry(from_step=name, by=_who(request)))
        model_admin.report(request, done, total - done, f"retried from step {name!r}",
                           "skipped (not failed or cancelled, or without that step)")
        return None
    rows = [(e, list(e.steps.filter(pk__gte=e.steps.get(name=name).pk)
                     .order_by("pk").values_list("name", flat=True)) if name else [])
            for e in legal.order_by("-created_at")[:LIST_ON_CONFIRMATION]]
    context = {
        **model_admin.admin_site.each_context(request),
        "title": "Retry from step", "opts": model_admin.model._meta, "step": name,
        "rows": rows, "legal_count": legal.count() if name else 0,
        "selected_count": queryset.count(),
        "selected_ids": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
        "select_across": request.POST.get("select_across", "0"),
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME, "action": RETRY_FROM_STEP,
        "media": model_admin.media,
    }
    return TemplateResponse(
        request, "admin/conductor_django/execution/retry_from_step.html", context)


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


_INLINES: dict[tuple[type, bool, bool], type] = {}


def _redrive_inline(inline: type, retry: bool, fork: bool) -> type:
    """``inline`` (the steps) with the re-drive column offering the links allowed."""
    key = (inline, retry, fork)
    if key not in _INLINES:
        fields = (*inline.fields, "redrive_links")  # type: ignore[attr-defined]
        _INLINES[key] = type(f"Redrive{inline.__name__}", (RedriveStepColumn, inline),
                             {"fields": fields, "readonly_fields": fields,
                              "offer_retry": retry, "offer_fork": fork})
    return _INLINES[key]

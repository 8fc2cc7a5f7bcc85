"""The operator's second chance in the admin (SPEC §14.5), mixed into ``ExecutionAdmin``.

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
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from ..definitions.values import STEP_NAME_LENGTH, check_text
from ..models import Execution, Step
from ..state.attempts import history
from ..state.operator import RETRYABLE
from .cells import stamp
from .display import LIST_ON_CONFIRMATION

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


class OperatorAdminMixin:
    """Views, action and fields of the re-drive operations (see the module docstring)."""

    admin_site: Any
    model: Any

    # --- the execution page ------------------------------------------------------------

    def get_inlines(self, request: HttpRequest, obj: Any) -> list:
        inlines = list(super().get_inlines(request, obj))  # type: ignore[misc]
        retry = request.user.has_perm("conductor_django.retry_execution")
        fork = request.user.has_perm("conductor_django.rerun_execution")
        if not (retry or fork):
            return inlines
        return [_redrive_inline(i, retry, fork) if i.model is Step else i for i in inlines]

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> list:
        fieldsets = list(super().get_fieldsets(request, obj))  # type: ignore[misc]
        return [*fieldsets, ("Attempt history and forks",
                             {"fields": ("attempt_history", "fork_links")})]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list:
        fields = list(super().get_readonly_fields(request, obj))  # type: ignore[misc]
        return [*fields, "attempt_history", "fork_links"]

    @admin.display(description="attempts")
    def attempt_history(self, obj: Execution) -> str:
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
    def fork_links(self, obj: Execution) -> str:
        parts = []
        if obj.forked_from_id is not None:
            parts.append(format_html('Forked from <a href="{}">{}</a>',
                                     _change_url(obj.forked_from_id), obj.forked_from_id))
        forks = list(obj.forks.order_by("created_at").values_list("pk", flat=True)[:20])
        if forks:
            parts.append(format_html("Forks: {}", format_html_join(
                ", ", '<a href="{}">{}</a>', ((_change_url(pk), pk) for pk in forks))))
        return format_html_join(" · ", "{}", ((p,) for p in parts)) if parts else "-"

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: Any = None) -> Any:
        count = len(Execution.objects.descendants(object_id)) if _is_uuid(object_id) else 0
        extra = {"descendant_count": count, **(extra_context or {})}
        return super().change_view(request, object_id, form_url, extra)  # type: ignore[misc]

    def descendant_count(self, executions: Any) -> int:
        """How many unfinished descendants cancelling ``executions`` cancels too."""
        return sum(len(Execution.objects.descendants(pk))
                   for pk in executions.values_list("pk", flat=True)[:LIST_ON_CONFIRMATION])

    # --- retry from / fork from a step -------------------------------------------------

    def get_urls(self) -> list:
        wrap = self.admin_site.admin_view
        info = "conductor_django_execution"
        return [
            path("<path:object_id>/retry-from/<int:step_id>/", wrap(self.retry_from_view),
                 name=f"{info}_retry_from"),
            path("<path:object_id>/fork-from/<int:step_id>/", wrap(self.fork_from_view),
                 name=f"{info}_fork_from"),
            *super().get_urls(),  # type: ignore[misc]
        ]

    def _step(self, request: HttpRequest, object_id: str, step_id: int,
              permission: str) -> tuple[Execution, Step]:
        if not request.user.has_perm(f"conductor_django.{permission}_execution"):
            raise PermissionDenied
        step = Step.objects.filter(pk=step_id, execution_id=object_id).first() \
            if _is_uuid(object_id) else None
        if step is None:
            raise Http404("No such step")
        # The page shows the execution (task, status, steps): seeing it needs the view
        # permission as well, as the execution page itself does.
        if not self.has_view_permission(request, step.execution):  # type: ignore[attr-defined]
            raise PermissionDenied
        return step.execution, step

    def _step_page(self, request: HttpRequest, execution: Execution, step: Step, *,
                   title: str, explanation: str, listed: list, legal: bool,
                   button: str) -> TemplateResponse:
        context = {
            **self.admin_site.each_context(request),
            "title": title, "opts": self.model._meta, "original": execution, "step": step,
            "explanation": explanation, "listed": listed, "legal": legal, "button": button,
            "back_url": _change_url(execution.pk), "media": getattr(self, "media", None),
        }
        return TemplateResponse(
            request, "admin/conductor_django/execution/step_confirmation.html", context)

    def retry_from_view(self, request: HttpRequest, object_id: str,
                        step_id: int) -> HttpResponse:
        execution, step = self._step(request, object_id, step_id, "retry")
        if request.method == "POST":
            if execution.retry(from_step=step.name, by=_who(request)):
                self.message_user(request, f"Execution retried from step {step.name!r}: "  # type: ignore[attr-defined]
                                  "the steps from there on were discarded.", messages.SUCCESS)
            else:
                self.message_user(request, "Not retried: only a failed or cancelled "  # type: ignore[attr-defined]
                                  "execution can be retried.", messages.WARNING)
            return HttpResponseRedirect(_change_url(execution.pk))
        discarded = list(execution.steps.filter(pk__gte=step.pk).order_by("pk"))
        return self._step_page(
            request, execution, step, title=f"Retry from step {step.name}",
            explanation="The execution becomes pending again and runs from this step: "
            "these steps, recorded from it on, are discarded and will run again.",
            listed=discarded, legal=execution.status in RETRYABLE,
            button="Yes, retry from here")

    def fork_from_view(self, request: HttpRequest, object_id: str,
                       step_id: int) -> HttpResponse:
        execution, step = self._step(request, object_id, step_id, "rerun")
        if request.method == "POST":
            new = execution.fork(step.name, by=_who(request))
            self.message_user(request, f"Forked as execution {new.pk}, running from step "  # type: ignore[attr-defined]
                              f"{step.name!r}.", messages.SUCCESS)
            return HttpResponseRedirect(_change_url(new.pk))
        copied = list(execution.steps.filter(pk__lt=step.pk).order_by("pk"))
        return self._step_page(
            request, execution, step, title=f"Fork from step {step.name}",
            explanation="A new execution of the same task with the same payload starts "
            "from this step; these steps, recorded before it, are copied to it. This "
            "execution is left as it is.",
            listed=copied, legal=True, button="Yes, fork from here")

    # --- the bulk action ---------------------------------------------------------------

    @admin.action(description="Retry from step…", permissions=["retry"])
    def retry_from_step_selected(self, request: HttpRequest, queryset: Any) -> Any:
        name = (request.POST.get("step") or "").strip()
        if name:
            try:  # a name no step can have (NUL, lone surrogate, too long): no query
                check_text(name, "The step name", STEP_NAME_LENGTH)
            except ValueError as exc:
                self.message_user(request, f"Not retried: {exc}", messages.WARNING)  # type: ignore[attr-defined]
                return None
        legal = queryset.filter(status__in=RETRYABLE)
        if name:
            legal = legal.filter(steps__name=name)
        if request.POST.get("confirm") == "yes" and name:
            total = queryset.count()
            done = sum(1 for e in legal.order_by().iterator()
                       if e.retry(from_step=name, by=_who(request)))
            self.report(request, done, total - done, f"retried from step {name!r}",  # type: ignore[attr-defined]
                        "skipped (not failed or cancelled, or without that step)")
            return None
        rows = [(e, list(e.steps.filter(pk__gte=e.steps.get(name=name).pk)
                         .order_by("pk").values_list("name", flat=True)) if name else [])
                for e in legal.order_by("-created_at")[:LIST_ON_CONFIRMATION]]
        context = {
            **self.admin_site.each_context(request),
            "title": "Retry from step", "opts": self.model._meta, "step": name,
            "rows": rows, "legal_count": legal.count() if name else 0,
            "selected_count": queryset.count(),
            "selected_ids": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
            "select_across": request.POST.get("select_across", "0"),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME, "action": RETRY_FROM_STEP,
            "media": getattr(self, "media", None),
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

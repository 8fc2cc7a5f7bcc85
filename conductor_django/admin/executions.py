"""The executions in the admin: list, detail, operations (cancel, retry, run again), dashboard.

Every state change goes through a model method (``Execution.cancel``, ``.retry``,
``.run_again``); the actions narrow the selection to the executions where the change
is legal, ask for confirmation, need their permission (a staff user without it gets
403 and nothing changes) and report how many were done and skipped. Nothing from a
payload, result or error is rendered unescaped. The list stays fast on millions of
rows: see ``admin/pagination.py`` and ``admin/stats.py`` and docs/admin.md.
"""


from __future__ import annotations

from collections.abc import Callable
from functools import update_wrapper
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.views.decorators.http import require_POST

from .. import conf
from ..definitions.registry import all_tasks
from ..exceptions import DEFAULT_REASON
from ..models import Execution
from ..state.operator import RERUNNABLE, RETRYABLE
from . import execution_page, operator, signals, stats
from .bulk import bulk_links, bulk_view
from .buttons import cancel_view, retry_view, run_again_view
from .cells import execution_status, one_line, stamp
from .dashboard import dashboard_view
from .display import (
    CHILDREN_SHOWN,
    LIST_ON_CONFIRMATION,
    REASON_MAX_LENGTH,
    clean_reason,
    pretty_json,
    status_badge,
)
from .execution_page import live_view, stamped
from .logs import ExecutionLogInline
from .operator import RETRY_FROM_STEP, fork_from_view, retry_from_view
from .pagination import EstimatedCountPaginator
from .safety import StorableLookups
from .search import search
from .signals import SIGNAL_FIELDS, SignalInline, WaitingForSignalFilter, signal_view
from .steps import StepInline


class IndexedValuesFilter(admin.SimpleListFilter):
    """Choices from an index (loose index scan) plus the registered tasks."""

    column = ""

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple]:
        values = set(stats.distinct_values(self.column)) | set(self.known())
        return [(v, v) for v in sorted(values)]

    def known(self) -> list[str]:
        return []

    def queryset(self, request: HttpRequest, queryset):
        value = self.value()
        return queryset if value is None else queryset.filter(**{self.column: value})


class TaskFilter(IndexedValuesFilter):
    title = "task"
    parameter_name = column = "task_name"

    def known(self) -> list[str]:
        return list(all_tasks())


class QueueFilter(IndexedValuesFilter):
    title = "queue"
    parameter_name = column = "queue"

    def known(self) -> list[str]:
        return [conf.get("DEFAULT_QUEUE"), *(t.get_queue() for t in all_tasks().values())]


class KeyFilter(admin.SimpleListFilter):
    """Executions of one flow-control key. The choices are the selected key only (a
    project may have thousands): a key in the list links here, and the search finds any."""

    title = "key"
    parameter_name = "key"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple]:
        value = self.value()
        return [] if value is None else [(value, value)]

    def queryset(self, request: HttpRequest, queryset):
        value = self.value()
        return queryset if value is None else queryset.filter(key=value)


class CancelFilter(admin.SimpleListFilter):
    """Failed executions told apart: cancelled by an operator before they finished
    (status ``failed``, ``cancel_requested``) or failed on their own."""

    title = "failed"
    parameter_name = "cancel"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple]:
        return [("yes", "cancelled before finishing"), ("no", "failed, not cancelled")]

    def queryset(self, request: HttpRequest, queryset):
        value = self.value()
        if value not in ("yes", "no"):
            return queryset
        return queryset.filter(status=Execution.Status.FAILED, cancel_requested=value == "yes")


# --- executions ------------------------------------------------------------------------


# ``Execution`` action names -> the permission each needs (``has_<perm>_permission``).
OPERATIONS = {
    "cancel_selected": "cancel",
    "retry_selected": "retry",
    "run_again_selected": "rerun",
    RETRY_FROM_STEP: "retry",
    "delete_finished": "delete",
}


@admin.register(Execution)
# One admin owning its pages: its extra views are plain functions ``view(model_admin,
# request, ...)`` listed by ``get_urls``, in the modules of their feature: re-drive
# (admin/operator.py), signals and progress (admin/signals.py), the live execution page
# (admin/execution_page.py), the dashboard (admin/dashboard.py), bulk by filter
# (admin/bulk.py), the buttons of the execution page (admin/buttons.py).
class ExecutionAdmin(StorableLookups, admin.ModelAdmin):
    list_display = ("short_id", "status_display", *SIGNAL_FIELDS, "task_name", "queue",
                    "key_link", "attempts_display", "run_at_display", "duration_display",
                    "error_excerpt")
    list_filter = ("status", CancelFilter, TaskFilter, QueueFilter, KeyFilter, "created_at",
                   WaitingForSignalFilter)
    search_fields = ("id", "task_name", "dedupe_key", "key")  # see get_search_results
    search_help_text = ("An execution id or its first characters (the short id shown), or "
                        "an exact task name, dedupe key or key.")
    ordering = ("-created_at",)
    actions = ["cancel_selected", "retry_selected", RETRY_FROM_STEP, "run_again_selected",
               "delete_finished"]
    inlines = [StepInline, ExecutionLogInline, SignalInline]
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    list_per_page = 50
    fieldsets = [
        (None, {"fields": ("id", "task_name", "status_display", "queue", "priority",
                           "event_name", "schedule_name", "dedupe_key", "key",
                           "why_waiting_display")}),
        ("Error", {"fields": ("last_error_display",)}),
        ("Payload and result", {"fields": ("payload_display", "result_display")}),
        # the model's timestamps to the millisecond, with the time zone (``stamped``)
        ("Timing", {"fields": stamped(("created_at", "run_at", "started_at", "finished_at",
                                       "duration_display"))}),
        ("Attempts and lock", {"fields": stamped(("attempts", "max_attempts", "cancelled",
                                                  "resume", "locked_by", "locked_at")),
                               "classes": ["collapse"]}),
        ("Parent and children", {"fields": ("parent_link", "children_links")}),
        ("Progress and signals", {"fields": SIGNAL_FIELDS}),
        ("Attempt history and forks", {"fields": operator.REDRIVE_FIELDS}),
    ]
    readonly_fields = [
        "id", "task_name", "status_display", "queue", "priority", "event_name",
        "schedule_name", "dedupe_key", "key", "why_waiting_display", "created_at", "run_at",
        "started_at", "finished_at",
        "duration_display", "attempts", "max_attempts", "cancelled", "resume", "locked_by",
        "locked_at", "last_error_display", "parent_link", "children_links", "payload_display",
        "result_display", *SIGNAL_FIELDS, *operator.REDRIVE_FIELDS,
        *execution_page.TIMESTAMPS.values(),
    ]
    # Execution log lines (the events issue stores them): their inline or panel goes here,
    # next to StepInline, and in change_form.html where marked.

    class Media:
        css = {"all": ["conductor_django/admin.css"]}
        js = ["conductor_django/live.js"]  # the live execution page, titles of cut cells

    # --- permissions ---------------------------------------------------------------

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        if obj is not None and not obj.is_finished:
            return False  # cancel first: a worker still holds or may claim it
        return super().has_delete_permission(request, obj)

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("conductor_django.cancel_execution")

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("conductor_django.retry_execution")

    def has_rerun_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("conductor_django.rerun_execution")

    def has_signal_permission(self, request: HttpRequest) -> bool:
        return signals.has_signal_permission(request)

    def has_operation_permission(self, request: HttpRequest, permission: str) -> bool:
        return bool(getattr(self, f"has_{permission}_permission")(request))

    def get_actions(self, request: HttpRequest, action_location: Any = None) -> dict:
        # Django 6.1 asks for actions per location (the list, or the change form).
        if action_location is None:
            actions = super().get_actions(request)
        else:
            actions = super().get_actions(  # type: ignore[call-arg]  # Django 6.1
                request, action_location=action_location)
        actions.pop("delete_selected", None)  # replaced by delete_finished
        return actions

    def changelist_view(self, request: HttpRequest, extra_context=None):
        # Django drops an action the user may not run with "No action selected"; an
        # operation without its permission is refused outright instead.
        if request.method == "POST":
            permission = OPERATIONS.get(request.POST.get("action", ""))
            if permission and not self.has_operation_permission(request, permission):
                raise PermissionDenied
        extra_context = {**(extra_context or {}), "dashboard_url": self._url("dashboard"),
                         "bulk_links": bulk_links(self, request)}
        return super().changelist_view(request, extra_context)

    # --- list ----------------------------------------------------------------------

    def get_search_results(self, request: HttpRequest, queryset, search_term: str):
        """Exact matches only, so that every search is an index lookup."""
        return search(queryset, search_term)

    @admin.display(description="id")
    def short_id(self, obj: Execution) -> str:
        return format_html('<code title="{}">{}</code>', obj.pk, str(obj.pk)[:8])

    @admin.display(description="status", ordering="status")
    def status_display(self, obj: Execution) -> str:
        return execution_status(obj)

    @admin.display(description="key", ordering="key")
    def key_link(self, obj: Execution) -> str:
        if obj.key is None:
            return "-"
        url = reverse("admin:conductor_django_execution_changelist")
        return format_html('<a href="{}?{}">{}</a>', url, urlencode({"key": obj.key}),
                           one_line(obj.key))

    @admin.display(description="attempts")
    def attempts_display(self, obj: Execution) -> str:
        return f"{obj.attempts}/{obj.max_attempts}"

    @admin.display(description="run at", ordering="run_at")
    def run_at_display(self, obj: Execution) -> str:
        return stamp(obj.run_at, short=True)

    @admin.display(description="duration")
    def duration_display(self, obj: Execution) -> str:
        return "" if obj.duration is None else f"{obj.duration:.2f} s"

    @admin.display(description="last error")
    def error_excerpt(self, obj: Execution) -> str:
        return one_line(obj.last_error, css="cdj-error-cell")

    # --- execution page ------------------------------------------------------------

    created_at_stamp = execution_page.created_at_stamp
    run_at_stamp = execution_page.run_at_stamp
    started_at_stamp = execution_page.started_at_stamp
    finished_at_stamp = execution_page.finished_at_stamp
    locked_at_stamp = execution_page.locked_at_stamp
    progress_display = signals.progress_display
    waiting_display = signals.waiting_display
    attempt_history = operator.attempt_history
    fork_links = operator.fork_links

    @admin.display(description="why waiting")
    def why_waiting_display(self, obj: Execution) -> str:
        """The flow-control limits that hold a runnable execution back right now."""
        reasons = Execution.objects.using(obj._state.db).why_waiting(obj)
        return "; ".join(reasons) if reasons else "-"

    @admin.display(description="last error")
    def last_error_display(self, obj: Execution) -> str:
        return format_html('<pre class="cdj-error">{}</pre>', obj.last_error) if obj.last_error \
            else "-"

    @admin.display(description="payload")
    def payload_display(self, obj: Execution) -> str:
        return pretty_json(obj.payload)

    @admin.display(description="result")
    def result_display(self, obj: Execution) -> str:
        return pretty_json(obj.result)

    @admin.display(description="parent")
    def parent_link(self, obj: Execution) -> str:
        if obj.parent_id is None:
            return "-"
        url = reverse("admin:conductor_django_execution_change", args=[obj.parent_id])
        return format_html('<a href="{}">{}</a>', url, obj.parent_id)

    @admin.display(description="children")
    def children_links(self, obj: Execution) -> str:
        children = list(
            Execution.objects.filter(parent_id=obj.pk).order_by("created_at")
            .values_list("pk", "task_name", "status")[: CHILDREN_SHOWN + 1]
        )
        if not children:
            return "-"
        items = format_html_join(
            "", '<li><a href="{}">{}</a> {} {}</li>',
            ((reverse("admin:conductor_django_execution_change", args=[pk]), pk, name,
              status_badge(status)) for pk, name, status in children[:CHILDREN_SHOWN]),
        )
        more = ""
        if len(children) > CHILDREN_SHOWN:
            url = reverse("admin:conductor_django_execution_changelist")
            more = format_html('<li><a href="{}?parent__exact={}">all children</a></li>',
                               url, obj.pk)
        return format_html('<ul class="cdj-children">{}{}</ul>', items, more)

    def get_inlines(self, request: HttpRequest, obj: Any) -> list:
        return operator.redrive_inlines(request, list(super().get_inlines(request, obj)))

    def get_formset_kwargs(self, request: HttpRequest, obj: Any, inline: Any,
                           prefix: str) -> dict[str, Any]:
        return execution_page.step_formset_kwargs(
            request, inline, super().get_formset_kwargs(request, obj, inline, prefix))

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context=None):
        obj = self.get_object(request, object_id)
        extra: dict[str, Any] = {"descendant_count": operator.descendants_of(object_id)}
        if obj is not None:
            extra |= {
                **execution_page.page_context(request, obj),
                **signals.signal_context(request, obj),
                # Not once a cancel was accepted: the page says "cancelling…" instead.
                "can_cancel": not obj.is_finished and not obj.cancelled
                and self.has_cancel_permission(request),
                "can_retry": obj.status in RETRYABLE and self.has_retry_permission(request),
                "can_run_again": obj.status in RERUNNABLE and self.has_rerun_permission(request),
                "default_reason": DEFAULT_REASON,
                "reason_max_length": REASON_MAX_LENGTH,
                "dashboard_url": self._url("dashboard"),
            }
        return super().change_view(request, object_id, form_url, {**extra,
                                                                   **(extra_context or {})})

    # --- urls: every page of the executions' admin -------------------------------------

    def _url(self, name: str, *args: Any) -> str:
        return reverse(f"admin:conductor_django_execution_{name}", args=args)

    def _view(self, func: Callable[..., HttpResponse], *, post: bool = False) -> Callable:
        """The admin's view of ``func(model_admin, request, ...)`` (``post``: POST only)."""
        def view(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            return func(self, request, *args, **kwargs)

        view = update_wrapper(view, func)
        return self.admin_site.admin_view(require_POST(view) if post else view)

    def get_urls(self) -> list:
        info = "conductor_django_execution"
        return [
            path("dashboard/", self._view(dashboard_view), name=f"{info}_dashboard"),
            path("all-matching/<str:verb>/confirm/", self._view(bulk_view),
                 name=f"{info}_bulk"),
            path("<path:object_id>/live/", self._view(live_view), name=f"{info}_live"),
            path("<path:object_id>/retry-from/<int:step_id>/", self._view(retry_from_view),
                 name=f"{info}_retry_from"),
            path("<path:object_id>/fork-from/<int:step_id>/", self._view(fork_from_view),
                 name=f"{info}_fork_from"),
            path("<path:object_id>/signal/", self._view(signal_view, post=True),
                 name=f"{info}_signal"),
            path("<path:object_id>/cancel/", self._view(cancel_view, post=True),
                 name=f"{info}_cancel"),
            path("<path:object_id>/retry/", self._view(retry_view, post=True),
                 name=f"{info}_retry"),
            path("<path:object_id>/run-again/", self._view(run_again_view, post=True),
                 name=f"{info}_run_again"),
            *super().get_urls(),
        ]

    # --- actions -------------------------------------------------------------------

    def _confirm(self, request: HttpRequest, queryset, *, action: str, title: str,
                 verb: str, legal: tuple[str, ...], explanation: str,
                 ask_reason: bool = False) -> TemplateResponse:
        will = queryset.filter(status__in=legal)
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "opts": self.model._meta,
            "action": action,
            "verb": verb,
            "explanation": explanation,
            "listed": list(will.order_by("-created_at")[:LIST_ON_CONFIRMATION]),
            "legal_count": will.count(),
            "selected_count": queryset.count(),
            "selected_ids": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
            "select_across": request.POST.get("select_across", "0"),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "ask_reason": ask_reason,
            "default_reason": DEFAULT_REASON,
            "reason_max_length": REASON_MAX_LENGTH,
            "media": self.media,
        }
        context["skipped_count"] = context["selected_count"] - context["legal_count"]
        if action == "cancel_selected":
            context["descendant_count"] = operator.descendant_count(will)
        return TemplateResponse(
            request, "admin/conductor_django/execution/action_confirmation.html", context
        )

    def _apply(self, request: HttpRequest, queryset, legal: tuple[str, ...],
               operation: Callable[[Execution], bool], verb: str, skipped_text: str) -> None:
        total = queryset.count()
        done = 0
        for execution in queryset.filter(status__in=legal).order_by().iterator():
            if operation(execution):
                done += 1
        self.report(request, done, total - done, verb, skipped_text)

    def report(self, request: HttpRequest, done: int, skipped: int, verb: str,
               skipped_text: str) -> None:
        """"2 executions retried; 1 skipped (why)." (for cancel: "...; 1 already finished.")"""
        noun = "execution" if done == 1 else "executions"
        text = f"{done} {noun} {verb}; {skipped} {skipped_text}."
        self.message_user(request, text, messages.SUCCESS if done else messages.WARNING)

    def _bulk(self, request: HttpRequest, queryset, *, action: str, title: str, verb: str,
              legal: tuple[str, ...], explanation: str, skipped_text: str,
              operation: Callable[[Execution, HttpRequest], bool], ask_reason: bool = False):
        """One bulk action: confirm first, then apply ``operation`` to the legal ones."""
        if request.POST.get("confirm") != "yes":
            return self._confirm(request, queryset, action=action, title=title, verb=verb,
                                 legal=legal, ask_reason=ask_reason, explanation=explanation)
        self._apply(request, queryset, legal, lambda e: operation(e, request), verb,
                    skipped_text)
        return None

    @admin.action(description="Cancel selected executions", permissions=["cancel"])
    def cancel_selected(self, request: HttpRequest, queryset):
        # A running execution whose cancel was already accepted counts as finished here.
        return self._bulk(
            request, queryset, action="cancel_selected", title="Cancel executions",
            verb="cancelled", legal=Execution.UNFINISHED, ask_reason=True,
            explanation="Pending and suspended executions fail at once and never run; "
            "running ones stop at their next step or checkpoint and end cancelled. "
            "Finished ones are skipped.",
            skipped_text="already finished",
            operation=lambda e, r: e.cancel(clean_reason(r.POST.get("reason"))),
        )

    @admin.action(description="Retry selected executions (resume, steps kept)",
                  permissions=["retry"])
    def retry_selected(self, request: HttpRequest, queryset):
        return self._bulk(
            request, queryset, action="retry_selected", title="Retry executions",
            verb="retried", legal=RETRYABLE,
            explanation="Failed and cancelled executions become pending again and resume "
            "after their finished steps, with a fresh budget of attempts. Others are "
            "skipped.",
            skipped_text="skipped (not failed or cancelled, or an unfinished twin holds "
            "the dedupe key)",
            operation=lambda e, r: e.retry(),
        )

    @admin.action(description="Run selected executions again (new executions)",
                  permissions=["rerun"])
    def run_again_selected(self, request: HttpRequest, queryset):
        return self._bulk(
            request, queryset, action="run_again_selected", title="Run executions again",
            verb="run again", legal=RERUNNABLE,
            explanation="Each finished execution starts a new execution of its task with "
            "the same payload and no steps. Unfinished ones are skipped.",
            skipped_text="skipped (not finished, or an unfinished twin holds the dedupe key)",
            operation=lambda e, r: e.run_again() is not None,
        )

    @admin.action(description="Delete selected finished executions", permissions=["delete"])
    def delete_finished(self, request: HttpRequest, queryset):
        if request.POST.get("confirm") != "yes":
            return self._confirm(
                request, queryset, action="delete_finished", title="Delete executions",
                verb="deleted", legal=Execution.FINAL,
                explanation="Finished executions are deleted with their steps (children "
                "keep running, without a parent). Unfinished ones are skipped: cancel them "
                "first.",
            )
        total = queryset.count()
        finished = queryset.filter(status__in=Execution.FINAL)
        self.log_deletions(request, finished)
        _, per_model = finished.delete()
        done = per_model.get(Execution._meta.label, 0)
        self.report(request, done, total - done, "deleted", "skipped (not finished)")
        return None

    retry_from_step_selected = operator.retry_from_step_selected

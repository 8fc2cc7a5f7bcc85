"""Bulk by filter: "Cancel / Retry / Run again all matching" on the execution list.

The links above the list carry its filters and search to a confirmation page
(``all-matching/<verb>/confirm/``), which counts the executions they select (not only the page) that
the verb accepts, names the filters, and asks for a reason when cancelling. Its POST
(CSRF-protected, the verb's own permission, like the single action) acts on what the
confirmation said: the filters are carried as a *selection*, ``{"filters", "search",
"until"}``, where ``until`` is the moment of the confirmation, so an execution created
since is never touched; one whose state changed meanwhile is skipped by the verb's
own rules, and the message says how the count differs from the confirmed one.

Up to ``INLINE_LIMIT`` executions are acted on inside the request
(``Execution.objects.filter(...).cancel_all()`` and its siblings, ``state.bulk``); more
are handed to the task ``conductor_django.bulk`` (registered with the admin, run by the
workers), which walks them a chunk per atomic step (so a crash or a retry never acts
on a chunk twice) and reports ``ctx.progress``; the admin then shows its execution page,
whose progress bar follows it. Each bulk operation is one entry of the admin log
(``LogEntry``: who, when, what, how many).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.contrib import messages
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.admin.utils import prepare_lookup_value
from django.contrib.admin.views.main import ERROR_FLAG, IGNORED_PARAMS, PAGE_VAR
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import FieldDoesNotExist, PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from ..definitions.registry import task
from ..exceptions import DEFAULT_REASON
from ..models import Execution, Step
from ..state.status import FINAL, UNFINISHED
from .display import REASON_MAX_LENGTH, clean_reason
from .search import search

if TYPE_CHECKING:
    from .executions import ExecutionAdmin

BULK_TASK = "conductor_django.bulk"

#: At most this many executions are acted on inside the admin's request.
INLINE_LIMIT = 500

#: Executions per step of the background task (one transaction each).
TASK_CHUNK = 200

#: Query parameters of the execution list that are not filters.
NOT_FILTERS = frozenset({*IGNORED_PARAMS, PAGE_VAR, ERROR_FLAG, "_changelist_filters"})

#: The list's filters that are not field lookups: their meaning, as lookups.
SIGNAL_FILTER = "waiting_for_signal"


@dataclass(frozen=True)
class Verb:
    permission: str
    label: str
    title: str
    done: str
    legal: tuple[str, ...]
    explanation: str
    #: retry discarding every step (the dead letters' "from the start"; not on the list)
    from_start: bool = False

    def act(self, rows: Any, payload: dict[str, Any]) -> int:
        if self.permission == "cancel":
            return int(rows.cancel_all(reason=payload.get("reason") or DEFAULT_REASON))
        if self.from_start:
            return _retry_from_start(rows, payload.get("by", ""))
        if self.permission == "retry":
            return int(rows.retry_all(by=payload.get("by", "")))
        return int(rows.run_again_all())


def _retry_from_start(rows: Any, by: str) -> int:
    """``retry`` of each failed or cancelled row from its first recorded step (every
    step discarded; a row without steps is retried as it is)."""
    done = 0
    for pk in rows.filter(status__in=("failed", "cancelled")).values_list("pk", flat=True):
        first = (Step.objects.filter(execution_id=pk).order_by("pk")
                 .values_list("name", flat=True).first())
        done += Execution.objects.retry(pk, from_step=first, by=by)
    return done


VERBS = {
    "cancel": Verb("cancel", "Cancel", "Cancel all matching executions", "cancelled", UNFINISHED,
                   "Pending and suspended executions fail at once and never run; running "
                   "ones stop at their next step or checkpoint and end cancelled; their "
                   "unfinished descendants are cancelled with them."),
    "retry": Verb("retry", "Retry", "Retry all matching executions", "retried",
                  ("failed", "cancelled"),
                  "Failed and cancelled executions become pending again and resume after "
                  "their finished steps, with a fresh budget of attempts."),
    "retry-from-start": Verb(
        "retry", "Retry from the start", "Retry all matching executions from the start",
        "retried from the start", ("failed", "cancelled"),
        "Failed and cancelled executions become pending again with every recorded step "
        "discarded: they run again from their first step, with a fresh budget of attempts.",
        from_start=True),
    "run-again": Verb("rerun", "Run again", "Run all matching executions again", "run again", FINAL,
                      "Each finished execution starts a new execution of its task with the "
                      "same payload and no steps."),
}


# --- the selection ---------------------------------------------------------------------


def selection_of(params: Any) -> dict[str, Any]:
    """The selection named by the execution list's query parameters (``ValueError`` on a
    parameter that is no filter of executions)."""
    filters = {k: str(v) for k, v in params.items() if k not in NOT_FILTERS}
    for name in filters:
        _lookup(name)
    return {"filters": filters, "search": str(params.get("q", ""))}


def _lookup(name: str) -> str:
    if name == SIGNAL_FILTER:
        return name
    try:
        Execution._meta.get_field(name.split("__")[0])
    except FieldDoesNotExist:
        raise ValueError(f"{name!r} is not a filter of executions") from None
    return name


def matching(selection: dict[str, Any]) -> QuerySet:
    """Every execution the selection selects (created up to its ``until``, if given)."""
    rows: Any = Execution.objects.all()
    for name, value in selection["filters"].items():
        if _lookup(name) == SIGNAL_FILTER:
            if value == "yes":
                rows = rows.filter(status__in=UNFINISHED, waiting_for__isnull=False)
            continue
        try:
            rows = rows.filter(**{name: prepare_lookup_value(name, value, ",")})
        except ValidationError as exc:  # "created_at__gte=soon"
            raise ValueError(f"{name}={value!r}: {' '.join(exc.messages)}") from None
    rows, _ = search(rows, selection.get("search", ""))
    until = selection.get("until")
    if until:
        stamp = parse_datetime(until)
        if stamp is None:
            raise ValueError(f"not a timestamp: {until!r}")
        rows = rows.filter(created_at__lte=stamp)
    return rows


def describe(selection: dict[str, Any]) -> list[str]:
    """The selection's filters and search, for people."""
    parts = [f"{name} = {value}" for name, value in sorted(selection["filters"].items())]
    if selection.get("search"):
        parts.append(f"search: {selection['search']}")
    return parts or ["no filter: every execution"]


# --- the background task ----------------------------------------------------------------


def _chunk(rows: QuerySet, last: str | None, size: int, verb: Verb,
           payload: dict[str, Any]) -> dict:
    page = rows if last is None else rows.filter(pk__gt=last)
    ids = list(page.values_list("pk", flat=True)[:size])
    changed = verb.act(Execution.objects.filter(pk__in=ids), payload) if ids else 0
    return {"last": str(ids[-1]) if ids else None, "seen": len(ids), "changed": changed}


@task(name=BULK_TASK, max_attempts=5)
def bulk_operation(event: Any, ctx: Any) -> dict[str, Any]:
    """Act on the executions of a selection, a chunk per atomic step (see the module)."""
    payload = event.payload
    verb = VERBS[payload["verb"]]
    rows = (matching(payload["selection"]).exclude(pk=event.execution_id)
            .filter(status__in=verb.legal).order_by("pk"))
    total = int(payload.get("total") or 0)
    size = int(payload.get("chunk") or TASK_CHUNK)  # as when it began, if it is retried
    changed = seen = 0
    last = None
    number = 0
    while True:
        number += 1
        work = functools.partial(_chunk, rows, last, size, verb, payload)
        out = ctx.step(f"chunk-{number}", work, atomic=True)
        changed += out["changed"]
        seen += out["seen"]
        ctx.progress(seen, max(total, seen), f"{changed} {verb.done}")
        if out["seen"] < size:
            return {"changed": changed, "seen": seen}
        last = out["last"]


# --- the admin's pages -----------------------------------------------------------------


def bulk_links(model_admin: ExecutionAdmin, request: HttpRequest) -> list[tuple[str, str]]:
    """(label, url) of the operations this user may run on all the list's matches."""
    query = request.GET.urlencode()
    return [(f"{verb.label} all matching…",
             reverse("admin:conductor_django_execution_bulk", args=[name])
             + (f"?{query}" if query else ""))
            for name, verb in VERBS.items()
            if not verb.from_start  # offered by the dead letters' groups only
            and model_admin.has_operation_permission(request, verb.permission)]


def _allowed(model_admin: ExecutionAdmin, request: HttpRequest,
             selection: dict[str, Any]) -> dict[str, Any]:
    """``selection`` if the list itself accepts each of its filters (``ValueError``)."""
    for name, value in selection["filters"].items():
        if name != SIGNAL_FILTER and not model_admin.lookup_allowed(name, value, request):
            raise ValueError(f"{name!r} is not a filter of the execution list")
    return selection


def bulk_view(model_admin: ExecutionAdmin, request: HttpRequest, verb: str) -> HttpResponse:
    """``all-matching/<verb>/confirm/``: the confirmation page, and its POST."""
    operation = VERBS.get(verb)
    if operation is None:
        raise Http404("No such operation")
    if not model_admin.has_operation_permission(request, operation.permission):
        raise PermissionDenied
    if request.method == "POST":
        return _bulk_post(model_admin, request, verb, operation)
    changelist = reverse("admin:conductor_django_execution_changelist")
    try:
        selection = _allowed(model_admin, request, selection_of(request.GET))
        selection["until"] = timezone.now().isoformat()
        rows = matching(selection)
        legal = rows.filter(status__in=operation.legal).count()
    except ValueError as exc:
        model_admin.message_user(request, f"Cannot act on all matching executions: {exc}.",
                                 messages.ERROR)
        return HttpResponseRedirect(changelist)
    context = {
        **model_admin.admin_site.each_context(request),
        "title": operation.title, "opts": model_admin.model._meta,
        "explanation": operation.explanation, "verb": operation.done,
        "matching_count": (matched := rows.count()), "legal_count": legal,
        "skipped_count": matched - legal,
        "filters": describe(selection), "selection": json.dumps(selection),
        "ask_reason": verb == "cancel", "default_reason": DEFAULT_REASON,
        "reason_max_length": REASON_MAX_LENGTH, "inline_limit": INLINE_LIMIT,
        "back_url": changelist + (f"?{request.GET.urlencode()}" if request.GET else ""),
        "media": model_admin.media,
    }
    return TemplateResponse(
        request, "admin/conductor_django/execution/bulk_confirmation.html", context)


def _bulk_post(model_admin: ExecutionAdmin, request: HttpRequest, verb: str,
               operation: Verb) -> HttpResponse:
    changelist = reverse("admin:conductor_django_execution_changelist")
    try:
        raw = json.loads(request.POST.get("selection", ""))
        confirmed = int(request.POST.get("count", ""))
        selection = _allowed(model_admin, request, selection_of({**raw["filters"],
                                                                 "q": raw["search"]}))
        selection["until"] = str(raw["until"])
        if parse_datetime(selection["until"]) is None:
            raise ValueError("no moment of confirmation")
        rows = matching(selection)
        legal = rows.filter(status__in=operation.legal)
        ids = list(legal.order_by("pk").values_list("pk", flat=True)[:INLINE_LIMIT + 1])
    except (ValueError, TypeError, KeyError):
        model_admin.message_user(request, "The confirmation could not be read: nothing was "
                                 "done. Please start again from the list.", messages.ERROR)
        return HttpResponseRedirect(changelist)
    who = str(request.user.get_username())
    payload: dict[str, Any] = {"verb": verb, "selection": selection, "by": who,
               "reason": clean_reason(request.POST.get("reason"))
               if verb == "cancel" else ""}
    if not ids:
        model_admin.message_user(request, f"No execution to be {operation.done}: none of "
                                 "the matching executions is in a state where it applies.",
                                 messages.WARNING)
        return HttpResponseRedirect(changelist)
    count = len(ids) if len(ids) <= INLINE_LIMIT else legal.count()
    changed = "" if confirmed == count else (
        f" The confirmation counted {confirmed}: executions changed state since.")
    if len(ids) <= INLINE_LIMIT:
        done = operation.act(Execution.objects.filter(pk__in=ids), payload)
        skipped = "" if done == len(ids) else (
            f" {len(ids) - done} skipped: it no longer applied to them (or an "
            "unfinished twin holds the dedupe key).")
        text = f"{done} of the matching executions {operation.done}.{skipped}{changed}"
        _log(model_admin, request, f"{operation.title} ({'; '.join(describe(selection))}): "
             f"{done} {operation.done}")
        model_admin.message_user(request, text,
                                 messages.SUCCESS if done else messages.WARNING)
        return HttpResponseRedirect(changelist)
    payload.update(total=count, chunk=TASK_CHUNK)
    new = bulk_operation.invoke(payload)
    _log(model_admin, request, f"{operation.title} ({'; '.join(describe(selection))}): "
         f"{count} handed to execution {new}")
    model_admin.message_user(request, f"{count} executions are being {operation.done} in "
                             f"the background by execution {new}; its progress is shown "
                             f"here.{changed}", messages.SUCCESS)
    return HttpResponseRedirect(
        reverse("admin:conductor_django_execution_change", args=[new]))


def _log(model_admin: ExecutionAdmin, request: HttpRequest, message: str) -> None:
    LogEntry.objects.create(
        user_id=request.user.pk,  # type: ignore[misc]  # a logged-in user
        content_type_id=ContentType.objects.get_for_model(model_admin.model).pk,
        object_repr="all matching executions", action_flag=CHANGE,
        change_message=message[:1000])

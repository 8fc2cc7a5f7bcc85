"""The buttons of the execution page: cancel, retry, run again (POST only, listed by
``ExecutionAdmin.get_urls``). Each needs its permission, goes through the state machine
and says what it did."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse

from ..models import Execution
from .display import clean_reason

if TYPE_CHECKING:
    from .executions import ExecutionAdmin


def _button(model_admin: ExecutionAdmin, request: HttpRequest, object_id: str,
            permission: str,
            act: Callable[[Execution, HttpRequest], tuple[bool, str, Execution]],
            ) -> HttpResponse:
    """A detail page's button: ``act`` says whether it took effect, what to tell the user
    and which execution to show next."""
    if not model_admin.has_operation_permission(request, permission):
        raise PermissionDenied
    obj = model_admin.get_object(request, object_id)
    if obj is None:
        raise Http404("No such execution")
    done, text, shown = act(obj, request)
    model_admin.message_user(request, text, messages.SUCCESS if done else messages.WARNING)
    return HttpResponseRedirect(
        reverse("admin:conductor_django_execution_change", args=[shown.pk]))


def cancel_view(model_admin: ExecutionAdmin, request: HttpRequest,
                object_id: str) -> HttpResponse:
    """``<id>/cancel/``"""
    return _button(model_admin, request, object_id, "cancel", _cancel_one)


def retry_view(model_admin: ExecutionAdmin, request: HttpRequest,
               object_id: str) -> HttpResponse:
    """``<id>/retry/``"""
    return _button(model_admin, request, object_id, "retry", _retry_one)


def run_again_view(model_admin: ExecutionAdmin, request: HttpRequest,
                   object_id: str) -> HttpResponse:
    """``<id>/run-again/``"""
    return _button(model_admin, request, object_id, "rerun", _run_again_one)


def _cancel_one(obj: Execution, request: HttpRequest) -> tuple[bool, str, Execution]:
    reason = clean_reason(request.POST.get("reason"))
    if obj.cancel(reason):
        return True, f"Execution cancelled: {reason}", obj
    return False, ("Not cancelled: the execution had already finished (or a cancel was "
                   "already requested)."), obj


def _retry_one(obj: Execution, request: HttpRequest) -> tuple[bool, str, Execution]:
    if obj.retry():
        return True, ("Execution retried: it is pending again and resumes after its "
                      "finished steps."), obj
    return False, ("Not retried: only a failed or cancelled execution can be retried (and "
                   "no unfinished twin may hold its dedupe key)."), obj


def _run_again_one(obj: Execution, request: HttpRequest) -> tuple[bool, str, Execution]:
    new = obj.run_again()
    if new is None:
        return False, ("Not run again: only a finished execution can be run again (and no "
                       "unfinished twin may hold its dedupe key)."), obj
    return True, f"Started execution {new.pk} with the same payload.", new

"""Poison-proof, second round: the surfaces added since the first round (signals, re-drive,
progress, tracing, settings, metrics, the dashboard, permissions) give a clear error or
behave as documented for bad input, on every database."""

from __future__ import annotations

import pytest
from django.db import transaction
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone

import conductor_django as conductor
from conductor_django import metrics
from conductor_django.checks import check_settings
from conductor_django.exceptions import NonRetryableError, error_text
from conductor_django.models import Execution, Schedule, Step
from conductor_django.testing import drain
from tests.test_admin import act, change_url, make, messages_of, staff
from tests.test_admin_operator import step_url, with_steps
from tests.test_signals import running_context

S = Execution.Status
BAD_TEXT = ["a\x00b", "a\ud800b", "\udfff", "x" * 256]


# --- 5: choices of wait_for_signal ---------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("choice", ["ok\x00", "ok\ud800"])
def test_choices_with_a_nul_or_a_lone_surrogate_are_refused(choice):
    ctx, eid = running_context()
    with transaction.atomic():  # the caller's transaction stays usable
        with pytest.raises(ValueError, match="choice contains"):
            ctx.wait_for_signal("decision", choices=["fine", choice])
        assert Execution.objects.filter(pk=eid).count() == 1
    ex = Execution.objects.get(pk=eid)
    assert ex.waiting_for is None and not Step.objects.filter(execution_id=eid).exists()


# --- 7: the bulk action "Retry from step…" ---------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["a\x00b", "x" * 256])  # (a form cannot carry a surrogate)
def test_retry_from_step_action_refuses_an_unstorable_step_name(name):
    ex = with_steps()
    client = staff("retry_execution")
    response = act(client, "retry_from_step_selected", [ex.pk], step=name)
    assert response.status_code == 200
    assert messages_of(response)[0].startswith("Not retried: The step name"), \
        messages_of(response)
    response = act(client, "retry_from_step_selected", [ex.pk], step=name, confirm="yes")
    assert response.status_code == 200
    assert Execution.objects.get(pk=ex.pk).status == "failed"


# --- 8: retry, fork, unschedule ------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("name", BAD_TEXT)
def test_retry_fork_and_unschedule_name_the_argument(name):
    ex = with_steps()
    with transaction.atomic():
        with pytest.raises(ValueError, match="from_step"):
            conductor.retry(ex.pk, from_step=name)
        with pytest.raises(ValueError, match="from_step"):
            conductor.fork(ex.pk, name)
        with pytest.raises(ValueError, match="schedule name"):
            conductor.unschedule("echo", name)
        with pytest.raises(ValueError, match="task name"):
            conductor.unschedule(name, "nightly")
        assert Execution.objects.count() == 1  # usable, nothing written
    assert Execution.objects.get(pk=ex.pk).status == "failed"
    assert not Schedule.objects.exists()


# --- 9: ctx.progress ------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_progress_message_with_a_nul_or_a_surrogate_is_stored_escaped():
    ctx, eid = running_context()
    ctx.progress(1, 2, "file a\x00b-\ud800.csv")
    ctx.flush_progress()
    assert Execution.objects.get(pk=eid).progress == {
        "done": 1, "total": 2, "message": "file a\\x00b-\\ud800.csv"}


# --- 10: a stored trace context that is not one ----------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("stored", [{"traceparent": 123}, {"traceparent": ["x"]},
                                    {"traceparent": "junk"}, ["not", "a", "dict"], "text"])
def test_a_tracing_worker_runs_an_execution_whose_trace_context_is_junk(stored, monkeypatch):
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider

    from conductor_django import tracing

    monkeypatch.setattr(tracing, "provider", TracerProvider())
    eid = conductor.invoke("echo", {"n": 1})
    Execution.objects.filter(pk=eid).update(trace_context=stored)
    drain()
    assert Execution.objects.get(pk=eid).status == "completed"


# --- 11: DEFAULT_QUEUE ----------------------------------------------------------------------


@pytest.mark.parametrize("queue", ["", "q" * 101, "a\x00b", "a\ud800"])
def test_a_default_queue_no_execution_could_use_is_an_error(queue):
    with override_settings(CONDUCTOR={"DEFAULT_QUEUE": queue}):
        errors = check_settings()
    assert [e.id for e in errors] == ["conductor_django.E002"], errors
    assert "DEFAULT_QUEUE" in errors[0].msg


def test_a_default_queue_of_100_characters_is_fine():
    with override_settings(CONDUCTOR={"DEFAULT_QUEUE": "q" * 100}):
        assert check_settings() == []


@pytest.mark.parametrize("value, ok", [(1, True), (200, True), (0, False), (-1, False),
                                       ("50", False), (True, False)])
def test_metrics_max_queues_is_checked(value, ok):
    with override_settings(CONDUCTOR={"METRICS_MAX_QUEUES": value}):
        assert (check_settings() == []) is ok


@pytest.mark.parametrize("value, ok", [(True, True), (False, True), ("yes", False), (1, False)])
def test_trace_baggage_is_checked(value, ok):
    with override_settings(CONDUCTOR={"TRACE_BAGGAGE": value}):
        assert (check_settings() == []) is ok


# --- 12: an error whose __str__ raises ----------------------------------------------------


class Unprintable(NonRetryableError):
    def __str__(self):
        raise RuntimeError("no")


class UnprintablePlain(ValueError):
    def __str__(self):
        raise RuntimeError("no")


def test_an_unprintable_error_is_recorded_with_its_type_name():
    assert error_text(Unprintable()) == (
        "Unprintable: <unprintable message: str() raised RuntimeError>")
    assert error_text(UnprintablePlain()).startswith("UnprintablePlain: <unprintable")
    assert error_text(NonRetryableError("fine")) == "fine"  # a readable message stays alone


# --- cancel of a finished root ----------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("status", ["completed", "failed", "cancelled"])
def test_cancelling_a_finished_root_leaves_its_tree_alone(status):
    root = make(status)
    child = make("pending", parent=root)
    grandchild = make("running", parent=child)
    assert conductor.cancel(root.pk) is False
    assert Execution.objects.get(pk=child.pk).status == "pending"
    grandchild.refresh_from_db()
    assert grandchild.status == "running" and not grandchild.cancelled
    # cancelling an unfinished root still reaches the whole tree
    live = make("pending")
    kid = make("pending", parent=live)
    assert conductor.cancel(live.pk, "stop") is True
    assert Execution.objects.get(pk=kid.pk).last_error == "stop"


# --- fork with an idempotency key ------------------------------------------------------


@pytest.mark.django_db
def test_fork_with_a_dedupe_key_makes_one_execution():
    ex = make("completed")  # of the task "echo"
    for name in ("s1", "s2"):
        Step.objects.create(execution=ex, name=name, result=name)
    first = conductor.fork(ex.pk, "s2", dedupe_key="refork-1")
    assert conductor.fork(ex.pk, "s2", dedupe_key="refork-1") == first
    assert conductor.invoke("echo", dedupe_key="refork-1") == first  # invoke's rule
    other = conductor.fork(ex.pk, "s2", dedupe_key="refork-2")
    assert other != first
    assert conductor.fork(ex.pk, "s2") not in (first, other)  # without a key: each call
    assert list(Step.objects.filter(execution_id=first).values_list("name", flat=True)) == ["s1"]
    Execution.objects.filter(pk=first).update(status="completed", finished_at=timezone.now())
    assert conductor.fork(ex.pk, "s2", dedupe_key="refork-1") != first  # finished: a new one
    with pytest.raises(ValueError, match="dedupe_key"):
        conductor.fork(ex.pk, "s2", dedupe_key="a\x00")
    assert Execution.objects.filter(forked_from=ex).count() == 4


# --- debounce with a flow-control key ------------------------------------------------------


@pytest.mark.django_db
def test_a_debounced_call_keeps_the_last_calls_key_like_its_payload():
    first = conductor.invoke("echo", {"v": 1}, debounce=60, key="tenant-1")
    again = conductor.invoke("echo", {"v": 2}, debounce=60, key="tenant-2")
    assert first == again
    row = Execution.objects.get(pk=first)
    assert (row.payload, row.key) == ({"v": 2}, "tenant-2")
    conductor.invoke("echo", {"v": 3}, debounce=60)
    assert Execution.objects.get(pk=first).key is None


# --- the confirmation pages need the view permission --------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("kind, perm", [("retry", "retry_execution"),
                                        ("fork", "rerun_execution")])
def test_the_redrive_confirmation_pages_need_the_view_permission(kind, perm):
    ex = with_steps()
    client = staff(perm)
    assert client.get(step_url(kind, ex, "s2")).status_code == 200
    user = client.session["_auth_user_id"]
    from django.contrib.auth.models import Permission, User

    User.objects.get(pk=user).user_permissions.remove(
        Permission.objects.get(codename="view_execution"))
    client.force_login(User.objects.get(pk=user))
    assert client.get(step_url(kind, ex, "s2")).status_code == 403
    assert client.post(step_url(kind, ex, "s2")).status_code == 403
    assert Execution.objects.count() == 1 and Execution.objects.get().status == "failed"


# --- metric label cardinality and the dashboard's queue table ----------------------------


@pytest.mark.django_db
def test_queues_beyond_the_bound_fold_into_other():
    pytest.importorskip("prometheus_client")
    for n, queue in enumerate(["big", "big", "big", "mid", "mid", "q1", "q2", "q3"]):
        conductor.invoke("echo", {"n": n}, queue=queue)
    with override_settings(CONDUCTOR={"METRICS_MAX_QUEUES": 2}):
        body, _ = metrics.exposition()
    text = body.decode()
    assert 'queue="big"' in text and 'queue="mid"' in text and 'queue="other"' in text
    assert 'queue="q1"' not in text and 'queue="q3"' not in text
    assert 'conductor_queue_runnable{queue="other"} 3.0' in text
    assert 'conductor_executions{queue="other",status="pending",task="echo"} 3.0' in text


def test_a_worker_process_names_its_first_queues_and_counts_the_others_as_other(monkeypatch):
    monkeypatch.setattr(metrics, "_labelled", set())
    with override_settings(CONDUCTOR={"METRICS_MAX_QUEUES": 2}):
        labels = [metrics.queue_label(q) for q in ["a", "b", "c", "a", "d", "b"]]
    assert labels == ["a", "b", "other", "a", "other", "b"]


def test_named_queues_prefer_the_busiest_then_the_recent_ones():
    assert metrics.named_queues([("a", 1), ("b", 5), ("c", 5)], [("d", 9)], limit=2) \
        == {"b", "c"}
    assert metrics.named_queues([("a", 1)], [("d", 9), ("e", 1)], limit=2) == {"a", "d"}


@pytest.mark.django_db
def test_the_dashboard_pages_its_queue_table():
    conductor.invoke_many("echo", [{"payload": n, "queue": f"q{n:03d}"} for n in range(60)])
    client = staff()
    url = reverse("admin:conductor_django_execution_dashboard")
    first = client.get(url).content.decode()
    assert first.count("<tr data-queue=") == 50
    assert 'id="cdj-queue-pages"' in first and "Queues 1-50 of 60" in first
    second = client.get(url, {"queues_page": 2}).content.decode()
    assert second.count("<tr data-queue=") == 10 and 'data-queue="q059"' in second
    assert client.get(url, {"queues_page": "x\x00"}).status_code == 200  # junk: page 1


# --- the admin signal page with junk stored by hand -------------------------------------


@pytest.mark.django_db
def test_the_execution_page_survives_a_hand_edited_wait():
    ex = make("suspended", waiting_for={"signal": "d", "until": "not a date",
                                        "choices": ["ok", 3]})
    client = staff("signal_execution")
    assert client.get(change_url(ex.pk)).status_code == 200
    Execution.objects.filter(pk=ex.pk).update(
        waiting_for={"signal": "d", "until": "2020-01-01T00:00:00"})  # naive
    assert client.get(change_url(ex.pk)).status_code == 200


# --- OpenTelemetry baggage ------------------------------------------------------------------


@pytest.mark.django_db
def test_baggage_is_stored_and_reused_only_when_the_project_opts_in(monkeypatch):
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry import baggage, context
    from opentelemetry.sdk.trace import TracerProvider

    from conductor_django import tracing
    from tests.settings import CONDUCTOR

    provider = TracerProvider()
    monkeypatch.setattr(tracing, "provider", provider)
    with provider.get_tracer("web").start_as_current_span("POST /orders"):
        token = context.attach(baggage.set_baggage("user", "mallory"))
        try:
            plain = conductor.invoke("echo")
            with override_settings(CONDUCTOR={**CONDUCTOR, "TRACE_BAGGAGE": True}):
                opted = conductor.invoke("echo")
        finally:
            context.detach(token)
    assert set(Execution.objects.get(pk=plain).trace_context) == {"traceparent"}
    assert Execution.objects.get(pk=opted).trace_context["baggage"] == "user=mallory"
    # the worker's side: a stored baggage is not re-used unless opted in
    stored = Execution.objects.get(pk=opted).trace_context
    assert "baggage" not in tracing.headers_of(stored)
    assert tracing.headers_of(stored, baggage=True)["baggage"] == "user=mallory"

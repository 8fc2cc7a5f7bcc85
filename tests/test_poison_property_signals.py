"""Property: arbitrary text (NUL, lone surrogates, control characters, 10 kB) thrown at
every public argument added since the first round - ``send_signal``,
``ctx.wait_for_signal``, ``ctx.progress``, ``retry``/``fork``/``unschedule``, ``cancel`` -
and at the admin's signal form and "Retry from step…" action gives a clear error or a
stored value: no driver error, no HTTP 500, the caller's transaction usable, and the
worker still finishes a control execution afterwards.

Bounded for a small machine, as tests/test_poison_property.py: a few dozen examples,
each in one transaction on the test database, run by ``testing.drain``.
"""

from __future__ import annotations

import json
import uuid

import pytest
from django.contrib.auth.models import Permission, User
from django.db import transaction
from django.test import Client
from django.urls import reverse
from hypothesis import HealthCheck, example, find, given, settings
from hypothesis import strategies as st

import conductor_django as conductor
from conductor_django import TaskNotFound
from conductor_django.definitions.values import storable_text, unstorable
from conductor_django.models import Execution, Signal
from conductor_django.testing import drain

pytestmark = pytest.mark.django_db

BOUNDED = settings(max_examples=30, deadline=None, derandomize=True,
                   suppress_health_check=[HealthCheck.function_scoped_fixture,
                                          HealthCheck.too_slow, HealthCheck.data_too_large])

#: what databases refuse or mangle: NUL, lone surrogates, control characters, 10 kB
SPECIAL = ["a", "\x00", "\ud800", "\udfff", "\x01", "\x1b", "\x7f", "\u2028", "é", "\U0001f600",
           "\t", "\n", " "]
texts = st.one_of(
    st.text(max_size=12),
    st.text(alphabet=st.sampled_from(SPECIAL), max_size=8),
    st.sampled_from(SPECIAL).map(lambda c: c * 10_240),
    st.integers(min_value=95, max_value=300).map(lambda n: "k" * n),
)
#: what an HTTP form can carry (bytes decoded as UTF-8: no lone surrogate)
form_texts = texts.map(lambda t: t.encode("utf-8", "replace").decode("utf-8"))
json_texts = st.one_of(
    form_texts,  # mostly not JSON
    texts.map(lambda t: json.dumps(t)),  # a JSON string: "\ud800" escapes a surrogate
    st.sampled_from([99, 101, 2_000, 100_000]).map(lambda n: "[" * n + "]" * n),
)

CLEAR = (ValueError, TypeError, TaskNotFound)
GENERATED: dict[str, dict] = {}


@conductor.task(name="poison-text", max_attempts=1)
def poison_text(event, ctx):
    """Calls ``ctx`` with the generated text, then waits for the signal "go"."""
    given_ = GENERATED[event.execution_id]
    ctx.progress(1, 2, given_["message"])
    ctx.wait_for_signal(given_["name"], choices=given_["choices"])
    return "done"


def _control_completes() -> None:
    control = conductor.invoke("poison-control", "control")
    drain(timeout=30)
    assert conductor.get(control).status == "completed"


def _waiting() -> str:
    eid = conductor.invoke("await-decision", {"key": "prop", "choices": ["approve", "reject"]})
    drain(timeout=30)
    assert conductor.get(eid).status == "suspended"
    return eid


@BOUNDED
@given(name=texts, payload=st.one_of(texts, st.lists(texts, max_size=3)),
       sent_by=st.one_of(st.none(), texts))
def test_send_signal_gives_a_clear_answer_for_any_text(name, payload, sent_by):
    with transaction.atomic():
        eid = _waiting()
        try:
            sent = conductor.send_signal(eid, name, payload, sent_by=sent_by)
        except CLEAR as exc:
            assert str(exc)
            assert not Signal.objects.filter(execution_id=eid).exists()
        else:
            assert sent in (True, False)
        # the caller's transaction is usable; the execution still decides and finishes
        conductor.send_signal(eid, "decision", "approve")
        drain(timeout=30)
        assert conductor.get(eid).status in Execution.FINAL
        _control_completes()
        transaction.set_rollback(True)


@BOUNDED
@given(name=texts, choices=st.one_of(st.none(), st.lists(texts, min_size=1, max_size=3)),
       message=texts)
@example(name="go", choices=["ok", "no\x00"], message="a\x00b")  # the cases measured
@example(name="go", choices=["\ud800"], message="\udfff")
def test_a_handler_waiting_with_any_text_ends_clearly_and_the_worker_goes_on(
        name, choices, message):
    with transaction.atomic():
        eid = conductor.invoke("poison-text")
        GENERATED[eid] = {"name": name, "choices": choices, "message": message}
        try:
            drain(timeout=30)
            row = conductor.get(eid)
            assert row.status in ("suspended", "failed"), row.status
            if row.status == "failed":  # a bad name or choices: a clear error, stored
                assert row.last_error.startswith(("ValueError", "TypeError")), row.last_error
                assert "DataError" not in row.last_error
            else:  # what it waits for can be sent, and its page shown
                assert all(unstorable(c) is None for c in choices or []), choices
                assert row.progress["message"] == storable_text(message[:500])[:500]
                page = reverse("admin:conductor_django_execution_change", args=[eid])
                assert _operator().get(page).status_code == 200
            _control_completes()
        finally:
            GENERATED.pop(eid, None)
        transaction.set_rollback(True)


@BOUNDED
@given(step=texts, key=st.one_of(st.none(), texts), task=texts, reason=texts)
def test_redrive_and_unschedule_give_a_clear_answer_for_any_text(step, key, task, reason):
    with transaction.atomic():
        eid = conductor.invoke("await-decision", {"key": "prop", "fail_after": True})
        conductor.send_signal(eid, "decision", "x")
        drain(timeout=30)
        calls = [lambda: conductor.retry(eid, from_step=step),
                 lambda: conductor.fork(eid, step, dedupe_key=key),
                 lambda: conductor.fork(eid, "before", dedupe_key=key),
                 lambda: conductor.unschedule(task, step),
                 lambda: conductor.cancel(eid, reason)]
        names = [("from_step", step), ("from_step", step), ("dedupe_key", key),
                 ("task name", task), ("cancel reason", reason)]
        for call, (what, text) in zip(calls, names, strict=True):
            try:
                call()
            except CLEAR as exc:
                assert str(exc)
                if isinstance(text, str) and unstorable(text):  # named, not a lookup
                    assert what in str(exc), (what, str(exc))
        assert conductor.get(eid).task_name == "await-decision"  # usable
        _control_completes()
        transaction.set_rollback(True)


def _operator() -> Client:
    user = User.objects.create_user(f"u{uuid.uuid4().hex[:8]}", is_staff=True)
    for codename in ("view_execution", "signal_execution", "retry_execution"):
        user.user_permissions.add(Permission.objects.get(
            codename=codename, content_type__app_label="conductor_django"))
    client = Client()
    client.force_login(user)
    return client


@BOUNDED
@given(name=form_texts, choice=st.one_of(st.none(), form_texts), payload=json_texts,
       step=form_texts)
@example(name="decision", choice="approve", payload="[" * 100_000 + "]" * 100_000,
         step="s\x00")  # the cases measured
@example(name="decision", choice=None, payload='"\\ud800"', step="x" * 10_240)
def test_the_admin_forms_never_answer_500_for_any_text(name, choice, payload, step):
    with transaction.atomic():
        client = _operator()
        eid = _waiting()
        waiting_payload = conductor.invoke("await-decision", {"key": "prop-json"})
        drain(timeout=30)
        url = reverse("admin:conductor_django_execution_signal", args=[eid])
        data = {"name": name, **({"choice": choice} if choice is not None else {})}
        assert client.post(url, data).status_code == 302
        url = reverse("admin:conductor_django_execution_signal", args=[waiting_payload])
        assert client.post(url, {"name": "decision", "payload": payload}).status_code == 302
        changelist = reverse("admin:conductor_django_execution_changelist")
        for extra in ({}, {"confirm": "yes"}):
            response = client.post(changelist, {"action": "retry_from_step_selected",
                                                "_selected_action": [eid], "step": step,
                                                **extra})
            assert response.status_code in (200, 302)
        for page in (eid, waiting_payload):
            change = reverse("admin:conductor_django_execution_change", args=[page])
            assert client.get(change).status_code == 200
            # (the test handler would store the decision in a 200-character column)
            conductor.cancel(page)
        _control_completes()
        transaction.set_rollback(True)


def test_the_strategies_reach_the_refused_values():
    """The generators are not vacuous: they produce what the rules refuse."""
    assert "\x00" in find(texts, lambda t: "\x00" in t)
    assert find(texts, lambda t: any("\ud800" <= c <= "\udfff" for c in t))
    assert find(texts, lambda t: "\x1b" in t)
    assert len(find(texts, lambda t: len(t) >= 10_240)) >= 10_240
    assert "\\ud800" in find(json_texts, lambda t: "\\ud800" in t)
    assert find(json_texts, lambda t: t.startswith("[" * 200))

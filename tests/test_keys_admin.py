"""Keys in the admin: shown, filtered and searched on the list; why a runnable execution
is not starting, on its page."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from conductor_django.models import Execution

from .test_admin import CHANGELIST, XSS, change_url, make, staff

S = Execution.Status


@pytest.mark.django_db
def test_list_shows_filters_and_searches_by_key():
    a = make(task_name="keyed-limited", key="tenant-7")
    b = make(task_name="keyed-limited", key="tenant-8")
    plain = make()
    client = staff()
    page = client.get(reverse(CHANGELIST)).content.decode()
    assert "?key=tenant-7" in page and "tenant-8" in page
    for query in ({"key": "tenant-7"}, {"q": "tenant-7"}):
        page = client.get(reverse(CHANGELIST), query).content.decode()
        assert str(a.pk)[:8] in page
        assert str(b.pk)[:8] not in page and str(plain.pk)[:8] not in page
    assert client.get(reverse(CHANGELIST), {"key": "a\x00b"}).status_code in (200, 302)


@pytest.mark.django_db
def test_key_is_escaped():
    make(task_name="keyed-limited", key=XSS)
    page = staff().get(reverse(CHANGELIST)).content.decode()
    assert XSS not in page


@pytest.mark.django_db
def test_page_says_a_key_is_at_its_limit():
    for _ in range(2):
        make("running", task_name="keyed-limited", key="tenant-7")
    waiting = make(task_name="keyed-limited", key="tenant-7")
    other = make(task_name="keyed-limited", key="tenant-8")
    client = staff()
    assert "key tenant-7 at its limit 2/2" in client.get(change_url(waiting.pk)).content.decode()
    assert "at its limit" not in client.get(change_url(other.pk)).content.decode()
    for _ in range(3):
        make("running", task_name="keyed-limited", key=f"t{uuid.uuid4().hex[:6]}")
    page = client.get(change_url(other.pk)).content.decode()
    assert "task keyed-limited at its limit 5/5" in page


@pytest.mark.django_db
def test_page_says_until_when_an_execution_is_rate_limited():
    now = timezone.now()
    for seconds in (0.5, 1.0, 1.5):  # RateLimit(3, 2.0): the oldest leaves at now + 0.5 s
        make("completed", task_name="rated", started_at=now - timedelta(seconds=seconds))
    waiting = make(task_name="rated", run_at=now - timedelta(seconds=1))
    until = timezone.localtime(now - timedelta(seconds=1.5) + timedelta(seconds=2))
    reasons = Execution.objects.why_waiting(waiting, now)
    assert reasons == [f"rate limited until {until:%H:%M:%S}"]
    # later than that, nothing holds it back; a running or delayed execution waits for none
    assert Execution.objects.why_waiting(waiting, now + timedelta(seconds=0.6)) == []
    delayed = make(task_name="rated", run_at=now + timedelta(hours=1))
    assert Execution.objects.why_waiting(delayed, now) == []


@pytest.mark.django_db
def test_page_shows_the_rate_limit():
    started = timezone.now() - timedelta(minutes=10)
    make("completed", task_name="rated-hourly", started_at=started)
    waiting = make(task_name="rated-hourly", run_at=started)
    until = timezone.localtime(started + timedelta(hours=1))
    page = staff().get(change_url(waiting.pk)).content.decode()
    assert f"rate limited until {until:%H:%M:%S}" in page


@pytest.mark.django_db
def test_page_names_the_key_of_a_per_key_rate_limit():
    now = timezone.now()
    for _ in range(2):
        make("completed", task_name="rated-per-key", key="A", started_at=now)
    due = now - timedelta(seconds=1)
    a = make(task_name="rated-per-key", key="A", run_at=due)
    assert Execution.objects.why_waiting(a, now)[0].startswith("key A rate limited until ")
    b = make(task_name="rated-per-key", key="B", run_at=due)
    assert Execution.objects.why_waiting(b, now) == []

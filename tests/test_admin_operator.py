"""The admin's re-drive operations (SPEC §14.5): retry / fork from a step, the bulk
"Retry from step…", the attempt history and the descendants a cancel reaches."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from conductor_django.models import Attempt, Execution, Step
from tests.test_admin import act, change_url, make, messages_of, staff


def with_steps(status: str = "failed", names=("s1", "s2", "s3")) -> Execution:
    ex = make(status, task_name="five-steps")
    for name in names:
        Step.objects.create(execution=ex, name=name, result=name)
    return ex


def step_url(kind: str, ex: Execution, name: str) -> str:
    step = Step.objects.get(execution=ex, name=name)
    return reverse(f"admin:conductor_django_execution_{kind}_from", args=[ex.pk, step.pk])


@pytest.mark.django_db
def test_retry_from_here_confirms_listing_the_discarded_steps_then_retries():
    ex = with_steps()
    client = staff("retry_execution")
    page = client.get(change_url(ex.pk)).content.decode()
    assert "Retry from here" in page and "Fork from here" not in page  # needs rerun
    confirm = client.get(step_url("retry", ex, "s2")).content.decode()
    assert "<li>s2</li>" in confirm and "<li>s3</li>" in confirm and "<li>s1</li>" not in confirm
    assert Execution.objects.get(pk=ex.pk).status == "failed"  # a GET changes nothing
    done = client.post(step_url("retry", ex, "s2"), follow=True)
    assert "retried from step 's2'" in messages_of(done)[0]
    ex.refresh_from_db()
    assert ex.status == "pending"
    assert list(ex.steps.values_list("name", flat=True)) == ["s1"]
    row = Attempt.objects.of(ex.pk).get()
    assert (row.ended, row.from_step, row.retried_by) == ("retried", "s2",
                                                          done.wsgi_request.user.username)
    assert "retried from step" in client.get(change_url(ex.pk)).content.decode()


@pytest.mark.django_db
def test_fork_from_here_copies_the_steps_before_it_and_links_both_ways():
    ex = with_steps("completed")
    client = staff("rerun_execution")
    confirm = client.get(step_url("fork", ex, "s3")).content.decode()
    assert "<li>s1</li>" in confirm and "<li>s2</li>" in confirm and "<li>s3</li>" not in confirm
    done = client.post(step_url("fork", ex, "s3"), follow=True)
    fork = Execution.objects.get(forked_from=ex)
    assert list(fork.steps.values_list("name", flat=True)) == ["s1", "s2"]
    assert str(ex.pk) in done.content.decode()  # the fork's page links its origin
    assert str(fork.pk) in client.get(change_url(ex.pk)).content.decode()
    assert list(ex.steps.values_list("name", flat=True)) == ["s1", "s2", "s3"]


@pytest.mark.django_db
def test_step_operations_need_their_permission_and_post():
    ex = with_steps()
    viewer = staff()
    assert "Retry from here" not in viewer.get(change_url(ex.pk)).content.decode()
    assert viewer.post(step_url("retry", ex, "s1")).status_code == 403
    assert viewer.post(step_url("fork", ex, "s1")).status_code == 403
    assert staff("retry_execution").post(step_url("fork", ex, "s1")).status_code == 403
    assert Execution.objects.count() == 1 and ex.steps.count() == 3


@pytest.mark.django_db
def test_bulk_retry_from_step_asks_the_name_lists_then_retries_those_that_have_it():
    has, lacks, running = with_steps(), with_steps(names=("s1",)), with_steps("running")
    client = staff("retry_execution")
    ids = [has.pk, lacks.pk, running.pk]
    ask = act(client, "retry_from_step_selected", ids).content.decode()
    assert 'name="step"' in ask
    listing = act(client, "retry_from_step_selected", ids, step="s2").content.decode()
    assert str(has.pk) in listing and "discards s2, s3" in listing
    assert f"<code>{lacks.pk}</code>" not in listing
    assert f"<code>{running.pk}</code>" not in listing
    done = act(client, "retry_from_step_selected", ids, step="s2", confirm="yes")
    assert messages_of(done)[0].startswith("1 execution retried from step 's2'; 2 skipped")
    assert list(Execution.objects.get(pk=has.pk).steps.values_list("name", flat=True)) == ["s1"]
    assert Execution.objects.get(pk=lacks.pk).status == "failed"


@pytest.mark.django_db
def test_cancel_confirmation_counts_the_descendants_and_cancels_the_tree():
    root = make("suspended")
    child = make("suspended", parent=root)
    make("running", parent=child)
    make("completed", parent=child)
    client = staff("cancel_execution")
    page = act(client, "cancel_selected", [root.pk]).content.decode()
    assert 'id="cdj-descendants"' in page and "<strong>2</strong>" in page
    assert "also cancels 2 unfinished descendants" in client.get(
        change_url(root.pk)).content.decode()
    act(client, "cancel_selected", [root.pk], confirm="yes", reason="Tree cut")
    statuses = dict(Execution.objects.values_list("pk", "status"))
    assert statuses[root.pk] == statuses[child.pk] == "failed"
    grandchild = Execution.objects.get(parent=child, status="running")
    assert grandchild.cancelled and grandchild.last_error == "Tree cut"


@pytest.mark.django_db
def test_the_re_drive_column_costs_no_query_per_step(django_assert_max_num_queries):
    few, many = with_steps(names=("s1", "s2")), with_steps(names=[f"s{n}" for n in range(60)])
    client = staff("retry_execution", "rerun_execution")
    client.get(change_url(few.pk))  # the session, the permissions
    with CaptureQueriesContext(connection) as small:
        assert client.get(change_url(few.pk)).content.decode().count("Retry from here") == 2
    with django_assert_max_num_queries(len(small.captured_queries)):
        # 60 steps: the first page of 50 (the latest page has the last 10)
        page = client.get(change_url(many.pk) + "?steps=1").content.decode()
        assert page.count("Retry from here") == 50


@pytest.mark.django_db
@pytest.mark.parametrize("perms, retry_link, fork_link", [
    (("retry_execution",), True, False),
    (("rerun_execution",), False, True),
    (("retry_execution", "rerun_execution"), True, True),
    ((), False, False),
])
def test_each_step_link_is_offered_only_with_its_permission(perms, retry_link, fork_link):
    ex = with_steps()
    page = staff(*perms).get(change_url(ex.pk)).content.decode()
    assert ("cdj-retry-from" in page) == retry_link
    assert ("cdj-fork-from" in page) == fork_link
    # The buttons of the execution page follow the same rule.
    assert ('action="' + reverse("admin:conductor_django_execution_retry", args=[ex.pk])
            in page) == retry_link
    assert ('action="' + reverse("admin:conductor_django_execution_run_again", args=[ex.pk])
            in page) == fork_link

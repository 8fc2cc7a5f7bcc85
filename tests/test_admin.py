"""The admin console: actions, permissions, buttons, pages, escaping, retry and run again."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

import conductor_django as conductor
from conductor_django.admin import stats
from conductor_django.admin.charts import nice_max, throughput_chart
from conductor_django.models import Execution, Step, Worker
from conductor_django.testing import drain
from tests.testapp.models import Mark

from .conftest import poll

CHANGELIST = "admin:conductor_django_execution_changelist"
XSS = "<script>alert('x')</script>"


def change_url(eid) -> str:
    return reverse("admin:conductor_django_execution_change", args=[eid])


def op_url(name: str, eid) -> str:
    return reverse(f"admin:conductor_django_execution_{name}", args=[eid])


def make(status: str = "pending", task_name: str = "echo", **fields) -> Execution:
    now = timezone.now()
    defaults = {"payload": {"n": 1}, "max_attempts": 3}
    if status in Execution.FINAL:
        defaults.update(started_at=now - timedelta(seconds=2), finished_at=now, attempts=3)
    if status == "running":
        defaults.update(started_at=now, attempts=1, locked_by=uuid.uuid4(), locked_at=now)
    return Execution.objects.create(task_name=task_name, status=status, **{**defaults, **fields})


def staff(*perms: str, superuser: bool = False) -> Client:
    user = User.objects.create_user(f"u{uuid.uuid4().hex[:8]}", password="pw", is_staff=True,
                                    is_superuser=superuser)
    for codename in ("view_execution", *perms):
        user.user_permissions.add(
            Permission.objects.get(codename=codename, content_type__app_label="conductor_django")
        )
    client = Client()
    client.force_login(user)
    return client


def act(client: Client, action: str, ids, **extra):
    data = {"action": action, "_selected_action": [str(i) for i in ids], **extra}
    return client.post(reverse(CHANGELIST), data, follow=True)


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


# --- cancel ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_cancel_action_confirms_then_cancels_with_the_reason_and_reports_counts():
    pending, finished = make("pending"), make("completed")
    client = staff("cancel_execution")
    page = act(client, "cancel_selected", [pending.pk, finished.pk])
    assert page.status_code == 200
    html = page.content.decode()
    assert 'name="reason"' in html and 'value="Cancelled by user"' in html
    assert "Will be cancelled: <strong>1</strong>. Skipped: <strong>1</strong>" in html
    assert Execution.objects.get(pk=pending.pk).status == "pending"  # nothing yet

    done = act(client, "cancel_selected", [pending.pk, finished.pk], confirm="yes",
               reason="Bad batch")
    assert messages_of(done) == ["1 execution cancelled; 1 already finished."]
    pending.refresh_from_db()
    assert (pending.status, pending.last_error, pending.cancelled) == ("failed", "Bad batch",
                                                                       False)
    assert pending.cancel_requested  # an operator's cancel, not a failure
    assert Execution.objects.get(pk=finished.pk).status == "completed"
    assert not Execution.objects.get(pk=finished.pk).cancel_requested


@pytest.mark.django_db
def test_cancel_action_blank_reason_uses_the_default():
    ex = make("suspended")
    act(staff("cancel_execution"), "cancel_selected", [ex.pk], confirm="yes", reason="  ")
    ex.refresh_from_db()
    assert (ex.status, ex.last_error) == ("failed", "Cancelled by user")


@pytest.mark.django_db
def test_cancel_action_on_running_requests_cancellation():
    ex = make("running")
    act(staff("cancel_execution"), "cancel_selected", [ex.pk], confirm="yes", reason="stop")
    ex.refresh_from_db()
    assert (ex.status, ex.cancelled, ex.last_error, ex.cancel_requested) == (
        "running", True, "stop", True)


@pytest.mark.django_db
@pytest.mark.parametrize(("action", "status"), [
    ("cancel_selected", "pending"),
    ("retry_selected", "failed"),
    ("run_again_selected", "completed"),
    ("delete_finished", "completed"),
])
def test_action_without_its_permission_is_403_and_changes_nothing(action, status):
    ex = make(status)
    before = Execution.objects.count()
    client = staff()  # view permission only
    for extra in ({}, {"confirm": "yes"}):
        response = client.post(reverse(CHANGELIST), {"action": action,
                                                     "_selected_action": [str(ex.pk)],
                                                     **extra})
        assert response.status_code == 403
    assert Execution.objects.count() == before
    assert Execution.objects.get(pk=ex.pk).status == status


@pytest.mark.django_db
def test_actions_offered_follow_permissions():
    make("pending")
    client = staff("retry_execution")
    actions = client.get(reverse(CHANGELIST)).context["action_form"].fields["action"].choices
    names = [name for name, _ in actions]
    assert "retry_selected" in names
    assert "cancel_selected" not in names and "delete_selected" not in names


@pytest.mark.django_db
def test_actions_need_post():
    ex = make("pending")
    client = staff("cancel_execution")
    response = client.get(reverse(CHANGELIST), {"action": "cancel_selected",
                                                "_selected_action": str(ex.pk), "confirm": "yes"})
    assert response.status_code == 302  # unknown query parameters: the list, no action
    assert Execution.objects.get(pk=ex.pk).status == "pending"


@pytest.mark.django_db
def test_actions_need_csrf():
    ex = make("pending")
    user = User.objects.create_superuser("root", password="pw")
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    response = client.post(reverse(CHANGELIST), {"action": "cancel_selected", "confirm": "yes",
                                                 "_selected_action": str(ex.pk)})
    assert response.status_code == 403
    assert Execution.objects.get(pk=ex.pk).status == "pending"
    response = client.post(op_url("cancel", ex.pk), {"reason": "x"})
    assert response.status_code == 403
    assert Execution.objects.get(pk=ex.pk).status == "pending"


# --- the buttons of the execution page -------------------------------------------------


@pytest.mark.django_db
def test_cancel_button_cancels_with_reason():
    ex = make("pending")
    client = staff("cancel_execution")
    page = client.get(change_url(ex.pk)).content.decode()
    assert 'id="cdj-cancel-button"' in page and op_url("cancel", ex.pk) in page
    response = client.post(op_url("cancel", ex.pk), {"reason": "From the page"}, follow=True)
    assert messages_of(response) == ["Execution cancelled: From the page"]
    ex.refresh_from_db()
    assert (ex.status, ex.last_error) == ("failed", "From the page")
    assert 'id="cdj-cancel-button"' not in response.content.decode()


@pytest.mark.django_db
def test_cancel_button_rules():
    ex = make("pending")
    assert staff("cancel_execution").get(op_url("cancel", ex.pk)).status_code == 405
    viewer = staff()
    assert 'id="cdj-cancel-button"' not in viewer.get(change_url(ex.pk)).content.decode()
    assert viewer.post(op_url("cancel", ex.pk), {"reason": "no"}).status_code == 403
    assert Execution.objects.get(pk=ex.pk).status == "pending"
    assert staff("cancel_execution").post(op_url("cancel", uuid.uuid4())).status_code == 404
    done = make("completed")
    response = staff("cancel_execution").post(op_url("cancel", done.pk), follow=True)
    assert "Not cancelled" in messages_of(response)[0]


@pytest.mark.django_db
def test_retry_and_run_again_buttons():
    ex = make("failed", last_error="boom")
    client = staff("retry_execution", "rerun_execution")
    page = client.get(change_url(ex.pk)).content.decode()
    assert 'id="cdj-retry-button"' in page and 'id="cdj-run-again-button"' in page
    response = client.post(op_url("run_again", ex.pk), follow=True)
    new = Execution.objects.exclude(pk=ex.pk).get()
    assert response.redirect_chain[-1][0] == change_url(new.pk)
    client.post(op_url("retry", ex.pk))
    assert Execution.objects.get(pk=ex.pk).status == "pending"
    assert staff().post(op_url("retry", ex.pk)).status_code == 403


# --- retry and run again (model methods and actions) ------------------------------------


@pytest.mark.django_db
def test_retry_resumes_the_same_row_keeping_finished_steps():
    eid = conductor.invoke("steps-then-fail", {"key": "r"})
    Execution.objects.filter(pk=eid).update(max_attempts=1)
    drain()
    ex = conductor.get(eid)
    assert (ex.status, ex.attempts, ex.last_error) == ("failed", 1,
                                                       "RuntimeError: b fails on attempt 1")
    assert list(Step.objects.filter(execution_id=eid).values_list("name", flat=True)) == ["a"]

    assert ex.retry() is True
    assert (ex.status, ex.attempts, ex.max_attempts, ex.finished_at) == ("pending", 1, 4, None)
    assert ex.retry() is False  # pending: not legal
    drain()
    ex.refresh_from_db()
    assert ex.status == "completed", ex.last_error
    assert ex.result == ["A", "B"]
    assert ex.attempts == 3  # attempts 2 and 3 after the retry
    assert Mark.objects.filter(key="r:a").count() == 1  # step a never ran again


@pytest.mark.django_db
def test_retry_of_a_cancelled_execution_clears_the_cancel_flag():
    ex = make("cancelled", cancelled=True, last_error="stop", attempts=1)
    assert ex.retry() is True
    assert (ex.status, ex.cancelled, ex.max_attempts) == ("pending", False, 4)
    drain()
    ex.refresh_from_db()
    assert ex.status == "completed"


@pytest.mark.django_db
@pytest.mark.parametrize("status", ["pending", "running", "suspended", "completed"])
def test_retry_not_legal(status):
    ex = make(status)
    assert ex.retry() is False
    assert ex.status == status


@pytest.mark.django_db
def test_retry_skips_when_an_unfinished_twin_holds_the_dedupe_key():
    old = make("failed", dedupe_key="k")
    make("pending", dedupe_key="k")
    assert old.retry() is False
    assert old.status == "failed"


@pytest.mark.django_db
def test_run_again_creates_a_new_execution_with_the_same_payload():
    eid = conductor.invoke("echo", {"x": [1, 2]}, priority=5)
    drain()
    ex = conductor.get(eid)
    new = ex.run_again()
    assert new is not None and new.pk != ex.pk
    assert (new.task_name, new.payload, new.priority, new.status, new.attempts) == (
        "echo", {"x": [1, 2]}, 5, "pending", 0)
    assert not new.steps.exists() and new.parent_id is None
    drain()
    assert conductor.get(new.pk).result["payload"] == {"x": [1, 2]}
    assert make("running").run_again() is None


@pytest.mark.django_db
def test_run_again_respects_dedupe():
    old = make("completed", dedupe_key="k")
    twin = make("pending", dedupe_key="k")
    assert old.run_again() is None
    twin.cancel()
    assert old.run_again().dedupe_key == "k"


@pytest.mark.django_db
def test_retry_and_run_again_actions_report_counts():
    failed, cancelled, done, pending = (make("failed"), make("cancelled"), make("completed"),
                                        make("pending"))
    ids = [failed.pk, cancelled.pk, done.pk, pending.pk]
    client = staff("retry_execution", "rerun_execution")
    page = act(client, "retry_selected", ids).content.decode()
    assert "Will be retried: <strong>2</strong>. Skipped: <strong>2</strong>" in page
    response = act(client, "retry_selected", ids, confirm="yes")
    assert messages_of(response)[0].startswith("2 executions retried; 2 skipped (")
    assert Execution.objects.filter(status="pending").count() == 3

    response = act(client, "run_again_selected", ids, confirm="yes")
    assert messages_of(response)[0].startswith("1 execution run again; 3 skipped (")
    assert Execution.objects.count() == 5


@pytest.mark.django_db
def test_delete_action_deletes_only_finished_executions():
    done, running = make("completed"), make("running")
    Step.objects.create(execution=done, name="s", result=1)
    client = staff("delete_execution")
    page = act(client, "delete_finished", [done.pk, running.pk]).content.decode()
    assert "Will be deleted: <strong>1</strong>. Skipped: <strong>1</strong>" in page
    response = act(client, "delete_finished", [done.pk, running.pk], confirm="yes")
    assert messages_of(response) == ["1 execution deleted; 1 skipped (not finished)."]
    assert list(Execution.objects.values_list("pk", flat=True)) == [running.pk]
    assert not Step.objects.exists()


@pytest.mark.django_db
def test_select_across_acts_on_the_filtered_list():
    a, b = make("pending", task_name="echo"), make("pending", task_name="other")
    client = staff("cancel_execution")
    client.post(reverse(CHANGELIST) + "?task_name=echo", {
        "action": "cancel_selected", "_selected_action": [str(a.pk)], "select_across": "1",
        "confirm": "yes", "reason": "all echo"})
    assert Execution.objects.get(pk=a.pk).status == "failed"
    assert Execution.objects.get(pk=b.pk).status == "pending"


# --- pages ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_nothing_from_payload_result_or_error_is_rendered_unescaped():
    parent = make("completed", task_name="echo")
    ex = make("failed", payload={"html": XSS}, result={"r": XSS}, last_error=XSS,
              dedupe_key=XSS, parent=parent)
    Step.objects.create(execution=ex, name=XSS, result=XSS)
    client = staff(superuser=True)
    pages = [client.get(reverse(CHANGELIST)), client.get(change_url(ex.pk)),
             client.get(change_url(parent.pk)), client.get(reverse(CHANGELIST), {"q": XSS}),
             act(client, "cancel_selected", [ex.pk])]
    for page in pages:
        html = page.content.decode()
        assert page.status_code == 200
        assert "<script>alert" not in html
    detail = pages[1].content.decode()
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in detail
    assert '<pre class="cdj-json">{\n  &quot;html&quot;' in detail  # pretty, escaped JSON


@pytest.mark.django_db
def test_execution_page_shows_steps_parent_and_children():
    parent = make("suspended", task_name="parent-task")
    child = make("running", task_name="child-task", parent=parent)
    now = timezone.now()
    Step.objects.create(execution=parent, name="fetch", result={"rows": 3},
                        started_at=now - timedelta(seconds=1.5), created_at=now)
    client = staff()
    html = client.get(change_url(parent.pk)).content.decode()
    assert "fetch" in html and "1.500 s" in html
    assert change_url(child.pk) in html
    assert change_url(parent.pk) in client.get(change_url(child.pk)).content.decode()


@pytest.mark.django_db
def test_list_columns_filters_and_search():
    ex = make("failed", task_name="echo", queue="mail", last_error="x" * 200,
              dedupe_key="order-7")
    other = make("completed", task_name="always-fails")
    client = staff()
    page = client.get(reverse(CHANGELIST))
    html = page.content.decode()
    assert 'cdj-status cdj-status-failed' in html and "3/3" in html and "2.00 s" in html
    # one line, cut by CSS with an ellipsis; the full text is the title (hover)
    assert f'<span class="cdj-cell cdj-error-cell" title="{"x" * 200}">' in html
    filters = {spec.title: {c["display"]: c["query_string"]
                            for c in spec.choices(page.context["cl"])}
               for spec in page.context["cl"].filter_specs}
    assert {"echo", "always-fails"} <= set(filters["task"])
    assert "mail" in filters["queue"]

    def listed(**params):
        cl = client.get(reverse(CHANGELIST), params).context["cl"]
        return {e.pk for e in cl.result_list}

    assert listed(q=str(ex.pk)) == {ex.pk}
    assert listed(q="order-7") == {ex.pk}
    assert listed(q="always-fails") == {other.pk}
    assert listed(q="nothing") == set()
    assert listed(queue="mail") == {ex.pk}
    assert listed(task_name="always-fails") == {other.pk}
    assert listed(status__exact="failed") == {ex.pk}
    today = client.get(reverse(CHANGELIST) + filters["created at"]["Today"]).context["cl"]
    assert {e.pk for e in today.result_list} == {ex.pk, other.pk}


@pytest.mark.django_db
def test_dashboard_counts_chart_and_link_from_app_index():
    now = timezone.now()
    make("completed", queue="default", finished_at=now - timedelta(minutes=3))
    make("completed", queue="default", finished_at=now - timedelta(minutes=3))
    make("failed", queue="mail", finished_at=now - timedelta(minutes=1))
    make("failed", queue="mail", finished_at=now - timedelta(hours=2))  # outside the hour
    make("pending", queue="mail")
    client = staff()
    url = reverse("admin:conductor_django_execution_dashboard")
    assert url in client.get(reverse("admin:app_list", args=["conductor_django"])).content.decode()
    response = client.get(url)
    assert response.status_code == 200
    queues = {q.queue: q for q in response.context["overview"].queues}
    assert (queues["default"].completed, queues["default"].failed) == (2, 0)
    assert (queues["mail"].pending, queues["mail"].failed) == (1, 2)  # both within 24 h
    chart = response.context["chart"]
    assert (chart.total_completed, chart.total_failed) == (2, 1)
    assert len(chart.bars) == 60
    html = response.content.decode()
    assert '<svg id="cdj-throughput"' in html and html.count('class="cdj-failed"/>') == 1
    assert "<script" not in html.split('id="content"')[1]  # server-rendered, no JS


@pytest.mark.django_db
def test_dashboard_needs_view_permission():
    user = User.objects.create_user("nobody", password="pw", is_staff=True)
    client = Client()
    client.force_login(user)
    assert client.get(reverse("admin:conductor_django_execution_dashboard")).status_code == 403


@pytest.mark.django_db
def test_workers_page_shows_heartbeat_age_and_running_count():
    worker = Worker.objects.create(hostname="box-1", pid=42, queues=["mail"], concurrency=4,
                                   last_heartbeat=timezone.now() - timedelta(seconds=5))
    make("running", locked_by=worker.pk)
    make("running", locked_by=worker.pk)
    Worker.objects.create(hostname="box-2", pid=7,
                          last_heartbeat=timezone.now() - timedelta(minutes=10))
    client = staff("view_worker")
    html = client.get(reverse("admin:conductor_django_worker_changelist")).content.decode()
    assert "box-1" in html and "mail" in html and "(every queue)" in html
    assert f"locked_by__exact={worker.pk}\">2</a>" in html
    assert "(dead)" in html
    dashboard = client.get(reverse("admin:conductor_django_execution_dashboard"))
    assert sorted((w.hostname, w.running_count, slots, percent)
                  for w, _, percent, slots in dashboard.context["workers"]) == [
        ("box-1", 2, "2/4", 50), ("box-2", 0, "0", 0)]


# --- helpers --------------------------------------------------------------------------


@pytest.mark.django_db
def test_distinct_values_and_throughput_buckets():
    for task_name, queue in [("b", "q2"), ("a", "q1"), ("b", "q1"), ("c", "q1")]:
        make("pending", task_name=task_name, queue=queue)
    assert stats.distinct_values("task_name") == ["a", "b", "c"]
    assert stats.distinct_values("queue") == ["q1", "q2"]
    assert stats.distinct_values("task_name", limit=2) == ["a", "b"]
    with pytest.raises(ValueError, match="column must be one of"):
        stats.distinct_values("payload")
    now = timezone.now().replace(second=30)
    make("completed", finished_at=now - timedelta(minutes=2))
    minutes = stats.throughput(minutes=5, now=now)
    assert [m.completed for m in minutes] == [0, 0, 1, 0, 0]
    assert minutes[-1].start == now.replace(second=0, microsecond=0)


def test_chart_scale():
    assert [nice_max(v) for v in (0, 1, 3, 7, 10, 11, 260)] == [1, 1, 5, 10, 10, 20, 500]
    start = timezone.now().replace(second=0, microsecond=0)
    chart = throughput_chart([stats.Minute(start, 10, 0), stats.Minute(start, 0, 5)])
    full, half = chart.bars
    assert full.completed_h == chart.bottom_y - 10 and full.failed_h == 0
    assert half.failed_h == pytest.approx(full.completed_h / 2, abs=0.1)


@pytest.mark.django_db(transaction=True)
def test_cancel_action_stops_a_running_execution_in_a_real_worker(start_worker):
    eid = conductor.invoke("loop-until-cancelled", {"key": "adm"})
    start_worker("--concurrency", "2")
    poll(lambda: conductor.get(eid).status == "running", message="running")
    client = staff("cancel_execution")
    response = act(client, "cancel_selected", [eid], confirm="yes", reason="Admin stop")
    assert messages_of(response) == ["1 execution cancelled; 0 already finished."]
    poll(lambda: conductor.get(eid).status == "cancelled", timeout=30, message="cancelled")
    assert conductor.get(eid).last_error == "Admin stop"
    assert conductor.get(eid).cancel_requested  # kept through the worker's final write

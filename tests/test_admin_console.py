"""The admin as an operations console: the live execution page (steps a page at a time,
timeline, timestamps, the JSON poll, Cancel hidden while cancelling), the lists (short
id prefix search, scheduled and cancelled-before-start, one-line cells) and the
dashboard's numbers (queues, tasks with p50/p95, lag, workers, recent failures)."""

from __future__ import annotations

import json
import re
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from conductor_django.admin import stats
from conductor_django.admin.cells import seconds
from conductor_django.admin.search import id_range
from conductor_django.admin.steps import STEPS_PER_PAGE, page_number
from conductor_django.models import Attempt, Execution, Schedule, Step, Worker

from .test_admin import CHANGELIST, make, staff


def change_url(pk) -> str:
    return reverse("admin:conductor_django_execution_change", args=[pk])


def live_url(pk) -> str:
    return reverse("admin:conductor_django_execution_live", args=[pk])


def with_steps(count: int, status: str = "completed", **fields) -> Execution:
    ex = make(status, task_name="import", **fields)
    start = ex.started_at or timezone.now()
    Step.objects.bulk_create(
        Step(execution=ex, name=f"row-{n}", result=n,
             started_at=start + timedelta(milliseconds=200 * n),
             created_at=start + timedelta(milliseconds=200 * n + 150))
        for n in range(1, count + 1))
    return ex


def step_names(html: str) -> list[str]:
    return re.findall(r'<td class="field-name">\s*<p>(row-\d+)</p>', html)


# --- the execution page ----------------------------------------------------------------


@pytest.mark.django_db
def test_steps_are_shown_a_page_at_a_time_latest_first_with_links_to_all():
    ex = with_steps(120)
    client = staff()
    html = client.get(change_url(ex.pk)).content.decode()
    assert step_names(html) == [f"row-{n}" for n in range(101, 121)]  # the latest page
    assert "Steps 101–120 of 120" in html
    assert '<a href="?steps=1#steps-group">1</a>' in html
    assert '<a href="?steps=2#steps-group">2</a>' in html
    first = client.get(change_url(ex.pk), {"steps": 1}).content.decode()
    assert step_names(first) == [f"row-{n}" for n in range(1, STEPS_PER_PAGE + 1)]
    second = client.get(change_url(ex.pk), {"steps": 2}).content.decode()
    assert step_names(second) == [f"row-{n}" for n in range(51, 101)]
    for bad in ("x", "0", "99", "-1"):  # anything else: the latest page
        assert step_names(client.get(change_url(ex.pk), {"steps": bad}).content.decode()) \
            == step_names(html)


def test_page_number():
    assert [page_number(raw, 3) for raw in (None, "1", "3", "4", "0", "a", "2")] == \
        [3, 1, 3, 3, 3, 3, 2]


@pytest.mark.django_db
def test_the_execution_page_costs_the_same_queries_with_60_or_6000_steps():
    small, big = with_steps(60), with_steps(6000)
    client = staff()
    client.get(change_url(small.pk))
    with CaptureQueriesContext(connection) as few:
        client.get(change_url(small.pk))
    with CaptureQueriesContext(connection) as many:
        html = client.get(change_url(big.pk), {"steps": 60}).content.decode()
    assert len(many.captured_queries) == len(few.captured_queries)
    assert step_names(html) == [f"row-{n}" for n in range(2951, 3001)]


@pytest.mark.django_db
def test_timeline_draws_the_attempts_and_the_steps_shown():
    ex = with_steps(3, status="failed", attempts=2)
    Attempt.objects.create(execution=ex, number=1, started_at=ex.started_at,
                           finished_at=ex.started_at + timedelta(seconds=1),
                           ended="retrying", error="boom")
    Attempt.objects.create(execution=ex, number=2, started_at=ex.started_at,
                           finished_at=ex.finished_at, ended="failed", error="boom")
    html = staff().get(change_url(ex.pk)).content.decode()
    svg = html.split('<svg id="cdj-timeline"')[1].split("</svg>")[0]
    assert svg.count('class="cdj-bar cdj-bar-failed"') == 2
    assert svg.count('class="cdj-bar cdj-bar-step"') == 3
    assert "step row-2: " in svg and "attempt 1, failed, retried later" in svg
    assert "<script" not in svg


@pytest.mark.django_db
def test_no_timeline_before_the_first_start():
    ex = make("pending")
    assert 'id="cdj-timeline"' not in staff().get(change_url(ex.pk)).content.decode()


@pytest.mark.django_db
def test_timestamps_show_milliseconds_and_the_time_zone():
    started = timezone.now().replace(microsecond=123456)
    ex = with_steps(1, started_at=started)
    html = staff().get(change_url(ex.pk)).content.decode()
    local = timezone.localtime(started)
    shown = local.strftime("%Y-%m-%d %H:%M:%S.123 ") + local.tzname()
    assert f">{shown}</time>" in html  # the execution's start
    step_started = timezone.localtime(started + timedelta(milliseconds=200))
    assert step_started.strftime("%H:%M:%S.323") in html  # a step's start ...
    assert step_started.strftime("%H:%M:%S.473") in html  # ... and end, apart


@pytest.mark.django_db
def test_cancel_is_hidden_once_a_cancel_was_accepted():
    running = make("running")
    client = staff("cancel_execution")
    assert 'id="cdj-cancel-button"' in client.get(change_url(running.pk)).content.decode()
    assert running.cancel("stop")
    html = client.get(change_url(running.pk)).content.decode()
    assert 'id="cdj-cancel-button"' not in html and "cancelling…" in html
    listed = client.get(reverse(CHANGELIST)).content.decode()
    assert "cancelling…" in listed


@pytest.mark.django_db
def test_live_poll_reports_the_state_and_changes_its_version_with_the_page():
    ex = with_steps(2, status="running")
    client = staff()
    page = client.get(change_url(ex.pk)).content.decode()
    version = re.search(r'data-cdj-version="([^"]*)"', page).group(1)
    state = client.get(live_url(ex.pk)).json()
    assert (state["status"], state["steps"], state["finished"], state["cancelling"]) == (
        "running", 2, False, False)
    assert json.loads(version.replace("&quot;", '"')) == json.loads(state["version"])
    Step.objects.create(execution=ex, name="row-3")
    assert client.get(live_url(ex.pk)).json()["version"] != state["version"]
    Execution.objects.filter(pk=ex.pk).update(status="completed",
                                              finished_at=timezone.now())
    assert client.get(live_url(ex.pk)).json()["finished"] is True
    assert "data-cdj-live" not in client.get(change_url(ex.pk)).content.decode()


@pytest.mark.django_db
def test_live_poll_needs_view_permission_and_an_execution():
    from django.contrib.auth.models import User
    from django.test import Client

    ex = make("running")
    nobody = Client()
    nobody.force_login(User.objects.create_user("nobody", password="pw", is_staff=True))
    assert nobody.get(live_url(ex.pk)).status_code == 403
    assert staff().get(live_url(uuid.uuid4())).status_code == 404


# --- lists -----------------------------------------------------------------------------


def test_id_range():
    low, high = id_range("3F2A-9")
    assert str(low) == "3f2a9000-0000-0000-0000-000000000000"
    assert str(high) == "3f2a9fff-ffff-ffff-ffff-ffffffffffff"
    for no in ("3f2", "", "task-1", "3f2g", "0" * 33):
        assert id_range(no) is None


@pytest.mark.django_db
def test_search_by_short_id_prefix():
    executions = [make("completed") for _ in range(5)]
    target = executions[2]
    client = staff()

    def listed(term: str) -> set:
        return {e.pk for e in client.get(reverse(CHANGELIST), {"q": term}).context["cl"]
                .result_list}

    short = str(target.pk)[:8]
    assert target.pk in listed(short)
    assert all(str(pk).startswith(short) for pk in listed(short))
    assert listed(short.upper()) == listed(short)
    assert listed(str(target.pk)[:13]) == {target.pk}  # with its dash
    assert listed(str(target.pk)) == {target.pk}
    assert listed(str(target.pk)[:3]) == set()  # too short to mean anything
    assert listed("echo") == {e.pk for e in executions}  # task names still found


@pytest.mark.django_db
def test_scheduled_and_cancelled_before_start_are_told_apart():
    later = make("pending", run_at=timezone.now() + timedelta(hours=2))
    now = make("pending")
    unstarted = make("pending")
    assert unstarted.cancel("not needed")
    failed = make("failed")
    client = staff()
    rows = {}
    for row in client.get(reverse(CHANGELIST)).context["cl"].result_list:
        rows[row.pk] = client.get(reverse(CHANGELIST)).context["cl"].model_admin \
            .status_display(row)
    assert ">Scheduled<" in rows[later.pk]
    assert ">Pending<" in rows[now.pk]
    assert ">Cancelled before start<" in rows[unstarted.pk]
    assert ">Failed<" in rows[failed.pk]
    html = client.get(change_url(unstarted.pk)).content.decode()
    assert "Cancelled before start" in html


@pytest.mark.django_db
def test_schedules_list_names_the_default_time_zone():
    Schedule.objects.create(task_name="echo", name="a", cron="*/5 * * * *")
    Schedule.objects.create(task_name="echo", name="b", cron="0 9 * * 1-5",
                            timezone="Europe/Paris")
    client = staff("view_schedule")
    html = client.get(reverse("admin:conductor_django_schedule_changelist")).content.decode()
    assert "TIME_ZONE<" not in html and ">TIME_ZONE" not in html
    assert 'UTC <span class="cdj-muted">(default)</span>' in html
    assert "Europe/Paris" in html
    # the cron on one line, its next fire times on hover (a narrow list hides their column)
    assert re.search(r'<code title="0 9 \* \* 1-5: \d{4}-\d\d-\d\d 09:00:00, [^"]*'
                     r'\(Europe/Paris\)">0 9 \* \* 1-5</code>', html)


# --- the dashboard ---------------------------------------------------------------------


def finished(task: str, seconds_run: float, *, status: str = "completed", queue: str = "default",
             ago: timedelta = timedelta(minutes=5), **fields) -> Execution:
    end = timezone.now() - ago
    return make(status, task_name=task, queue=queue, finished_at=end,
                started_at=end - timedelta(seconds=seconds_run), **fields)


@pytest.mark.django_db
def test_dashboard_tasks_failure_rate_and_percentiles_from_the_rows():
    for n in range(1, 11):  # 1 .. 10 s in the last hour
        finished("resize", float(n))
    finished("resize", 30.0, status="failed", ago=timedelta(hours=3))  # day, not hour
    finished("resize", 99.0, ago=timedelta(days=2))  # outside both windows
    finished("mail", 0.5, status="failed")
    unstarted = make("pending", task_name="mail")
    unstarted.cancel()
    overview = stats.overview()
    tasks = {t.task_name: t for t in overview.tasks}
    resize, mail = tasks["resize"], tasks["mail"]
    assert (resize.runs_hour, resize.runs_day, resize.failed_day) == (10, 11, 1)
    assert resize.failure_rate == pytest.approx(1 / 11)
    assert resize.p50 == pytest.approx(5.5, abs=0.01)  # linear between ranks
    assert resize.p95 == pytest.approx(9.55, abs=0.01)
    assert (mail.runs_day, mail.failed_day) == (1, 1)  # the cancel before start is no run
    queue = {q.queue: q for q in overview.queues}["default"]
    assert (queue.completed, queue.failed, queue.cancelled_before_finishing) == (10, 2, 1)
    html = staff().get(reverse("admin:conductor_django_execution_dashboard")).content.decode()
    assert 'data-task="resize"' in html and "9.1 %" in html
    row = html.split('data-task="resize"')[1].split("</tr>")[0]
    assert f">{seconds(resize.p50)}<" in row and f">{seconds(resize.p95)}<" in row
    assert seconds(resize.p50) == "5.5 s"


@pytest.mark.django_db
def test_quantile_matches_the_database():
    assert stats.quantile([1.0], 0.95) == 1.0
    assert stats.quantile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    with pytest.raises(ValueError):
        stats.quantile([], 0.5)


@pytest.mark.django_db
def test_dashboard_queue_lag_scheduled_and_the_failed_bar():
    now = timezone.now()
    make("pending", queue="mail", run_at=now - timedelta(seconds=90))
    make("pending", queue="mail", run_at=now - timedelta(seconds=10))
    make("pending", queue="mail", run_at=now + timedelta(hours=1))  # scheduled
    make("suspended", queue="mail", run_at=now + timedelta(hours=1))  # sleeping
    make("pending", queue="default", run_at=now + timedelta(minutes=5))
    cancelled = make("pending", queue="default")
    cancelled.cancel()
    finished("x", 1.0, status="failed", queue="default", ago=timedelta(seconds=30))
    overview = stats.overview()
    queues = {q.queue: q for q in overview.queues}
    mail, default = queues["mail"], queues["default"]
    assert (mail.pending, mail.scheduled, mail.suspended) == (2, 1, 1)
    assert mail.lag == pytest.approx(90, abs=5)
    assert (default.pending, default.scheduled, default.lag) == (0, 1, None)
    assert (default.failed, default.cancelled_before_finishing) == (1, 1)
    minutes = stats.throughput(minutes=5)
    assert sum(m.failed for m in minutes) == 1  # the cancel before start is no failure


@pytest.mark.django_db
def test_dashboard_recent_failures_and_worker_load():
    finished("old", 1.0, status="failed", last_error="older", ago=timedelta(minutes=9))
    finished("new", 1.0, status="failed", last_error="Traceback: <b>boom</b>",
             ago=timedelta(minutes=1))
    make("pending").cancel()  # not a failure of its task
    worker = Worker.objects.create(hostname="box", pid=1, concurrency=4)
    for _ in range(3):
        make("running", locked_by=worker.pk)
    response = staff().get(reverse("admin:conductor_django_execution_dashboard"))
    assert [f.task_name for f, *_ in response.context["failures"]] == ["new", "old"]
    html = response.content.decode()
    assert "Traceback: &lt;b&gt;boom&lt;/b&gt;" in html  # escaped
    assert 'value="75"' in html and ">3/4<" in html
    assert 'data-cdj-refresh="10"' in html


def cancelled_while_waiting(task: str = "approve") -> Execution:
    """An execution that ran, then waited (suspended), then an operator cancelled it."""
    ex = make("suspended", task_name=task, attempts=1,
              started_at=timezone.now() - timedelta(minutes=2), run_at=None)
    assert ex.cancel("not needed any more")
    ex.refresh_from_db()
    assert (ex.status, ex.cancel_requested, ex.last_error) == (
        "failed", True, "not needed any more")
    return ex


@pytest.mark.django_db
def test_a_cancel_while_suspended_is_not_a_failure_on_the_dashboard():
    cancelled = cancelled_while_waiting()
    finished("approve", 1.0, status="failed", last_error="boom", ago=timedelta(seconds=30))
    finished("approve", 1.0)
    overview = stats.overview()
    queue = {q.queue: q for q in overview.queues}["default"]
    assert (queue.completed, queue.failed, queue.cancelled_before_finishing) == (1, 1, 1)
    task = {t.task_name: t for t in overview.tasks}["approve"]
    assert (task.runs_day, task.failed_day, task.failure_rate) == (2, 1, 0.5)
    assert sum(m.failed for m in stats.throughput(minutes=5)) == 1
    response = staff().get(reverse("admin:conductor_django_execution_dashboard"))
    assert [f.last_error for f, *_ in response.context["failures"]] == ["boom"]
    html = response.content.decode()
    assert "cancelled before finishing" in html and "50.0 %" in html
    assert cancelled.pk not in [f.pk for f, *_ in response.context["failures"]]


@pytest.mark.django_db
def test_the_list_filter_and_badge_tell_a_cancel_from_a_failure():
    cancelled = cancelled_while_waiting()
    unstarted = make("pending")
    assert unstarted.cancel()
    failed = make("failed", last_error="boom")
    client = staff()

    def listed(query: str) -> set:
        return {e.pk for e in client.get(reverse(CHANGELIST) + query)
                .context["cl"].result_list}

    assert listed("?cancel=yes") == {cancelled.pk, unstarted.pk}
    assert listed("?cancel=no") == {failed.pk}
    html = client.get(reverse(CHANGELIST)).content.decode()
    assert "cancelled before finishing" in html and "failed, not cancelled" in html
    badge = client.get(reverse(CHANGELIST)).context["cl"].model_admin.status_display
    assert ">Cancelled before finishing<" in badge(cancelled)
    assert ">Cancelled before start<" in badge(unstarted)
    assert ">Failed<" in badge(failed)


@pytest.mark.django_db
def test_retry_clears_cancel_requested_and_a_tree_cancel_sets_it():
    parent = make("suspended", attempts=1, started_at=timezone.now(), run_at=None)
    child = make("running", parent=parent)
    grandchild = make("pending", parent=child)
    assert Execution.objects.cancel(parent.pk, "stop the tree")
    rows = {e.pk: e for e in Execution.objects.filter(
        pk__in=[parent.pk, child.pk, grandchild.pk])}
    assert all(e.cancel_requested for e in rows.values())
    assert (rows[parent.pk].status, rows[child.pk].status, rows[child.pk].cancelled) == (
        "failed", "running", True)
    assert Execution.objects.retry(parent.pk)
    parent.refresh_from_db()
    assert (parent.status, parent.cancel_requested) == ("pending", False)


@pytest.mark.django_db
def test_the_migration_marks_only_the_cancels_it_can_be_sure_of():
    import importlib

    from django.apps import apps

    migration = importlib.import_module("conductor_django.migrations.0020_cancel_requested")
    unstarted = make("failed", attempts=0, started_at=None, last_error="Cancelled by user")
    ran = make("cancelled", cancelled=True, last_error="stop")
    looks_like = make("failed", attempts=1, last_error="Cancelled by user")  # can't know
    failed = make("failed", last_error="ValueError: boom")

    class Editor:
        connection = connection

    migration.mark_known_cancels(apps, Editor())
    marked = set(Execution.objects.filter(cancel_requested=True).values_list("pk", flat=True))
    assert marked == {unstarted.pk, ran.pk}
    assert looks_like.pk not in marked and failed.pk not in marked


@pytest.mark.django_db
def test_an_unknown_estimate_reads_more_than_the_limit_never_a_number(monkeypatch):
    from conductor_django.admin import pagination

    for _ in range(4):
        make("pending")
    monkeypatch.setattr(pagination.EstimatedCountPaginator, "exact_limit", 3)
    # the planner of a table never analysed: no estimate, or one below what was counted
    monkeypatch.setattr(pagination, "table_estimate", lambda connection, table: -1)
    for estimate in (None, 1):
        monkeypatch.setattr(pagination, "query_estimate", lambda qs, c, e=estimate: e)
        paginator = pagination.EstimatedCountPaginator(Execution.objects.all(), 50)
        assert (paginator.count, paginator.estimated, paginator.more_than) == (4, True, "3")
    html = staff().get(reverse(CHANGELIST)).content.decode()
    assert "more than 3" in html and "about 4" not in html
    monkeypatch.setattr(pagination, "query_estimate", lambda qs, c: 12_000)
    paginator = pagination.EstimatedCountPaginator(Execution.objects.all(), 50)
    assert (paginator.count, paginator.more_than) == (12_000, "")
    assert "about 12000" in staff().get(reverse(CHANGELIST)).content.decode()


@pytest.mark.django_db
def test_every_time_on_the_execution_page_has_one_format():
    from conductor_django.models import ExecutionLog, Signal

    at = timezone.now().replace(microsecond=123456)
    until = at + timedelta(hours=1)
    ex = make("suspended", attempts=1, started_at=at, run_at=until,
              waiting_for={"signal": "decision", "until": until.isoformat(), "choices": None})
    Attempt.objects.create(execution=ex, number=1, started_at=at, finished_at=at,
                           ended="failed", error="boom")
    ExecutionLog.objects.create(execution=ex, attempt=1, created_at=at, level=20,
                                logger="task", message="hello")
    Signal.objects.create(execution=ex, name="early", payload=None, sent_at=at,
                          consumed_at=at)
    html = staff().get(change_url(ex.pk)).content.decode()
    text = re.sub(r"<[^>]+>", " ", html.split('id="content"')[1])
    stamp = at.strftime("%Y-%m-%d %H:%M:%S.123 UTC")
    # the attempt history (twice), the log line, the signal (twice), the deadline
    assert text.count(stamp) >= 6, text.count(stamp)
    assert until.strftime("%Y-%m-%d %H:%M:%S.123 UTC") in text
    assert "+00:00" not in text and "a.m." not in text and "p.m." not in text

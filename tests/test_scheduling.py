"""Cron schedules: the API and scheduler in-process, and real workers for the timing rules."""

from __future__ import annotations

import re
import signal
from datetime import UTC, datetime, timedelta

import pytest
from django.db import IntegrityError, transaction
from django.db.models import Count
from django.utils import timezone

import conductor_django as conductor
from conductor_django import Cron, scheduler
from conductor_django.definitions.cron import next_fire_times
from conductor_django.definitions.registry import build_task, register, unregister
from conductor_django.models import Execution, Schedule
from conductor_django.testing import drain
from tests.conftest import poll
from tests.testapp.models import Mark

S = Execution.Status


def runs_of(name: str, task_name: str = "scheduled-mark"):
    return Execution.objects.filter(task_name=task_name, schedule_name=name)


def queued(name: str, task_name: str = "scheduled-mark") -> Execution:
    return runs_of(name, task_name).get(status=S.PENDING)


# --- the API, in-process --------------------------------------------------------------


@pytest.mark.django_db
def test_schedule_queues_the_next_fire_time_at_once():
    before = timezone.now()
    row = conductor.schedule("scheduled-mark", "user-7-daily", cron="0 9 * * *",
                             payload={"user": 7}, timezone="Europe/Paris")
    assert (row.task_name, row.name, row.static, row.enabled) == (
        "scheduled-mark", "user-7-daily", False, True)
    run = queued("user-7-daily")
    assert run.scheduled_for == run.run_at == row.next_run_at
    assert before < run.scheduled_for <= before + timedelta(days=1)
    local = run.scheduled_for.astimezone(scheduler.zone("Europe/Paris"))
    assert (local.hour, local.minute) == (9, 0)
    assert run.payload == {"user": 7}
    assert run.event_name == "user-7-daily"
    assert run.queue == "default"


@pytest.mark.django_db
def test_scheduling_a_name_again_replaces_it_and_moves_the_queued_run():
    conductor.schedule("scheduled-mark", "report", cron="0 9 * * *", payload={"v": 1})
    first = queued("report")
    conductor.schedule("scheduled-mark", "report", cron="30 17 * * *", payload={"v": 2})
    assert Schedule.objects.count() == 1
    moved = queued("report")
    assert moved.pk == first.pk
    assert (moved.scheduled_for.hour, moved.scheduled_for.minute) == (17, 30)
    assert moved.run_at == moved.scheduled_for == Schedule.objects.get().next_run_at
    assert moved.payload == {"v": 2}
    assert runs_of("report").count() == 1


@pytest.mark.django_db
def test_unschedule_deletes_the_schedule_and_cancels_its_queued_run():
    conductor.schedule("scheduled-mark", "gone", cron="0 9 * * *")
    run = queued("gone")
    assert conductor.unschedule("scheduled-mark", "gone") is True
    assert not Schedule.objects.exists()
    run.refresh_from_db()
    assert run.status == S.FAILED and "gone" in run.last_error
    assert run.scheduled_for is None  # the fire time never ran: it is free again
    assert conductor.unschedule("scheduled-mark", "gone") is False
    # The same name again starts from the next fire time, not after the cancelled one.
    conductor.schedule("scheduled-mark", "gone", cron="0 9 * * *")
    assert queued("gone").scheduled_for <= timezone.now() + timedelta(days=1)


@pytest.mark.django_db
@pytest.mark.parametrize("args, error, match", [
    (("no-such-task", "s", "0 9 * * *"), conductor.TaskNotFound, "no-such-task"),
    (("scheduled-mark", "s", "0 25 * * *"), ValueError, "invalid cron expression '0 25"),
    (("scheduled-mark", "s", "0 0 30 2 *"), ValueError, "never fires"),
    (("scheduled-mark", "", "0 9 * * *"), ValueError, "schedule name"),
    (("scheduled-mark", "s", "0 9 * * *", {"when": timezone.now()}), TypeError, "datetime"),
    (("scheduled-mark", "s", "0 9 * * *", None, "Moon/Base"), ValueError, "unknown timezone"),
])
def test_bad_input_raises_and_writes_nothing(args, error, match):
    conductor.schedule("scheduled-mark", "existing", cron="0 9 * * *")
    with transaction.atomic():
        with pytest.raises(error, match=match):
            conductor.schedule(*args)
        assert Schedule.objects.count() == 1  # the transaction is still usable
    assert Execution.objects.count() == 1
    with pytest.raises(conductor.TaskNotFound):
        conductor.unschedule("no-such-task", "s")


@pytest.mark.django_db
def test_replacing_with_bad_input_keeps_the_old_schedule():
    conductor.schedule("scheduled-mark", "keep", cron="0 9 * * *", payload={"v": 1})
    with pytest.raises(ValueError):
        conductor.schedule("scheduled-mark", "keep", cron="nope", payload={"v": 2})
    row = Schedule.objects.get()
    assert (row.cron, row.payload) == ("0 9 * * *", {"v": 1})
    assert queued("keep").payload == {"v": 1}


# --- the scheduler's rules, in-process ------------------------------------------------


def _make_overdue(name: str, hours: int) -> Execution:
    """Pretend no worker ran for ``hours``: the queued run's fire time is long past."""
    run = queued(name)
    past = run.scheduled_for - timedelta(hours=hours)
    runs_of(name).filter(pk=run.pk).update(scheduled_for=past, run_at=past)
    return run


@pytest.mark.django_db
def test_missed_fire_times_run_once():
    conductor.schedule("scheduled-mark", "hourly", cron="0 * * * *")
    overdue = _make_overdue("hourly", hours=5)
    assert drain() == 1  # drain runs what is due; it does not queue schedules
    assert Mark.count("sched:hourly") == 1
    nxt = scheduler.queue_next("scheduled-mark", "hourly")
    assert nxt is not None
    now = timezone.now()
    assert now < nxt.scheduled_for <= now + timedelta(hours=1)  # the missed four are skipped
    assert drain() == 0
    assert runs_of("hourly").count() == 2
    assert Schedule.objects.get().last_run_at == Execution.objects.get(pk=overdue.pk).started_at


@pytest.mark.django_db
def test_missed_while_nothing_was_queued_runs_once_then_resumes():
    """A worker died between a run and queueing the next: one catch-up run, then on time."""
    conductor.schedule("scheduled-mark", "minutely", cron="* * * * *")
    _make_overdue("minutely", hours=3)
    drain()
    ran = runs_of("minutely").get()
    runs_of("minutely").update(started_at=ran.scheduled_for)  # it ran 3 hours ago
    catch_up = scheduler.queue_next("scheduled-mark", "minutely")
    assert catch_up.run_at <= timezone.now()  # due at once
    assert catch_up.scheduled_for == ran.scheduled_for + timedelta(minutes=1)
    assert drain() == 1
    following = scheduler.queue_next("scheduled-mark", "minutely")
    assert following.scheduled_for > timezone.now()
    assert drain() == 0


@pytest.mark.django_db
def test_no_next_run_while_one_is_going():
    conductor.schedule("scheduled-mark", "busy", cron="* * * * *")
    started = timezone.now() - timedelta(minutes=3)  # a long run, started 3 minutes ago
    fire = started.replace(second=0, microsecond=0)
    runs_of("busy").update(status=S.RUNNING, started_at=started, scheduled_for=fire)
    Schedule.objects.update(next_run_at=fire)
    assert scheduler.queue_next("scheduled-mark", "busy") is None
    assert scheduler.tick() == 0
    runs_of("busy").update(status=S.FAILED, finished_at=timezone.now())
    assert scheduler.tick() == 1  # after a failure too
    assert scheduler.tick() == 0  # exactly one queued
    assert runs_of("busy").filter(status=S.PENDING).count() == 1


@pytest.mark.django_db
def test_cancelling_the_queued_run_skips_that_fire_time_only():
    conductor.schedule("scheduled-mark", "skip", cron="0 * * * *")
    run = queued("skip")
    assert conductor.cancel(run.pk) is True
    assert scheduler.tick() == 0  # its fire time is ahead: nothing yet
    past = timezone.now().replace(minute=0, second=0, microsecond=0)
    Execution.objects.filter(pk=run.pk).update(scheduled_for=past)  # ...and then it passed
    Schedule.objects.update(next_run_at=past)
    assert scheduler.tick() == 1
    assert queued("skip").scheduled_for > timezone.now()


@pytest.mark.django_db
def test_a_fire_time_cannot_be_queued_twice():
    conductor.schedule("scheduled-mark", "dup", cron="0 9 * * *")
    run = queued("dup")
    twin = Execution(task_name=run.task_name, schedule_name="dup",
                     scheduled_for=run.scheduled_for)
    with pytest.raises(IntegrityError), transaction.atomic():
        twin.save(force_insert=True)


@pytest.fixture
def static_task():
    """A task with static schedules, registered for one test."""
    def handler(event, ctx):
        return event.payload

    def define(*crons):
        unregister("static-t")
        return register(build_task(handler, name="static-t", cron=list(crons)))

    yield define
    unregister("static-t")


@pytest.mark.django_db
def test_sync_static_creates_updates_and_removes(static_task):
    t = static_task(Cron("0 9 * * *", name="morning", payload={"p": 1}), "0 18 * * *")
    scheduler.sync_static(tasks=[t])
    scheduler.sync_static(tasks=[t])  # a second worker starting: nothing changes
    assert sorted(Schedule.objects.values_list("name", "static", "cron")) == [
        ("0 18 * * *", True, "0 18 * * *"), ("morning", True, "0 9 * * *")]
    morning = queued("morning", "static-t")
    assert morning.payload == {"p": 1} and morning.event_name == "morning"
    assert Execution.objects.filter(status=S.PENDING).count() == 2

    Schedule.objects.filter(name="0 18 * * *").update(enabled=False)  # set in the admin
    t = static_task(Cron("0 10 * * *", name="morning", payload={"p": 2}), "0 18 * * *")
    scheduler.sync_static(tasks=[t])
    moved = queued("morning", "static-t")
    assert moved.pk == morning.pk and moved.scheduled_for.hour == 10
    assert moved.payload == {"p": 2}
    assert Schedule.objects.get(name="0 18 * * *").enabled is False  # kept

    t = static_task("0 18 * * *")
    scheduler.sync_static(tasks=[t])
    assert list(Schedule.objects.values_list("name", flat=True)) == ["0 18 * * *"]
    assert Execution.objects.get(pk=morning.pk).status == S.FAILED


@pytest.mark.django_db
def test_enable_disable_and_run_now():
    conductor.schedule("scheduled-mark", "s", cron="0 9 * * *")
    row = Schedule.objects.get()
    first = queued("s")
    assert scheduler.set_enabled(row, False) is True
    assert scheduler.set_enabled(row, False) is False
    assert row.next_run_at is None
    assert not runs_of("s").filter(status=S.PENDING).exists()
    assert scheduler.tick() == 0  # disabled: nothing queued
    assert scheduler.set_enabled(row, True) is True
    again = queued("s")
    assert again.pk != first.pk and again.scheduled_for == first.scheduled_for

    eid = scheduler.run_now(row)
    assert eid == str(again.pk)
    assert queued("s").run_at <= timezone.now()
    assert scheduler.run_now(row) == eid  # still queued: the same run
    assert drain() == 1
    nxt = scheduler.queue_next("scheduled-mark", "s")
    assert nxt.scheduled_for == first.scheduled_for  # the 9:00 run still happens

    Execution.objects.filter(pk=nxt.pk).update(status=S.RUNNING, started_at=timezone.now())
    assert scheduler.run_now(row) is None  # no overlap


# --- the admin ------------------------------------------------------------------------


@pytest.fixture
def admin_client(client, django_user_model):
    user = django_user_model.objects.create_superuser("admin", "a@example.com", "pw")
    client.force_login(user)
    return client


CHANGELIST = "/admin/conductor_django/schedule/"


@pytest.mark.django_db
def test_admin_list_and_actions(admin_client):
    conductor.schedule("scheduled-mark", "listed", cron="0 9 * * *", timezone="Europe/Paris")
    row = Schedule.objects.get()
    page = admin_client.get(CHANGELIST)
    assert page.status_code == 200
    body = page.content.decode()
    for text in ("scheduled-mark", "listed", "0 9 * * *", "Europe/Paris"):
        assert text in body

    def act(action):
        return admin_client.post(CHANGELIST, {"action": action, "_selected_action": [row.pk]},
                                 follow=True)

    assert "1 schedule disabled" in act("disable_schedules").content.decode()
    assert not Schedule.objects.get().enabled
    assert "1 schedule enabled" in act("enable_schedules").content.decode()
    assert Schedule.objects.get().enabled and queued("listed")
    assert "1 schedule started" in act("run_now").content.decode()
    assert queued("listed").run_at <= timezone.now()


@pytest.mark.django_db
def test_admin_edit_recomputes_next_run_and_rejects_bad_cron(admin_client):
    conductor.schedule("scheduled-mark", "edited", cron="0 9 * * *")
    row = Schedule.objects.get()
    url = f"{CHANGELIST}{row.pk}/change/"
    assert admin_client.get(url).status_code == 200
    form = {"task_name": "scheduled-mark", "name": "edited", "cron": "not a cron",
            "payload": "null", "timezone": "", "enabled": "on"}
    bad = admin_client.post(url, form)
    assert bad.status_code == 200
    assert "invalid cron expression" in bad.content.decode()
    assert Schedule.objects.get().cron == "0 9 * * *"

    bad_tz = admin_client.post(url, {**form, "cron": "0 9 * * *", "timezone": "Mars/Base"})
    assert "unknown timezone" in bad_tz.content.decode()

    ok = admin_client.post(url, {**form, "cron": "45 6 * * *"})
    assert ok.status_code == 302
    row.refresh_from_db()
    assert (row.next_run_at.hour, row.next_run_at.minute) == (6, 45)
    assert queued("edited").scheduled_for == row.next_run_at


@pytest.mark.django_db
def test_admin_add_schedule_queues_its_run(admin_client):
    form = {"task_name": "scheduled-mark", "name": "added", "cron": "*/5 * * * *",
            "payload": '{"a": 1}', "timezone": "", "enabled": "on"}
    assert admin_client.post(f"{CHANGELIST}add/", form).status_code == 302
    row = Schedule.objects.get()
    assert not row.static and row.next_run_at == queued("added").scheduled_for
    assert queued("added").payload == {"a": 1}


@pytest.mark.django_db
def test_admin_static_schedule_cron_is_read_only(admin_client, static_task):
    scheduler.sync_static(tasks=[static_task("0 9 * * *")])
    row = Schedule.objects.get()
    page = admin_client.get(f"{CHANGELIST}{row.pk}/change/").content.decode()
    assert 'name="cron"' not in page
    assert 'name="enabled"' in page


# --- real workers ---------------------------------------------------------------------


def completed(name: str, task_name: str = "scheduled-mark"):
    return runs_of(name, task_name).filter(status=S.COMPLETED)


def assert_each_fire_time_ran_once(name: str, task_name: str = "scheduled-mark",
                                   mark: str | None = None) -> None:
    fire_times = runs_of(name, task_name).values("scheduled_for").annotate(n=Count("id"))
    assert all(row["n"] == 1 for row in fire_times)
    # the finished runs first: each wrote its mark before it finished, so before the marks
    # are read (the other order misses the mark of a run that finishes in between)
    done = {str(pk) for pk in completed(name, task_name).values_list("pk", flat=True)}
    ran = list(Mark.objects.filter(key=mark or f"sched:{name}")
               .values_list("value", flat=True))
    assert len(ran) == len(set(ran))  # no execution ran twice
    assert done <= set(ran)


@pytest.mark.django_db(transaction=True)
def test_a_one_second_cron_fires_repeatedly(start_worker):
    conductor.schedule("scheduled-mark", "every-second", cron="* * * * * *", payload={"x": 1})
    worker = start_worker("--concurrency", "2")
    poll(lambda: completed("every-second").count() >= 4, timeout=30,
         message="four runs of a one-second cron")
    fire_times = sorted(completed("every-second").values_list("scheduled_for", flat=True))
    assert all(b > a for a, b in zip(fire_times, fire_times[1:], strict=False))
    assert all(ft.microsecond == 0 for ft in fire_times)
    assert completed("every-second").first().result == {
        "schedule": "every-second", "payload": {"x": 1}}
    assert runs_of("every-second").filter(status__in=Execution.UNFINISHED).count() <= 1
    assert_each_fire_time_ran_once("every-second")
    assert "Traceback" not in worker.output()


@pytest.mark.django_db(transaction=True)
def test_two_workers_never_duplicate_a_fire_time(start_worker):
    env = {"CONDUCTOR_TEST_TASK_MODULES": "tests.testapp.cron_tasks"}
    conductor.schedule("scheduled-mark", "fast", cron="* * * * * *")
    workers = [start_worker("--concurrency", "4", env=env) for _ in range(2)]
    # Both workers start together and write the same static schedules.
    poll(lambda: Schedule.objects.filter(static=True).count() == 2, timeout=30,
         message="static schedules written")

    def unfinished_at_most_one() -> bool:
        for task_name, name in (("scheduled-mark", "fast"), ("static-cron", "every-second"),
                                ("static-cron", "new-year")):
            n = runs_of(name, task_name).filter(status__in=Execution.UNFINISHED).count()
            assert n <= 1, f"{n} unfinished runs of {task_name}/{name}"
        return (completed("fast").count() >= 5
                and completed("every-second", "static-cron").count() >= 5)

    poll(unfinished_at_most_one, timeout=40, interval=0.05, message="five runs of each")
    assert_each_fire_time_ran_once("fast")
    assert_each_fire_time_ran_once("every-second", "static-cron", "static:every-second")
    new_year = runs_of("new-year", "static-cron").get()
    assert new_year.status == S.PENDING
    assert (new_year.scheduled_for.month, new_year.scheduled_for.day) == (1, 1)
    assert completed("every-second", "static-cron").first().result == {"n": 1}
    for worker in workers:
        assert "Traceback" not in worker.output(), worker.output()[-3000:]


@pytest.mark.django_db(transaction=True)
def test_a_static_schedule_removed_from_the_code_is_removed_at_the_next_start(start_worker):
    env = {"CONDUCTOR_TEST_TASK_MODULES": "tests.testapp.cron_tasks"}
    first = start_worker("--concurrency", "1", env=env)
    poll(lambda: runs_of("new-year", "static-cron").filter(status=S.PENDING).exists(),
         message="the static schedule queued")
    first.signal(signal.SIGTERM)
    assert first.wait(timeout=30) == 0
    pending = runs_of("new-year", "static-cron").get(status=S.PENDING)
    start_worker("--concurrency", "1")  # its code has no static-cron task
    poll(lambda: not Schedule.objects.filter(static=True).exists(),
         message="static schedules removed")
    pending.refresh_from_db()
    assert pending.status == S.FAILED and "removed from the code" in pending.last_error


@pytest.mark.django_db(transaction=True)
def test_unschedule_from_inside_cancels_the_current_run(start_worker):
    conductor.schedule("unschedule-self", "self-removing", cron="* * * * * *")
    start_worker("--concurrency", "2")
    run = poll(lambda: runs_of("self-removing", "unschedule-self")
               .filter(status__in=Execution.FINAL).first(), timeout=30,
               message="the run that unschedules itself")
    assert run.status == S.CANCELLED, run.last_error
    assert "self-removing" in run.last_error
    assert Mark.count("unsched:self-removing:removed") == 1
    assert Mark.count("unsched:self-removing:step-ran") == 0
    assert not Schedule.objects.exists()
    # Once the worker has run something invoked later, it has ticked: still no new run.
    eid = conductor.invoke("echo", {"after": True})
    conductor.wait(eid, timeout=30)
    assert runs_of("self-removing", "unschedule-self").count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_task_creates_and_removes_a_dynamic_schedule(start_worker):
    start_worker("--concurrency", "2")
    eid = conductor.invoke("manage-schedule", {"create": "made-by-task", "cron": "* * * * * *"})
    assert conductor.wait(eid, timeout=30) == "created"
    poll(lambda: completed("made-by-task").count() >= 2, timeout=30, message="two runs")
    assert completed("made-by-task").first().result["payload"] == {"by": eid}
    eid = conductor.invoke("manage-schedule", {"remove": "made-by-task"})
    assert conductor.wait(eid, timeout=30) is True
    assert not Schedule.objects.exists()
    poll(lambda: not runs_of("made-by-task").filter(status__in=Execution.UNFINISHED).exists(),
         message="no run left")
    count = runs_of("made-by-task").count()
    conductor.wait(conductor.invoke("echo", {}), timeout=30)
    assert runs_of("made-by-task").count() == count


@pytest.mark.django_db(transaction=True)
def test_runs_missed_while_no_worker_was_up_run_once(start_worker):
    conductor.schedule("scheduled-mark", "missed", cron="0 * * * *")
    overdue = _make_overdue("missed", hours=6)  # six hourly fire times passed unseen
    start_worker("--concurrency", "2")
    poll(lambda: completed("missed").exists(), timeout=30, message="the missed run")
    nxt = poll(lambda: runs_of("missed").filter(status=S.PENDING).first(),
               message="the next run queued")
    assert nxt.scheduled_for > timezone.now()
    assert completed("missed").get().pk == overdue.pk
    assert runs_of("missed").count() == 2
    assert Mark.count("sched:missed") == 1


@pytest.mark.django_db(transaction=True)
def test_a_long_run_does_not_overlap_the_next(start_worker):
    conductor.schedule("scheduled-mark", "slow", cron="* * * * * *", payload={"seconds": 2.5})
    start_worker("--concurrency", "4")
    poll(lambda: completed("slow").count() >= 2, timeout=40, message="two slow runs")
    spans = sorted(completed("slow").values_list("started_at", "finished_at"))
    # The next run started only after the previous one finished. The two stamps are
    # read from the wall clock by two threads (the claim's, the result writer's) before
    # their statements run: they may cross by a millisecond (seen once: 1.3 ms); an
    # overlapping run would start a second or more (the next fire time) too early.
    slack = timedelta(milliseconds=50)
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert start >= end - slack, (start, end)
    # The fire times that passed during a run were coalesced into one run, not queued.
    first, second = sorted(completed("slow").values_list("scheduled_for", flat=True))[:2]
    assert (second - first).total_seconds() >= 1
    assert_each_fire_time_ran_once("slow")


@pytest.mark.django_db
def test_admin_shows_the_next_three_fire_times(admin_client):
    """What an expression means is visible: every ten seconds vs every second of a minute."""
    conductor.schedule("scheduled-mark", "ten-seconds", cron="* * * * * */10", timezone="UTC")
    row = Schedule.objects.get()
    listed = admin_client.get(CHANGELIST).content.decode()
    assert "next fire times" in listed.lower()
    shown = re.findall(r"\d{4}-\d\d-\d\d (\d\d:\d\d:\d\d)", listed)
    seconds = [int(t[-2:]) for t in shown[:3]]
    assert len(shown) >= 3 and all(s % 10 == 0 for s in seconds), shown
    change = admin_client.get(f"{CHANGELIST}{row.pk}/change/").content.decode()
    assert "every ten seconds" in change and "*/10 * * * * *" not in change

    # The form coming back (here: another field is wrong) shows them for the new cron.
    form = {"task_name": "scheduled-mark", "name": "ten-seconds", "cron": "0 9 * * *",
            "payload": "not json", "timezone": "UTC", "enabled": "on"}
    back = admin_client.post(f"{CHANGELIST}{row.pk}/change/", form).content.decode()
    assert "Fires next at" in back and "09:00:00, " in back  # the payload is wrong
    back = admin_client.post(f"{CHANGELIST}{row.pk}/change/", {**form, "cron": "nope"})
    assert "Fires next at" not in back.content.decode()
    saved = admin_client.post(f"{CHANGELIST}{row.pk}/change/",
                              {**form, "payload": "null", "_continue": "1"}, follow=True)
    page = saved.content.decode()
    assert "09:00:00, " in page and "(UTC)" in page


def test_next_fire_times_reads_seconds_last():
    start = datetime(2026, 1, 1, 1, 0, tzinfo=UTC)
    ten_seconds = next_fire_times("* * * * * */10", "UTC", start=start)
    assert [t - start for t in ten_seconds] == [timedelta(seconds=s) for s in (10, 20, 30)]
    tenth_minute = next_fire_times("*/10 * * * * *", "UTC", start=start)
    assert [t - start for t in tenth_minute] == [timedelta(seconds=s) for s in (1, 2, 3)]
    with pytest.raises(ValueError, match="invalid cron"):
        next_fire_times("not a cron")

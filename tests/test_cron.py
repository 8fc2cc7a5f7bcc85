"""Cron expressions without a database: validation, fire times, clock changes."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

from conductor_django import Cron, task
from conductor_django.definitions.cron import (
    check_timezone,
    next_fire,
    second_field_trap,
    validate,
    zone,
)
from conductor_django.definitions.registry import all_tasks, build_task

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")


def fires(expr: str, tz: ZoneInfo, start: datetime, until: datetime) -> list[datetime]:
    out, at = [], start
    while True:
        at = next_fire(expr, tz, at)
        if at > until:
            return out
        out.append(at)


def local(values: list[datetime], tz: ZoneInfo) -> list[str]:
    return [v.astimezone(tz).strftime("%m-%d %H:%M:%S%z") for v in values]


def test_five_and_six_fields_seconds_last():
    start = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    assert next_fire("*/15 * * * *", ZoneInfo("UTC"), start) == start + timedelta(minutes=15)
    every_second = fires("* * * * * *", ZoneInfo("UTC"), start, start + timedelta(seconds=3))
    assert every_second == [start + timedelta(seconds=n) for n in (1, 2, 3)]
    assert next_fire("0 9 * * * 30", ZoneInfo("UTC"), start) == datetime(
        2024, 5, 2, 9, 0, 30, tzinfo=UTC)


def test_timezone_is_the_wall_clock():
    start = datetime(2024, 1, 15, 0, 0, tzinfo=UTC)
    assert next_fire("0 9 * * *", PARIS, start) == datetime(2024, 1, 15, 8, 0, tzinfo=UTC)
    assert next_fire("0 9 * * *", NEW_YORK, start) == datetime(2024, 1, 15, 14, 0, tzinfo=UTC)


def test_daily_job_on_spring_forward_runs_once_shifted():
    # Paris, 2024-03-31: 02:00 -> 03:00. 02:30 does not exist that night.
    start = datetime(2024, 3, 30, 12, 0, tzinfo=PARIS)
    runs = fires("30 2 * * *", PARIS, start, start + timedelta(days=2))
    assert local(runs, PARIS) == ["03-31 03:30:00+0200", "04-01 02:30:00+0200"]


def test_daily_job_on_fall_back_runs_once():
    # Paris, 2024-10-27: 03:00 -> 02:00. 02:30 happens twice that night.
    start = datetime(2024, 10, 26, 12, 0, tzinfo=PARIS)
    runs = fires("30 2 * * *", PARIS, start, start + timedelta(days=2))
    assert local(runs, PARIS) == ["10-27 02:30:00+0200", "10-28 02:30:00+0100"]


@pytest.mark.parametrize("day", [datetime(2024, 10, 26, 22, 0, tzinfo=UTC),
                                 datetime(2024, 3, 30, 22, 0, tzinfo=UTC)])
@pytest.mark.parametrize("expr", ["*/7 * * * *", "15,45 * * * *", "0 * * * *"])
def test_every_hour_jobs_fire_at_each_matching_instant(day, expr):
    """Every real instant whose wall time matches fires exactly once, in both passes of a
    repeated hour; wall times skipped by the jump fire at most once, shifted."""
    until = day + timedelta(hours=6)
    got = fires(expr, PARIS, day, until)
    assert got == sorted(set(got))
    minutes = [day + timedelta(minutes=m) for m in range(1, 6 * 60 + 1)]
    matching = [m for m in minutes
                if croniter.match(expr, m.astimezone(PARIS).replace(tzinfo=None))]
    assert set(matching) <= set(got)
    extra = set(got) - set(matching)  # only the shifted wall times of a spring-forward gap
    assert all(e.astimezone(PARIS).utcoffset() == timedelta(hours=2) for e in extra)
    assert len(extra) <= 60


def test_every_second_through_both_clock_changes_never_repeats_or_skips():
    for start in (datetime(2024, 10, 27, 0, 30, tzinfo=UTC),
                  datetime(2024, 3, 31, 0, 30, tzinfo=UTC)):
        at = start
        for _ in range(3 * 3600):  # through the whole changed hour
            following = next_fire("* * * * * *", PARIS, at)
            assert following - at == timedelta(seconds=1), at
            at = following


@pytest.mark.parametrize("expr", ["", "not cron", "61 * * * *", "* * * *", None, 5,
                                  "0 0 30 2 *"])
def test_invalid_expressions_are_value_errors_quoting_them(expr):
    with pytest.raises(ValueError, match="invalid cron expression") as info:
        validate(expr)
    assert repr(expr) in str(info.value)


def test_timezones():
    assert check_timezone("Europe/Paris") == "Europe/Paris"
    assert check_timezone(None) is None
    with pytest.raises(ValueError, match="unknown timezone 'Mars/Base'"):
        check_timezone("Mars/Base")
    assert zone(None) == ZoneInfo("UTC")  # settings.TIME_ZONE of the tests


def test_cron_dataclass_validates_at_definition():
    c = Cron("0 9 * * *", name="morning", payload={"a": 1}, timezone="Europe/Paris")
    assert c.schedule_name == "morning"
    assert Cron("0 9 * * *").schedule_name == "0 9 * * *"
    with pytest.raises(ValueError, match="'0 99 \\* \\* \\*'"):
        Cron("0 99 * * *")
    with pytest.raises(ValueError, match="unknown timezone"):
        Cron("0 9 * * *", timezone="Nowhere/City")
    with pytest.raises(TypeError, match="not JSON-serializable: object"):
        Cron("0 9 * * *", payload={"x": object()})
    with pytest.raises(ValueError, match="Cron name"):
        Cron("0 9 * * *", name="")


def test_task_cron_argument():
    def handler(event, ctx):
        return None

    one = build_task(handler, name="t-one", cron="0 9 * * *")
    assert one.cron == (Cron("0 9 * * *"),)
    two = build_task(handler, name="t-two", cron=["0 9 * * *", Cron("0 17 * * *", name="pm")])
    assert [c.schedule_name for c in two.cron] == ["0 9 * * *", "pm"]
    with pytest.raises(ValueError, match="several cron schedules named \\['x'\\]"):
        build_task(handler, name="t-dup", cron=[Cron("0 9 * * *", name="x"),
                                                Cron("0 10 * * *", name="x")])
    with pytest.raises(ValueError, match="invalid cron expression 'every day'"):
        task(name="t-bad-cron", cron="every day")(handler)
    assert "t-bad-cron" not in all_tasks()


@pytest.mark.parametrize("expr", ["0 0 12 * * 1 2030", "0 */5 * * * * *"])
def test_seven_fields_are_refused_naming_the_trap(expr):
    assert croniter.is_valid(expr)  # croniter would take the seventh as a year
    with pytest.raises(ValueError, match="it has 7 fields.*seconds last"):
        validate(expr)
    with pytest.raises(ValueError, match="7 fields"):
        Cron(expr)


@pytest.mark.parametrize(("expr", "trap"), [
    ("0 */5 * * * *", True),  # Quartz's every five minutes: 60 runs at minute 0
    ("30 9 * * 1-5 0-59", True),
    ("0 9 * * * */1", True),
    ("* * * * * *", False),  # every second, plainly meant
    ("*/5 * * * *", False),
    ("* * * * * */10", False),
    ("0 9 * * * 0", False),
])
def test_second_field_trap(expr, trap):
    found = second_field_trap(expr)
    assert (found is not None) == trap
    if trap:
        assert repr(expr) in found and "every second" in found


def test_schedule_warns_about_a_second_field_trap(db):
    import warnings

    import conductor_django as conductor

    with pytest.warns(UserWarning, match="'0 \\*/5 \\* \\* \\* \\*' fires every second") as w:
        conductor.schedule("echo", "quartz-style", cron="0 */5 * * * *")
    assert w[0].filename == __file__  # points at the caller
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        conductor.schedule("echo", "plain", cron="*/5 * * * *")

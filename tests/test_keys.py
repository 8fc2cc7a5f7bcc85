"""Keys: ``invoke(key=...)``, ``key_concurrency``, ``rate_limit`` and fair claiming (§14.6).

The worker tests run three real ``conductor_worker`` processes and check the limits from
what the handlers append to a file (tasks in tests/testapp/key_tasks.py), never from
the rows: a start and an end line per run, with the time.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

import conductor_django as conductor
from conductor_django import RateLimit, task
from conductor_django.definitions.registry import claim_rules, unregister
from conductor_django.models import Execution, Step

from .conftest import poll

S = Execution.Status


def records(log: Path) -> list[tuple[str, str, str, float]]:
    """``(what, execution id, key, time)`` of every line the handlers wrote."""
    if not log.exists():
        return []
    rows = []
    for line in log.read_text().splitlines():
        what, eid, key, at = line.split()
        rows.append((what, eid, key, float(at)))
    return rows


def most_at_once(rows, key: str | None = None) -> int:
    """The most runs (of ``key``, or of all keys) between their start and end lines."""
    events = sorted((at, 1 if what == "start" else -1) for what, _, k, at in rows
                    if key is None or k == key)
    current = peak = 0
    for _, delta in events:  # an end sorts before a start of the same instant
        current += delta
        peak = max(peak, current)
    return peak


def most_in_window(starts: list[float], seconds: float) -> int:
    """The most starts in any closed window of ``seconds``."""
    starts = sorted(starts)
    most = 0
    first = 0
    for last, at in enumerate(starts):
        while at - starts[first] > seconds:
            first += 1
        most = max(most, last - first + 1)
    return most


def finished(ids) -> bool:
    return not Execution.objects.filter(pk__in=ids).exclude(status__in=Execution.FINAL).exists()


# --- definitions and input --------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"key_concurrency": 0}, ValueError, "key_concurrency of task 'bad' must be an int >= 1"),
        ({"key_concurrency": True}, ValueError, "key_concurrency"),
        ({"key_concurrency": "2"}, ValueError, "key_concurrency"),
        ({"rate_limit": (3, 60)}, TypeError, "must be a RateLimit"),
    ],
)
def test_bad_key_options_fail_at_definition(options, error, match):
    with pytest.raises(error, match=match):
        task(name="bad", **options)(lambda event, ctx: None)


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ((0, 60), ValueError, "count must be an int >= 1"),
        ((2.5, 60), ValueError, "count must be an int >= 1"),
        ((3, 0), ValueError, "per must be a positive number"),
        ((3, -1), ValueError, "per"),
        ((3, "a minute"), TypeError, "per"),
    ],
)
def test_rate_limit_checks_its_fields(args, error, match):
    with pytest.raises(error, match=match):
        RateLimit(*args)


def test_rate_limit_takes_a_timedelta_and_keys_cannot_batch():
    assert RateLimit(5, timedelta(minutes=1), per_key=True).seconds == 60.0
    with pytest.raises(TypeError, match="per_key must be a bool"):
        RateLimit(5, 60, per_key="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cannot be combined with batch"):
        task(name="bad", key_concurrency=2, batch=conductor.Batch())(lambda e, c: None)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("key", "error", "match"),
    [("k" * 201, ValueError, "key must be a non-empty str of at most 200 characters"),
     (7, ValueError, "key must be a non-empty str"), ("", ValueError, "key must be"),
     ("a\x00b", ValueError, "key")],
)
def test_bad_key_writes_nothing(key, error, match):
    with pytest.raises(error, match=match):
        conductor.invoke("fair", {"log": "/dev/null"}, key=key)
    with pytest.raises(error, match="invoke_many item 1: " + match):
        conductor.invoke_many("fair", [{"key": "fine"}, {"key": key}])
    assert not Execution.objects.exists()


@pytest.mark.django_db
def test_key_is_stored_by_invoke_invoke_many_and_every_insert_path():
    one = conductor.invoke("fair", {"log": "/dev/null"}, key="tenant-7")
    deduped = conductor.invoke("fair", {"log": "/dev/null"}, key="tenant-8", dedupe_key="d")
    throttled = conductor.invoke("fair", {"log": "/dev/null"}, key="tenant-9", throttle=60)
    many = conductor.invoke_many("fair", [{"key": "a"}, {"payload": 1}, {"key": "b",
                                                                         "dedupe_key": "x"}])
    keys = dict(Execution.objects.values_list("pk", "key"))
    assert [keys[uuid.UUID(i)] for i in [one, deduped, throttled, *many]] == [
        "tenant-7", "tenant-8", "tenant-9", "a", None, "b"]


@pytest.mark.django_db
def test_run_again_and_fork_keep_the_key():
    eid = conductor.invoke("fair", {"log": "/dev/null"}, key="tenant-7")
    Execution.objects.filter(pk=eid).update(status=S.COMPLETED)
    again = Execution.objects.run_again(eid)
    Step.objects.create(execution_id=eid, name="a", result=1)
    forked = conductor.fork(eid, "a")
    assert Execution.objects.get(pk=again).key == Execution.objects.get(pk=forked).key \
        == "tenant-7"


# --- the claim, in process: tests/test_claim_contract.py (on every database) -------------


#: How late a handler may record its start after its claim (threads hand over, a loaded
#: machine); two claims ``per`` seconds apart can be recorded this much closer together.
DISPATCH_SLACK = 0.4


@pytest.mark.django_db(transaction=True)
def test_per_key_limit_holds_across_three_workers(start_worker, tmp_path):
    log = tmp_path / "runs.log"
    ids = conductor.invoke_many("keyed-limited", [
        {"payload": {"log": str(log), "key": key, "hold": 0.4}, "key": key}
        for key in ("A", "B", "C") for _ in range(6)])
    for _ in range(3):
        start_worker("--concurrency", "4")
    poll(lambda: finished(ids), 120, message="all keyed executions finished")
    rows = records(log)
    assert sorted(eid for what, eid, _, _ in rows if what == "start") == sorted(ids)
    for key in ("A", "B", "C"):
        assert most_at_once(rows, key) == 2  # reached, never exceeded
    assert most_at_once(rows) <= 5
    assert Execution.objects.filter(pk__in=ids, status=S.COMPLETED).count() == 18


@pytest.mark.django_db(transaction=True)
def test_rate_limit_holds_across_three_workers_and_waiting_ones_start_later(
        start_worker, tmp_path):
    log = tmp_path / "runs.log"
    ids = conductor.invoke_many("rated", [{"payload": {"log": str(log)}}] * 9)
    for _ in range(3):
        start_worker("--concurrency", "4")
    poll(lambda: finished(ids), 120, message="all rated executions finished")
    starts = [at for what, _, _, at in records(log) if what == "start"]
    assert len(starts) == 9  # none dropped
    assert most_in_window(starts, 2.0 - DISPATCH_SLACK) <= 3
    assert max(starts) - min(starts) >= 4.0 - DISPATCH_SLACK  # 9 starts need 3 windows


@pytest.mark.django_db(transaction=True)
def test_per_key_rate_limit_holds_across_three_workers(start_worker, tmp_path):
    log = tmp_path / "runs.log"
    ids = conductor.invoke_many("rated-per-key", [
        {"payload": {"log": str(log), "key": key}, "key": key}
        for key in ("A", "B") for _ in range(5)])
    for _ in range(3):
        start_worker("--concurrency", "4")
    poll(lambda: finished(ids), 120, message="all per-key rated executions finished")
    rows = records(log)
    for key in ("A", "B"):
        starts = [at for what, _, k, at in rows if what == "start" and k == key]
        assert len(starts) == 5
        assert most_in_window(starts, 2.0 - DISPATCH_SLACK) <= 2
    both = [at for what, _, _, at in rows if what == "start"]
    assert most_in_window(both, 0.5) >= 3  # the keys do not share one limit


@pytest.mark.django_db(transaction=True)
def test_single_execution_of_a_key_starts_in_the_first_claims_behind_a_backlog(
        start_worker, tmp_path):
    log = tmp_path / "runs.log"
    conductor.invoke_many("fair", [{"payload": {"log": str(log), "key": "A", "hold": 0.05},
                                    "key": "A"} for _ in range(10_000)])
    b = conductor.invoke("fair", {"log": str(log), "key": "B"}, key="B")
    start_worker("--concurrency", "4")

    def b_started():
        starts = [eid for what, eid, _, _ in records(log) if what == "start"]
        return b in starts and starts
    starts = poll(b_started, 60, message="B started")
    # a claim takes at most --concurrency executions: B is within the first two claims
    assert starts.index(b) < 2 * 4


def test_claim_rules_of_keyed_tasks():
    task(name="keyed-temporary", key_concurrency=1, concurrency=3,
         rate_limit=RateLimit(4, 10, per_key=True))(lambda event, ctx: None)
    try:
        now = timezone.now()
        rule = claim_rules(now).keyed["keyed-temporary"]
        assert (rule.concurrency, rule.key_concurrency, rule.task_starts, rule.key_starts,
                rule.since) == (3, 1, None, 4, now - timedelta(seconds=10))
        assert "keyed-temporary" not in claim_rules(now).limits
    finally:
        unregister("keyed-temporary")
    assert "keyed-temporary" not in claim_rules(timezone.now()).keyed

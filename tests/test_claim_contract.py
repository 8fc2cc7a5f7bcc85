"""The claim's contract, one body of tests for every database (``store/claims/``).

Each database has its own claim module (``sqlite``, ``postgresql``, ``mysql``); these
tests pin what all of them must do, whatever their SQL: the order (priority, then
``run_at``), the limit, no row claimed twice by concurrent claimers (and, where rows
are locked, a locked row skipped without waiting), a new fencing token per claim, a
resumed attempt not counted again, task ``concurrency``, ``key_concurrency`` with its
round-robin across keys, rate limits, batches, and tasks outside their window left
alone.

Every test runs against the database of the test run, named in its id (the
``database`` parameter): a matrix cell runs one database (``CONDUCTOR_TEST_DB``), and
the whole matrix (scripts/test.sh) runs every test on SQLite, PostgreSQL and MariaDB.
The tests with ``claim_ids`` run both entry points: ``claims.claim`` (no task limits
registered) and ``claim_limited``, which ``Execution.objects.claim`` takes whenever
limited tasks are registered (as in the test suite: tests/testapp/flow_tasks.py and
key_tasks.py).

(``transaction=True`` everywhere: each claim commits, as in a worker, so that MySQL's
named claim locks are released at once and other threads see the rows.)
"""

from __future__ import annotations

import threading
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import timedelta

import pytest
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

import conductor_django as conductor
from conductor_django import task
from conductor_django.definitions.registry import batch_tasks, unregister
from conductor_django.models import Execution
from conductor_django.state.claimed import as_id
from conductor_django.store import claims
from conductor_django.store.vendor import dialect

S = Execution.Status
TABLE = Execution._meta.db_table

pytestmark = pytest.mark.django_db(transaction=True)


#: The name of the database under test: one matrix cell runs one database.
DATABASE = dialect(connection).vendor


@pytest.fixture(params=[DATABASE])
def database(request):
    """The database under test (its name in the test's id), and its claim module."""
    assert claims.home(connection) is claims.HOMES[request.param]
    return request.param


def _plain(worker: uuid.UUID, limit: int, exclude=()) -> list[str]:
    """``claims.claim``: the claim with no task limits."""
    rows = claims.claim(connections["default"], TABLE, worker, None, limit, timezone.now(),
                        exclude=exclude)
    return [as_id(r[0]) for r in rows]


def _limited(worker: uuid.UUID, limit: int, exclude=()) -> list[str]:
    """``Execution.objects.claim``: ``claim_limited`` (limited tasks are registered)."""
    return [c.id for c in Execution.objects.claim(worker, None, limit, "default",
                                                  exclude=exclude)]


@pytest.fixture(params=["plain", "limited"])
def claim_ids(request, database):
    """Claim for a worker, returning the claimed ids (in no particular order)."""
    return _plain if request.param == "plain" else _limited


def claim(limit: int) -> list[Execution]:
    got = Execution.objects.claim(uuid.uuid4(), None, limit, using="default")
    return list(Execution.objects.filter(pk__in=[c.id for c in got]))


def _row(task_name: str = "ordered", ago: float = 60, **fields) -> str:
    """A pending execution that became runnable ``ago`` seconds ago."""
    row = Execution.objects.create(task_name=task_name,
                                   run_at=timezone.now() - timedelta(seconds=ago), **fields)
    return str(row.pk)


# --- order, limit, exclusion -------------------------------------------------------------


def test_best_priority_first_then_the_oldest(claim_ids):
    low_old = _row(priority=0, ago=300)
    high_new = _row(priority=9, ago=10)
    mid_new = _row(priority=5, ago=20)
    mid_old = _row(priority=5, ago=200)
    low_new = _row(priority=0, ago=30)
    _row(priority=99, ago=-3600)  # not runnable before an hour from now
    worker = uuid.uuid4()
    served = [id_ for _ in range(6) for id_ in claim_ids(worker, 1)]
    assert served == [high_new, mid_old, mid_new, low_old, low_new]


def test_a_claim_takes_at_most_its_limit_best_first(claim_ids):
    ids = [_row(priority=p) for p in range(7)]
    worker = uuid.uuid4()
    assert sorted(claim_ids(worker, 3)) == sorted(ids[4:])  # (returned in no order)
    assert sorted(claim_ids(worker, 10)) == sorted(ids[:4])
    assert claim_ids(worker, 10) == []


def test_excluded_and_unrunnable_executions_are_left(claim_ids):
    excluded = _row(priority=5)
    wanted = _row()
    _row(status=S.RUNNING)
    _row(status=S.COMPLETED)
    _row(status=S.SUSPENDED, ago=-3600)  # a durable sleep that has not ended
    woken = _row(status=S.SUSPENDED, resume=True)
    assert sorted(claim_ids(uuid.uuid4(), 10, exclude=[excluded])) == sorted([wanted, woken])


def test_only_the_workers_queues(database):
    mine = _row(queue="mine")
    _row(queue="theirs")
    got = Execution.objects.claim(uuid.uuid4(), ["mine"], 10, "default")
    assert [c.id for c in got] == [mine]


# --- the lease -------------------------------------------------------------------------


def test_every_claim_takes_a_new_fencing_token_and_marks_the_row(claim_ids):
    eid = _row()
    worker = uuid.uuid4()
    leases = []
    for _ in range(3):
        assert claim_ids(worker, 1) == [eid]
        row = Execution.objects.get(pk=eid)
        assert (row.status, row.locked_by, row.attempts) == (S.RUNNING, worker, len(leases) + 1)
        leases.append(row.lease)
        # recovered (as after a dead worker): runnable again, the token stays
        Execution.objects.filter(pk=eid).update(status=S.PENDING, locked_by=None)
    assert leases == [1, 2, 3]
    assert Execution.objects.claim(worker, None, 1, "default")[0].lease == 4


def test_a_resumed_attempt_is_not_counted_again(claim_ids):
    started = timezone.now() - timedelta(minutes=5)
    resumed = _row(attempts=1, resume=True, status=S.SUSPENDED, started_at=started)
    retried = _row(attempts=1, started_at=started)
    fresh = _row()
    claim_ids(uuid.uuid4(), 10)
    rows = {str(r.pk): r for r in Execution.objects.all()}
    assert [rows[i].attempts for i in (resumed, retried, fresh)] == [1, 2, 1]
    assert not rows[resumed].resume
    assert rows[resumed].started_at == started  # the first start stays
    assert rows[fresh].started_at == rows[fresh].locked_at


def test_claimed_tells_a_first_start(database):
    fresh = _row()
    _row(attempts=1, started_at=timezone.now() - timedelta(minutes=1))
    got = {c.id: c for c in Execution.objects.claim(uuid.uuid4(), None, 10, "default")}
    assert [c.fresh for i, c in sorted(got.items(), key=lambda kv: kv[0] != fresh)] \
        == [True, False]
    assert {(c.attempts, c.lease) for c in got.values()} == {(1, 1), (2, 1)}


# --- concurrent claimers ---------------------------------------------------------------


def test_concurrent_claimers_never_claim_the_same_row(claim_ids):
    ids = {_row(priority=n % 3) for n in range(60)}
    got: dict[int, list[str]] = defaultdict(list)
    errors: list[BaseException] = []
    start = threading.Barrier(3)

    def claimer(n: int) -> None:
        try:
            start.wait()
            worker = uuid.uuid4()
            while True:
                claimed = claim_ids(worker, 4)
                if not claimed and not Execution.objects.filter(status=S.PENDING).exists():
                    return
                got[n] += claimed
        except BaseException as exc:  # noqa: B036 - reported by the test's thread
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(t.is_alive() for t in threads), "a claimer never finished"
    assert errors == []
    claimed = [i for n in got for i in got[n]]
    assert sorted(claimed) == sorted(ids)  # every row once: none twice, none lost


def test_a_locked_row_is_skipped_without_waiting(claim_ids, database):
    """Where rows are locked (PostgreSQL, MySQL), a row another transaction holds is
    left out of the claim, which neither waits for it nor fails. (SQLite has no row
    locks: its claim holds the database write lock, which the test above covers.)"""
    if database == "sqlite":
        pytest.skip("SQLite has no row locks")
    held = _row(priority=9)
    free = _row()
    locked, release = threading.Event(), threading.Event()

    def holder() -> None:
        try:
            with transaction.atomic():
                list(Execution.objects.select_for_update().filter(pk=held))
                locked.set()
                release.wait(120)
        finally:
            connections.close_all()

    def claimer() -> list[str]:
        try:
            return claim_ids(uuid.uuid4(), 10)
        finally:
            connections.close_all()

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert locked.wait(60), "the holder never locked its row"
        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(claimer)
            try:
                got = future.result(timeout=60)
            except FutureTimeout:
                release.set()
                raise AssertionError("the claim waited for the locked row") from None
    finally:
        release.set()
        thread.join(60)
    assert got == [free]
    assert claim_ids(uuid.uuid4(), 10) == [held]  # once released


# --- task limits -------------------------------------------------------------------------


def test_task_concurrency_bounds_what_runs_at_once(database):
    limited = {_row("limited") for _ in range(5)}  # concurrency=2
    other = _row()
    first = claim(10)
    assert sum(str(e.pk) in limited for e in first) == 2
    assert other in {str(e.pk) for e in first}  # a limit holds back its own task only
    assert claim(10) == []
    done = next(e for e in first if e.task_name == "limited")
    Execution.objects.filter(pk=done.pk).update(status=S.COMPLETED, locked_by=None)
    assert [e.task_name for e in claim(10)] == ["limited"]  # the freed slot


def test_one_key_backlog_does_not_delay_another_keys_single_execution(database):
    conductor.invoke_many("fair", [{"payload": {"n": n}, "key": "A"} for n in range(10_000)])
    b = conductor.invoke("fair", {"n": "b"}, key="B")
    first = claim(10)
    assert b in {str(e.pk) for e in first}  # in the first batch, not after 10,000
    assert len(first) == 10


def test_round_robin_takes_the_first_row_of_every_key_before_any_second_row(database):
    for key in ("A", "B", "C"):
        conductor.invoke_many("fair", [{"payload": {"n": n}, "key": key} for n in range(5)])
    conductor.invoke_many("fair", [{"payload": {"n": n}} for n in range(5)])  # no key
    got = claim(6)
    counts: dict[str | None, int] = defaultdict(int)
    for e in got:
        counts[e.key] += 1
    # every group's first row, then second rows of two groups (in the order of the round)
    assert set(counts) == {"A", "B", "C", None}
    assert sorted(counts.values()) == [1, 1, 2, 2]


def test_claims_of_one_at_a_time_take_turns_across_keys_and_priority_within_a_key(database):
    conductor.invoke_many("fair", [{"payload": {"n": n}, "key": key}
                                   for key in ("A", "B", "C") for n in range(3)])
    high = conductor.invoke("fair", {"n": "high"}, key="B", priority=9)
    served = [claim(1)[0] for _ in range(6)]
    assert sorted(e.key for e in served[:3]) == ["A", "B", "C"]  # one turn each
    assert sorted(e.key for e in served[3:]) == ["A", "B", "C"]  # then again
    assert str(next(e for e in served if e.key == "B").pk) == high  # B's best first


def test_key_concurrency_and_concurrency_bound_the_claim(database):
    for key in ("A", "B", "C"):
        conductor.invoke_many("keyed-limited", [{"payload": {}, "key": key}] * 4)
    got = claim(100)
    assert sorted(e.key for e in got) == ["A", "A", "B", "B", "C"]  # 2 per key, 5 in all
    assert claim(100) == []  # all held
    Execution.objects.filter(pk=got[0].pk).update(status=S.COMPLETED, locked_by=None)
    again = claim(100)
    assert [e.key for e in again] == [got[0].key]  # the freed slot, of the same task


def test_a_key_limit_above_the_claim_size_binds_once_the_key_runs_enough(database):
    """While the whole task runs too few for any key to reach its limit in one claim,
    the claim may leave the keys' own counts out; past that point each key's count
    binds, and only its own."""
    conductor.invoke_many("keyed-ten", [{"payload": {}, "key": "A"}] * 30)
    first = claim(8)
    assert [e.key for e in first] == ["A"] * 8
    assert [e.key for e in claim(8)] == ["A"] * 2  # 10 - 8 running
    assert claim(8) == []
    conductor.invoke_many("keyed-ten", [{"payload": {}, "key": "B"}] * 9)
    assert [e.key for e in claim(8)] == ["B"] * 8  # A's 10 running do not hold B back
    Execution.objects.filter(pk__in=[e.pk for e in first[:5]]).update(
        status=S.COMPLETED, locked_by=None)
    assert sorted(e.key for e in claim(8)) == ["A"] * 5 + ["B"]


def test_a_keyed_claim_is_one_statement_where_the_database_returns_rows(database):
    """No per-key or per-task round trips: the locks, the counts of every key and the
    claim are one statement (on PostgreSQL a call of the claim function; MySQL has no
    ``UPDATE ... RETURNING``: there a claim selects, then updates)."""
    if database == "mysql":
        pytest.skip("MySQL has no UPDATE ... RETURNING: a claim selects, then updates")
    for key in ("A", "B", "C"):
        conductor.invoke_many("keyed-limited", [{"payload": {}, "key": key}] * 4)
    conductor.invoke_many("fair", [{"payload": {}, "key": f"k{n}"} for n in range(20)])
    conductor.invoke("echo", 1)
    with CaptureQueriesContext(connection) as queries:
        got = Execution.objects.claim(uuid.uuid4(), None, 100, using="default")
    assert len(queries.captured_queries) == 1, [q["sql"][:120] for q in queries]
    counts: dict[str, int] = defaultdict(int)
    per_key: dict[str | None, int] = defaultdict(int)
    for c in got:
        counts[c.task_name] += 1
        if c.task_name == "keyed-limited":
            per_key[c.key] += 1
    assert counts == {"keyed-limited": 5, "fair": 20, "echo": 1}
    assert sorted(per_key.values()) == [1, 2, 2]  # key_concurrency=2, concurrency=5


def test_rate_limit_bounds_starts_in_the_window_and_retries_do_not_count(database):
    conductor.invoke_many("rated", [{"payload": {}, "key": f"k{n}"} for n in range(5)])
    first = claim(100)
    assert len(first) == 3
    Execution.objects.filter(pk__in=[e.pk for e in first]).update(
        status=S.COMPLETED, locked_by=None)
    assert claim(100) == []  # finished, but started within the window
    # a window later, they may start again
    Execution.objects.filter(pk__in=[e.pk for e in first]).update(
        started_at=first[0].started_at - timedelta(seconds=2.5))
    assert len(claim(100)) == 2


def test_per_key_rate_limit_counts_each_key_alone(database):
    conductor.invoke_many("rated-per-key", [{"payload": {}, "key": k} for k in "AAAABBBBC"])
    assert sorted(e.key for e in claim(100)) == ["A", "A", "B", "B", "C"]
    assert claim(100) == []


# --- batches and windows -------------------------------------------------------------------


def _claim_batch(name: str, fill: bool) -> list[str]:
    spec = batch_tasks(timezone.now())[name]
    got = Execution.objects.claim_batch(uuid.uuid4(), None, name, spec, "default",
                                        timezone.now(), fill)
    return [c.id for c in got]


def test_a_batch_is_claimed_whole_when_full_or_when_its_oldest_waited(database):
    """``batched``: size 3, timeout 30 s; the plain claim leaves batch rows alone."""
    two = [_row("batched", ago=1, priority=p) for p in (0, 1)]
    assert claim(10) == []
    assert _claim_batch("batched", fill=True) == []  # neither full nor old enough
    third = _row("batched", ago=1, priority=2)
    fourth = _row("batched", ago=1)
    assert _claim_batch("batched", fill=True) == [third, two[1], two[0]]  # best first
    assert _claim_batch("batched", fill=True) == []
    Execution.objects.filter(pk=fourth).update(run_at=timezone.now() - timedelta(seconds=31))
    assert _claim_batch("batched", fill=True) == [fourth]  # waited past the timeout
    lone = _row("batched", ago=1)
    assert _claim_batch("batched", fill=False) == [lone]  # a drain takes what there is


def test_a_task_outside_its_window_is_left_until_it_opens(database):
    now = timezone.localtime()
    opens = (now + timedelta(hours=2)).strftime("%H:%M")
    closes = (now + timedelta(hours=3)).strftime("%H:%M")
    task(name="contract-windowed", window=(opens, closes))(lambda event, ctx: None)
    try:
        waiting = _row("contract-windowed", priority=9)
        other = _row()
        assert [e.pk for e in claim(10)] == [uuid.UUID(other)]
        task(name="contract-windowed")(lambda event, ctx: None)  # no window: open
        assert [str(e.pk) for e in claim(10)] == [waiting]
    finally:
        unregister("contract-windowed")

"""The transition table of ``state/status.py`` is what the state verbs do: every verb is
called on a row in every state (with and without a cancel requested, in and out of
attempts), and what it did - the new state, what it recorded in the attempt history - is
compared with the table, both ways: nothing the table lacks, nothing it claims in vain."""

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from conductor_django.models import Attempt, Execution, Worker
from conductor_django.state.status import (
    RECORDED,
    TRANSITIONS,
    Outcome,
    Status,
    records,
    targets,
)
from tests.testapp import tasks  # noqa: F401  (registers "echo")

DB = "default"
LEASE = 7


def _row(status, wid, *, cancelled=False, attempts=1, max_attempts=3):
    running = status == Status.RUNNING
    now = timezone.now()
    return Execution.objects.create(
        task_name="echo", status=status, cancelled=cancelled, attempts=attempts,
        max_attempts=max_attempts, run_at=now - timedelta(seconds=1),
        locked_by=wid if running else None, locked_at=now if running else None,
        lease=LEASE, started_at=now if attempts else None,
        finished_at=now if status in Execution.FINAL else None,
        last_error="cancel reason" if cancelled else "")


def _presumed_dead(wid):
    Worker.objects.filter(pk=wid).update(last_heartbeat=timezone.now() - timedelta(hours=1))


# Each verb, called as its callers call it; ``variant`` picks one of its branches.
VERBS = {
    "claim": [lambda e, w: Execution.objects.claim(w, None, 5, DB)],
    "complete": [lambda e, w: Execution.objects.complete(str(e), w, LEASE, 1, DB),
                 lambda e, w: Execution.objects.complete(str(e), w, LEASE, 1, DB, record=True)],
    "fail": [lambda e, w: Execution.objects.fail(str(e), w, LEASE, "boom", None, DB),
             lambda e, w: Execution.objects.fail(str(e), w, LEASE, "boom", timezone.now(), DB),
             lambda e, w: Execution.objects.fail(str(e), w, LEASE, "late", timezone.now(), DB,
                                                 ended=Outcome.TIMED_OUT)],
    "finish_cancelled": [
        lambda e, w: Execution.objects.finish_cancelled(str(e), w, LEASE, "stop", DB)],
    "release": [
        lambda e, w: Execution.objects.release(str(e), w, LEASE, timezone.now(), DB),
        lambda e, w: Execution.objects.release(str(e), w, LEASE, None, DB, Status.SUSPENDED),
        lambda e, w: Execution.objects.release(str(e), w, LEASE, timezone.now(), DB,
                                               shutdown=True)],
    "release_all": [lambda e, w: Execution.objects.release_all(w, DB)],
    "recover": [lambda e, w: (_presumed_dead(w), Execution.objects.recover(30, DB))],
    "give_up": [lambda e, w: Execution.objects.give_up(str(e), w, LEASE, 30, DB)],
    "cancel": [lambda e, w: Execution.objects.cancel(e, "stop", using=DB)],
    "retry": [lambda e, w: Execution.objects.retry(e, using=DB)],
    "finish_cancelled_held": [lambda e, w: Execution.objects.finish_cancelled_held(w, DB)],
}

CASES = [(verb, n, status, cancelled, attempts)
         for verb, calls in VERBS.items() for n in range(len(calls))
         for status in Status for cancelled in (False, True) for attempts in (1, 3)]


def _observe(verb, n, status, cancelled, attempts):
    wid = uuid.uuid4()
    Worker.objects.register(Worker(id=wid, hostname="table", pid=1), DB)
    row = _row(status, wid, cancelled=cancelled, attempts=attempts)
    VERBS[verb][n](row.pk, wid)
    after = Execution.objects.get(pk=row.pk).status
    recorded = set(Attempt.objects.filter(execution_id=row.pk).values_list("ended", flat=True))
    return after, recorded


@pytest.mark.django_db
def test_every_verb_from_every_state_does_what_the_table_says():
    seen: dict[str, set[tuple[str, str]]] = {verb: set() for verb in VERBS}
    recorded_by: dict[str, set[str]] = {verb: set() for verb in VERBS}
    for verb, n, status, cancelled, attempts in CASES:
        after, recorded = _observe(verb, n, status, cancelled, attempts)
        allowed = targets(verb, status)
        case = f"{verb}#{n} from {status} (cancelled={cancelled}, attempts={attempts})"
        if allowed:  # (a guard may decline: finish_cancelled_held needs a cancel request)
            assert after in (*allowed, status), f"{case} went to {after}, the table: {allowed}"
        else:
            assert after == status, f"{case} acted, the table has no line for it"
            assert not recorded, f"{case} recorded {recorded} without acting"
        assert recorded <= set(records(verb)), f"{case} recorded {recorded}"
        if after != status or after in allowed:
            seen[verb].add((status, after))
        recorded_by[verb] |= recorded
    for verb in VERBS:  # the table claims nothing the verb never does
        table = {(s, t) for line in TRANSITIONS if line.verb == verb
                 for s in line.source for t in line.target}
        assert seen[verb] == table, f"{verb}: the code does {seen[verb]}, the table {table}"
        assert recorded_by[verb] == set(records(verb)), verb


def test_the_table_speaks_the_one_vocabulary():
    verbs = {line.verb for line in TRANSITIONS}
    assert verbs == set(VERBS) | {"birth"}  # every verb of the table is exercised above
    assert {o for line in TRANSITIONS for o in line.recorded} <= set(RECORDED)
    assert [c for c, _ in Attempt._meta.get_field("ended").choices] == [o.value for o in RECORDED]
    assert targets("birth", "") == () and all(not line.source for line in TRANSITIONS
                                              if line.verb == "birth")


def test_the_attempt_history_refuses_a_word_it_does_not_store():
    from conductor_django.state import attempts

    with pytest.raises(ValueError, match="lost"):
        attempts.record(Execution.objects.none(), Outcome.LOST, "", DB)

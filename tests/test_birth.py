"""Every path that creates an execution goes through ``state.birth`` and gives it the
same attempt budget: the task's ``max_attempts`` (a retry: that many attempts more)."""

import pytest
from django.utils import timezone

import conductor_django as conductor
from conductor_django.definitions.tasks import MAX_ATTEMPTS
from conductor_django.models import Execution, Step
from conductor_django.state.birth import attempt_budget
from conductor_django.testing import drain
from tests.testapp.birth_tasks import BUDGET

TASK = "birth-budget"


def _finished(status="completed", attempts=2):
    eid = conductor.invoke(TASK, {"n": 1})
    Execution.objects.filter(pk=eid).update(status=status, attempts=attempts,
                                            finished_at=timezone.now())
    Step.objects.create(execution_id=eid, name="one", result=1)
    return eid


def by_invoke():
    return conductor.invoke(TASK, {"n": 1})


def by_invoke_with_dedupe_key():  # the ORM insert, not the prepared statement
    return conductor.invoke(TASK, {"n": 1}, dedupe_key="once")


def by_throttle():
    return conductor.invoke(TASK, throttle=60)


def by_invoke_many():  # the bulk statement: a default item and an item of its own
    ids = conductor.invoke_many(TASK, [{"payload": 1}, {"payload": 2, "priority": 3}] * 40)
    budgets = set(Execution.objects.filter(pk__in=ids).values_list("max_attempts", flat=True))
    assert budgets == {BUDGET}
    return ids[-1]


def by_emit():
    [eid] = conductor.emit("birth.happened", {"n": 1})
    return eid


def by_schedule():
    conductor.schedule(TASK, "birth-every-minute", "* * * * *")
    return Execution.objects.get(schedule_name="birth-every-minute").pk


def by_child():
    parent = conductor.invoke("birth-parent")
    drain(timeout=30)
    assert conductor.get(parent).status == "completed"
    return Execution.objects.get(parent_id=parent).pk


def by_fork():
    return conductor.fork(_finished("failed"), "one")


def by_run_again():
    return Execution.objects.run_again(_finished())


def by_retry():
    eid = _finished("failed", attempts=BUDGET)
    assert conductor.retry(eid) is True
    return eid


@pytest.mark.django_db
@pytest.mark.parametrize("path", [by_invoke, by_invoke_with_dedupe_key, by_throttle,
                                  by_invoke_many, by_emit, by_schedule, by_child, by_fork,
                                  by_run_again, by_retry], ids=lambda f: f.__name__)
def test_every_birth_path_gives_the_tasks_attempt_budget(path):
    row = Execution.objects.get(pk=path())
    if path is by_retry:  # the same row: a fresh budget on top of the attempts made
        assert row.max_attempts == row.attempts + BUDGET
        return
    assert row.max_attempts == BUDGET
    if path is not by_child:  # (the child has run: drain ran the tree)
        assert (row.status, row.attempts, row.cancelled, row.resume) == ("pending", 0, False,
                                                                          False)


@pytest.mark.django_db
def test_a_task_this_process_does_not_know_keeps_the_originals_budget():
    eid = _finished()
    Execution.objects.filter(pk=eid).update(task_name="gone-elsewhere", max_attempts=4)
    again = Execution.objects.get(pk=Execution.objects.run_again(eid))
    fork = Execution.objects.get(pk=conductor.fork(eid, "one"))
    assert again.max_attempts == fork.max_attempts == 4
    Execution.objects.filter(pk=eid).update(status="failed", attempts=4)
    assert conductor.retry(eid) is True
    assert Execution.objects.get(pk=eid).max_attempts == 8


def test_the_budget_is_at_least_one_and_fits_a_retry():
    assert attempt_budget("gone-elsewhere", 0) == 1
    assert attempt_budget("gone-elsewhere", 2 * MAX_ATTEMPTS) == MAX_ATTEMPTS
    assert attempt_budget(TASK, 1) == BUDGET


def test_no_module_but_the_birth_verb_builds_an_execution_row():
    import re
    from pathlib import Path

    import conductor_django

    root = Path(conductor_django.__file__).parent
    builds = re.compile(r"(?<![\w.])(?<!class )(?:Execution|self\.model)\(")
    found = [str(p.relative_to(root)) for p in root.rglob("*.py")
             if "migrations" not in p.parts and p.name != "birth.py"
             and builds.search(p.read_text())]
    assert found == []
